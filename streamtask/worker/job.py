"""The worker's shared vocabulary: a partition, a received job, a record to send.

Every piece of the worker (intake, lanes, runners, outcomes, delivery, offsets) speaks of
these three and of nothing of another piece, so each can be read (and tested) alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from streamtask.events import Event
from streamtask.kafka.headers import Headers, record_size

if TYPE_CHECKING:
    from streamtask.model.app import Stage
    from streamtask.model.envelope import Task
    from streamtask.worker.offsets import PartitionOffsets

TopicPartition = tuple[str, int]
"""A partition as the worker keys its state: (topic, partition). Kafka's own
``kafka.TopicPartition`` object appears only where a client call needs one."""


class Outgoing(NamedTuple):
    """One record to produce. A tuple, because the worker builds one or more per task."""

    topic: str
    value: bytes | None
    """None is a tombstone (a changelog deletion)."""
    key: bytes | str | None
    headers: Headers
    partition: int = -1
    """-1: let the key pick the partition."""

    def size(self) -> int:
        """The size the producer counts for this record against ``message.max.bytes``."""
        return record_size(self.value, self.key, self.headers)


class Poison(NamedTuple):
    """A record no handler can run: the event that reports it and the dead letter's reason."""

    event: Event
    reason: str
    detail: str


@dataclass(eq=False, slots=True)
class Job:
    """One received record on its way from poll to a committable offset."""

    tp: TopicPartition
    offset: int
    lane: object
    task: Task | None
    """None for a poison record on its way to the dead-letter queue."""
    stage: Stage
    partition: PartitionOffsets
    message: Any
    extra: tuple[Outgoing, ...] = ()
    """Records to send along with whatever the outcome is (a join's changelog tombstone)."""
    pending_acks: int = 0
    running: bool = False
    """Handed to a runner (queued there or executing) and its outcome not routed yet."""
    metered: bool = False
    """Past its stage's rate limit (it had its token), so it may start."""
    abandoned: bool = False
    """Timed out while its handler still runs: its key stays taken until the handler ends."""
    poison: Poison | None = None
    """Why no handler can run this record (then ``task`` is None): it is dead-lettered."""

    @property
    def where(self) -> str:
        """``topic[partition]@offset``, as events and errors name a record."""
        return f"{self.tp[0]}[{self.tp[1]}]@{self.offset}"


def names(tps: set[TopicPartition]) -> list[str]:
    """``topic[partition]`` of each partition, sorted (for events and logs)."""
    return sorted(f"{topic}[{partition}]" for topic, partition in tps)
