"""Dead letters as the console's templates show them: plain dicts of display strings."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson

from streamtask.kafka import headers as dl
from streamtask.ops.deadletters import DeadLetter


def when(epoch_ms: int) -> str:
    """UTC time of an epoch-ms timestamp, to the millisecond ("-" when unknown)."""
    if not epoch_ms:
        return "-"
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def text(raw: str | bytes | None) -> str:
    """Bytes as UTF-8 text (undecodable bytes escaped), None as "-"."""
    if raw is None:
        return "-"
    return raw if isinstance(raw, str) else raw.decode("utf-8", errors="backslashreplace")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def error_line(record: dl.DeadLetterRecord) -> str:
    """The error's type and message, without repeating the type the message starts with."""
    short_type = record.error_type.rsplit(".", 1)[-1]
    return record.message if record.message.startswith(f"{short_type}:") else \
        f"{record.error_type}: {record.message}"


def row_view(record: dl.DeadLetterRecord) -> dict[str, Any]:
    """One line of a dead-letter list."""
    return {"partition": record.dlq_partition, "offset": record.dlq_offset,
            "key": text(record.key), "error_type": record.error_type,
            "message": record.message, "error": error_line(record), "reason": record.reason,
            "attempts": record.attempts, "replays": record.replays, "dead_at": when(record.dead_at)}


def _history(raw: str) -> list[dict[str, Any]]:
    """The error history header: one entry per failed attempt, oldest first."""
    try:
        entries = orjson.loads(raw) if raw else []
    except orjson.JSONDecodeError:
        return [{"attempt": "?", "error": "unreadable history", "message": raw, "at": "-"}]
    return [{**entry, "at": when(int(entry.get("at") or 0))} for entry in entries
            if isinstance(entry, dict)]


def _size(record: dl.DeadLetterRecord) -> int:
    """The original value's size: a null value is 0, an omitted one keeps its size."""
    if record.value is not None:
        return len(record.value)
    return record.value_omitted or 0


def letter_view(letter: DeadLetter) -> dict[str, Any]:
    """Everything the detail page shows: the decoded task, headers, errors, origin."""
    record, task = letter.record, letter.task
    headers = [(name, text(value)) for name, value in record.carried_headers]
    view = {**row_view(record), "topic": record.dlq_topic, "stage": record.stage,
            "worker": record.worker, "stacktrace": record.stacktrace,
            "origin": asdict(record.origin), "origin_time": when(record.origin.timestamp),
            "history": _history(record.errors), "headers": headers,
            "problem": letter.problem, "size": _size(record), "task": None}
    if task is not None:
        view["task"] = {
            "id": task.id, "run_id": task.run_id, "key": task.key or "-", "attempt": task.attempt,
            "created": when(task.created_at),
            "payload": orjson.dumps(task.payload, default=_jsonable,
                                    option=orjson.OPT_INDENT_2).decode(),
            "headers": sorted(task.headers.items())}
    return view
