"""Read a whole topic as a read_committed consumer sees it, up to its end offsets.

Tests that assert "exactly once" or "none missing" must see everything there is: a read that
stops after a timeout or a record count could miss a late duplicate. The reader is the
runtime's own (:func:`streamtask.kafka.clients.read_committed`, which restores join changelogs): it
stops only when every partition reported its end at or past the end offset taken when the
read started, so transaction markers and aborted records are accounted for.
"""

from __future__ import annotations

import uuid
from typing import Any

from streamtask.config import KafkaSettings
from streamtask.kafka import clients as kafka


def read_to_end(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every committed record of ``topic`` below its end offsets at the time of the call."""
    return kafka.read_committed(KafkaSettings(bootstrap=bootstrap), topic, timeout=timeout,
                                group=f"reader-{uuid.uuid4().hex}")
