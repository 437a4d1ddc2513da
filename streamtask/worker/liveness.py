"""Liveness: a worker's consumer never stays out of its group while the cluster answers.

librdkafka rejoins a consumer group by itself after a broker outage, nearly always. Beside
other load, after the third of three broker restarts in a row, a worker's input consumer was
seen never to rejoin: its group coordinator's request sat in librdkafka's out-queue and timed
out every minute, for good, while the broker answered everything else. Nothing in the worker
would ever notice: it was alive, polling, and took no task again.

:class:`GroupWatch` notices it. It looks at each consumer once a second, without asking the
broker: a consumer with no member id is out of its group. Once one has been out for
``rejoin_timeout`` (see :class:`~streamtask.config.WorkerSettings`) it asks the cluster for
metadata through that consumer's own connections (not the coordinator's): if the cluster
answers, the consumer is stuck, and the worker closes and re-creates it. If the cluster does
not answer, this is an outage, which re-creating cannot cure: the bound starts again.
Re-creating loses nothing: what the old consumer held is treated as lost (its uncommitted
tasks run again, at least once).

:class:`FetchWatch` notices the other stall seen after a restart: a consumer back in its
group, its partitions assigned again, that hands out no record for good while records wait
(librdkafka never started fetching them). A consumer that gave no record for
``rejoin_timeout`` while the worker had room and some of its partitions were not paused is
asked, once, whether records wait: the broker's high watermark at least ``WAITING`` past the
group's committed offset on one of those partitions. If so it is re-created too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

CHECK_EVERY = 1.0
"""Seconds between two looks at the consumers (a look asks the broker nothing)."""
PROBE_TIMEOUT = 2.0
"""Seconds the metadata request that tells a stuck consumer from an outage may take."""
WAITING = 2
"""Records past the committed offset that count as waiting: the last committed transaction's
marker alone (one offset) is no record to fetch."""


def answers(consumer: Any) -> bool:
    """Whether the cluster answers a metadata request through ``consumer``'s connections."""
    try:
        consumer.list_topics(timeout=PROBE_TIMEOUT)
    except Exception:  # librdkafka's KafkaException (timeout, transport): no answer
        return False
    return True


def member_id(consumer: Any) -> str | None:
    """The consumer's member id in its group; None while it is out of the group. A client
    with no notion of membership (the in-memory transport's) counts as a member."""
    read = getattr(consumer, "memberid", None)
    return read() if read is not None else "member"


class GroupWatch:
    """Tells which consumers have been out of their group for longer than the bound while
    the cluster answers. The worker loop calls :meth:`stuck` on every turn."""

    def __init__(self, rejoin_timeout: float, *,
                 probe: Callable[[Any], bool] = answers,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rejoin_timeout = rejoin_timeout
        self._probe = probe
        self._clock = clock
        self._out_since: dict[int, float] = {}
        """Per consumer (by id), since when it has been seen out of its group."""
        self._next_look = 0.0

    def stuck(self, consumers: Sequence[Any]) -> list[tuple[Any, float]]:
        """The consumers stuck out of their group, each with the seconds it has been out."""
        now = self._clock()
        if now < self._next_look:
            return []
        self._next_look = now + CHECK_EVERY
        stuck = []
        for consumer in consumers:
            seconds = self._out_for(consumer, now)
            if seconds is None or seconds < self.rejoin_timeout:
                continue
            if self._probe(consumer):
                stuck.append((consumer, seconds))
            else:  # an outage: re-creating cannot help; count again from now
                self._out_since[id(consumer)] = self._clock()
        return stuck

    def _out_for(self, consumer: Any, now: float) -> float | None:
        if member_id(consumer):
            self._out_since.pop(id(consumer), None)
            return None
        since = self._out_since.setdefault(id(consumer), now)
        return now - since

    def forget(self, consumer: Any) -> None:
        """``consumer`` was closed (its id may be reused by the next one)."""
        self._out_since.pop(id(consumer), None)


def records_wait(consumer: Any, partitions: list[Any]) -> bool:
    """Whether the broker holds records past the group's committed offset on one of
    ``partitions`` (a committed offset the coordinator cannot give counts as waiting)."""
    try:
        committed = consumer.committed(partitions, timeout=PROBE_TIMEOUT)
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=PROBE_TIMEOUT, cached=False)
            if high - (tp.offset if tp.offset >= 0 else low) >= WAITING:
                return True
    except Exception:  # librdkafka's KafkaException: the coordinator does not answer
        return True
    return False


class FetchWatch:
    """Tells which consumers have handed out no record for longer than the bound while
    records wait for them. The intake reports each consumer that gave records
    (:meth:`heard`); the worker says which partitions should be fetching (unpaused, with room)
    and calls :meth:`stuck` on every turn."""

    def __init__(self, timeout: float, *,
                 probe: Callable[[Any], bool] = answers,
                 waiting: Callable[[Any, list[Any]], bool] = records_wait,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._probe = probe
        self._waiting = waiting
        self._clock = clock
        self._quiet_since: dict[int, float] = {}
        """Per consumer (by id), since when it should have fetched and gave nothing."""
        self._next_look = 0.0

    def heard(self, consumer: Any) -> None:
        """``consumer`` handed out records (or its assignment changed): it is not stuck."""
        self._quiet_since.pop(id(consumer), None)

    def stuck(self, fetching: Sequence[tuple[Any, list[Any]]]) -> list[tuple[Any, float]]:
        """Of each consumer with the partitions it should be fetching now (none: the worker
        is full, or all are paused), those stuck, with the seconds they have been quiet."""
        now = self._clock()
        if now < self._next_look:
            return []
        self._next_look = now + CHECK_EVERY
        stuck = []
        for consumer, partitions in fetching:
            if not partitions:
                self.heard(consumer)  # nothing expected from it: not quiet
                continue
            seconds = now - self._quiet_since.setdefault(id(consumer), now)
            if seconds < self.timeout:
                continue
            if self._probe(consumer) and self._waiting(consumer, partitions):
                stuck.append((consumer, seconds))
            else:  # an outage, or nothing to fetch: look again a whole bound later
                self._quiet_since[id(consumer)] = self._clock()
        return stuck


class DeliveryWatch:
    """Tells when every task the worker holds has been waiting for acknowledgements, and no
    task became durable, for longer than the bound while the cluster answers: a producer
    that acknowledges nothing. (Seen after broker restarts: partitions assigned again, the
    worker full of tasks whose results were never acknowledged, until the records' own
    timeout, five minutes later, failed the worker.)"""

    def __init__(self, timeout: float, *,
                 probe: Callable[[Any], bool] = answers,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._probe = probe
        self._clock = clock
        self._since: float | None = None
        self._durable = -1
        self._next_look = 0.0

    def stuck(self, producer: Any, only_sending: bool, durable: int) -> float | None:
        """The seconds nothing became durable while every held task only waited for
        acknowledgements (``only_sending``; ``durable`` counts tasks made durable so far),
        once that passes the bound and the cluster answers through ``producer``."""
        now = self._clock()
        if now < self._next_look:
            return None
        self._next_look = now + CHECK_EVERY
        if not only_sending or durable != self._durable:
            self._since, self._durable = None, durable
            return None
        if self._since is None:
            self._since = now
        seconds = now - self._since
        if seconds < self.timeout:
            return None
        self._since = self._clock()  # an outage, or a restart now: count again from here
        return seconds if self._probe(producer) else None
