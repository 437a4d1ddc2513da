"""Log output for the CLI: readable text, or one JSON object per line for log shippers.

Worker events carry their fields in the log record (``extra={"event": ..., "fields": ...}``,
see :class:`streamtask.events.EventLogger`); the JSON format writes them as keys.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
HANDLER_NAME = "streamtask"


def configured() -> bool:
    """Whether :func:`configure` set up the log output of this process."""
    return any(h.get_name() == HANDLER_NAME for h in logging.getLogger().handlers)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname,
                                "logger": record.name}
        event = getattr(record, "event", None)
        if event is not None:
            line["event"] = event
            line.update(getattr(record, "fields", {}))
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send logs to stderr as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
