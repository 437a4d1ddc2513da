"""The worker's own CPU per task over the whole loop, without Kafka.

The ``peers`` scenario's no-op stage (a 100-byte Blob payload, ``then=`` a sink stage, the
default ``WorkerSettings``) run by a real :class:`~streamtask.worker.Worker` whose transport
hands out stand-in clients: a consumer serving pre-encoded envelopes from 8 partitions
(``consume`` returns what is queued at once, as librdkafka's does when its prefetch queue is
full) and a producer that acknowledges each record at its next ``poll``. Everything the
worker's own Python does per task is timed (poll, decode, hand-off to the handler threads,
routing, encoding, the produce call, acknowledgement, offsets, commits), librdkafka's work
and the broker's are not. Times are the process's CPU time (every thread's, so the
hand-off's thread switches count), µs per task, medians of ``--rounds`` rounds.

``--tree DIR`` runs the streamtask package found in DIR instead (an exported older commit:
``git archive COMMIT streamtask schemas | tar -x -C DIR``), to compare two versions: run
both in alternation, several times, on a shared box::

    python benchmarks/loop_bench.py [--rounds 5] [--tasks 50000] [--tree DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

PARTITIONS = 8


class Message:
    """Stands in for ``confluent_kafka.Message`` (the methods the worker calls)."""

    __slots__ = ("_key", "_offset", "_partition", "_topic", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes,
                 value: bytes) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value = key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, 0


class Partition:
    """Stands in for ``confluent_kafka.TopicPartition`` in rebalance callbacks."""

    def __init__(self, topic: str, partition: int, offset: int = -1001) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset


class Consumer:
    """Serves the queued records, interleaving partitions as librdkafka's fetches do."""

    def __init__(self, records: deque[Message], config: dict[str, Any]) -> None:
        self._records = records
        self._on_commit = config.get("on_commit")
        self._assign: Callable[..., None] | None = None
        self._topics: list[str] = []
        self._committed: list[Any] = []

    def subscribe(self, topics: list[str], on_assign: Any = None, **_callbacks: Any) -> None:
        self._topics, self._assign = topics, on_assign

    def _serve(self) -> None:
        if self._assign is not None:
            assign, self._assign = self._assign, None
            assign(self, [Partition(t, p) for t in self._topics for p in range(PARTITIONS)])
        committed, self._committed = self._committed, []
        if committed and self._on_commit is not None:
            self._on_commit(None, committed)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self._serve()
        records = self._records
        if not records or self._topics[0] != records[0].topic():
            return []
        take = min(num_messages, len(records))
        return [records.popleft() for _ in range(take)]

    def poll(self, timeout: float | None = None) -> Message | None:
        taken = self.consume(1)
        if not taken and timeout:
            time.sleep(min(timeout, 0.001))
        return taken[0] if taken else None

    def commit(self, offsets: list[Any] | None = None, asynchronous: bool = True) -> None:
        if asynchronous:
            self._committed = list(offsets or [])

    def assignment(self) -> list[Partition]:
        return [Partition(t, p) for t in self._topics for p in range(PARTITIONS)]

    def pause(self, _partitions: Any) -> None:
        """Nothing is prefetched here: there is nothing to hold back."""

    def resume(self, _partitions: Any) -> None:
        """See :meth:`pause`."""

    def close(self) -> None:
        """Nothing to leave."""


class Producer:
    """Accepts every record; acknowledges each at the next ``poll``."""

    def __init__(self) -> None:
        self._pending: list[Callable[[Any, Any], None]] = []
        self.produced = 0

    def produce(self, _topic: str, _value: Any = None, _key: Any = None, *,
                on_delivery: Callable[[Any, Any], None] | None = None, **_kw: Any) -> None:
        self.produced += 1
        if on_delivery is not None:
            self._pending.append(on_delivery)

    def poll(self, _timeout: float = 0.0) -> int:
        pending, self._pending = self._pending, []
        for acknowledged in pending:
            acknowledged(None, None)
        return len(pending)

    def flush(self, _timeout: float = 0.0) -> int:
        self.poll()
        return 0


class Topics:
    def __init__(self, names: list[str]) -> None:
        self.topics = {name: type("Meta", (), {"partitions": dict.fromkeys(range(PARTITIONS))})
                       for name in names}


class Admin:
    def __init__(self, names: list[str]) -> None:
        self._names = names

    def list_topics(self, timeout: float = -1) -> Topics:
        return Topics(self._names)


class Transport:
    """The worker's transport seam, serving the records of one run."""

    def __init__(self, records: deque[Message], topics: list[str]) -> None:
        self._records, self._topics = records, topics
        self.producers: list[Producer] = []

    def consumer(self, _settings: Any, _group: str, **config: Any) -> Consumer:
        return Consumer(self._records, config)

    def producer(self, _settings: Any, **_config: Any) -> Producer:
        self.producers.append(Producer())
        return self.producers[-1]

    def admin(self, _settings: Any, **_config: Any) -> Admin:
        return Admin(self._topics)

    def wait_for_cluster(self, _settings: Any, _timeout: float | None = None) -> None:
        """Always there."""


def _run(streamtask: Any, tasks: int, values: list[bytes]) -> float:
    """One drain of ``tasks`` records; CPU µs per task."""
    peers, config, worker_mod = streamtask
    app = peers.peers_app("loop", "127.0.0.1:1")
    stage = app.get_stage("work")
    topics = [stage.topic, stage.dlq_topic, *stage.retry_topics,
              app.get_stage("sink").topic, app.get_stage("sink").dlq_topic]
    records = deque(Message(stage.topic, n % PARTITIONS, n // PARTITIONS,
                            str(n).encode(), values[n % len(values)])
                    for n in range(tasks))
    app.transport = Transport(records, topics)
    worker = worker_mod.Worker(app, ["work"], config.WorkerSettings())
    started = time.process_time()
    worker.run(max_tasks=tasks)
    return (time.process_time() - started) / tasks * 1e6


def _load(tree: str | None) -> tuple[Any, Any, Any]:
    if tree is not None:
        sys.path.insert(0, os.path.abspath(tree))
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    from streamtask import config
    from streamtask.dev import bench_peers
    from streamtask.worker import worker
    from streamtask.worker.interpreter import tune_for_worker

    if tree is not None:
        assert os.path.abspath(tree) in config.__file__, config.__file__
    tune_for_worker()
    return bench_peers, config, worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--tree", help="run the streamtask package in this directory")
    args = parser.parse_args()
    streamtask = _load(args.tree)
    peers = streamtask[0]
    app = peers.peers_app("loop", "127.0.0.1:1")
    values = [value for _key, value in peers._envelope_values(app, peers._contents(1000, 0))]
    _run(streamtask, min(args.tasks, 5000), values)  # warm-up
    times = [_run(streamtask, args.tasks, values) for _ in range(args.rounds)]
    print(f"{args.tree or 'working tree'}: {statistics.median(times):.1f} µs/task "
          f"(rounds: {' '.join(f'{t:.1f}' for t in times)})")


if __name__ == "__main__":
    main()
