"""Prometheus metrics of a worker process, as a subscriber of its event bus.

The worker loop emits events (:mod:`streamtask.events`); :class:`WorkerMetrics` counts them
in plain dicts on the loop's thread and turns them into metric families only when Prometheus
scrapes (a custom collector). A ``prometheus_client`` counter or histogram takes a lock on
every update, which on a per-task path costs more than the counting itself; here a task costs
a few dict updates and one ``bisect``. Consumer lag comes from librdkafka's statistics
callback, which runs inside the loop's own ``poll``.

Names follow Prometheus conventions (``_total`` counters, units in names, an ``app`` label
everywhere). With ``--processes N`` each child serves its own port (``--metrics-port P``
gives children P .. P+N-1), so each child is a scrape target and sums are taken in PromQL.
"""

from __future__ import annotations

import dataclasses
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.errors import ConfigurationError
from streamtask.events import Event, EventBus
from streamtask.model.app import App, Stage
from streamtask.worker import Worker

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0, 300.0)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATISTICS_INTERVAL_MS = 5000
"""How often librdkafka reports consumer lag to the worker."""
_ROUTED = {Event.TASK_SUCCEEDED: "succeeded", Event.TASK_FAILED: "failed",
           Event.TASK_TIMED_OUT: "timed_out", Event.TASK_RETRIED: "retried",
           Event.TASK_DEAD_LETTERED: "dead_lettered"}
_REBALANCES = {Event.PARTITIONS_ASSIGNED: "assigned", Event.PARTITIONS_REVOKED: "revoked",
               Event.PARTITIONS_LOST: "lost"}


class _Histogram:
    """Observations in fixed buckets (not cumulative; Prometheus' ``le`` is computed on
    collection)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        total = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class WorkerMetrics:
    """Counts one worker's events and exports them (and consumer lag) to Prometheus."""

    def __init__(self, app: str, stages: Iterable[Stage], *, worker: str = "",
                 instance_id: str | None = None, version: str = "") -> None:
        self.app = app
        self.worker = worker
        stages = list(stages)
        self._stage_of = {topic: (s.name, "retry" if topic != s.topic else "input")
                          for s in stages for topic in (s.topic, *s.retry_topics)}
        self._info = {"app": app, "instance_id": instance_id or "", "version": version,
                      "stages": ",".join(s.name for s in stages)}
        self.tasks: dict[tuple[str, str], int] = {}
        self.retries: dict[tuple[str, str], int] = {}
        self.dead_letters: dict[tuple[str, str], int] = {}
        self.durations: dict[str, _Histogram] = {}
        self.commit_latency = _Histogram(COMMIT_BUCKETS)
        self.counters: dict[str, int] = {"commits": 0, "commit_failures": 0,
                                         "consumer_recreations": 0, "client_recreations": 0}
        self.rebalances: dict[str, int] = {}
        self.delivery_failures: dict[str, int] = {}
        self.lag: dict[str, dict[tuple[str, int], int]] = {}
        """librdkafka client name -> (topic, partition) -> records after the committed offset."""
        self._gauges: dict[str, Callable[[], float]] = {}
        self._dropped: Callable[[], dict[str, int]] = dict
        self._handlers: dict[Event, Callable[[Event, dict[str, Any]], None]] = {
            **dict.fromkeys(_ROUTED, self._routed),
            **dict.fromkeys(_REBALANCES, self._rebalanced),
            Event.OFFSETS_COMMITTED: self._committed,
            Event.OFFSETS_COMMIT_ACKNOWLEDGED: self._commit_acknowledged,
            Event.OFFSETS_COMMIT_FAILED: self._commit_failed,
            Event.DELIVERY_FAILED: self._delivery_failed,
            Event.CONSUMER_RECREATED: self._consumer_recreated,
            Event.CLIENTS_RECREATED: self._clients_recreated,
        }

    # -- subscriber: called on the worker loop's thread ------------------------------------

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        handler = self._handlers.get(event)
        if handler is not None:
            handler(event, fields)

    def _routed(self, event: Event, fields: dict[str, Any]) -> None:
        stage = fields["stage"]
        key = (stage, _ROUTED[event])
        self.tasks[key] = self.tasks.get(key, 0) + 1
        seconds = fields.get("seconds")
        if seconds is not None:
            histogram = self.durations.get(stage)
            if histogram is None:
                histogram = self.durations[stage] = _Histogram(DURATION_BUCKETS)
            histogram.observe(seconds)
        if event is Event.TASK_RETRIED:
            level = (stage, fields["topic"].rsplit(".", 1)[-1])
            self.retries[level] = self.retries.get(level, 0) + 1
        elif event is Event.TASK_DEAD_LETTERED:
            reason = (stage, fields["reason"])
            self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1

    def _rebalanced(self, event: Event, _fields: dict[str, Any]) -> None:
        kind = _REBALANCES[event]
        self.rebalances[kind] = self.rebalances.get(kind, 0) + 1

    def _committed(self, _event: Event, _fields: dict[str, Any]) -> None:
        self.counters["commits"] += 1

    def _commit_acknowledged(self, _event: Event, fields: dict[str, Any]) -> None:
        self.commit_latency.observe(fields["seconds"])

    def _commit_failed(self, _event: Event, _fields: dict[str, Any]) -> None:
        self.counters["commit_failures"] += 1

    def _consumer_recreated(self, _event: Event, _fields: dict[str, Any]) -> None:
        self.counters["consumer_recreations"] += 1

    def _clients_recreated(self, _event: Event, _fields: dict[str, Any]) -> None:
        self.counters["client_recreations"] += 1

    def _delivery_failed(self, _event: Event, fields: dict[str, Any]) -> None:
        topic = fields["topic"]
        self.delivery_failures[topic] = self.delivery_failures.get(topic, 0) + 1

    def on_statistics(self, report: str) -> None:
        """librdkafka's statistics (JSON): keep the consumer lag of the stages' partitions.

        librdkafka leaves ``consumer_lag`` at -1 until a partition has a committed offset, so
        a worker stuck on its first task would look lag-free: then the lag counts from the
        partition's low watermark, where a group without commits starts."""
        stats = orjson.loads(report)
        if stats.get("type") != "consumer":
            return
        lags: dict[tuple[str, int], int] = {}
        for topic, topic_stats in stats.get("topics", {}).items():
            if topic not in self._stage_of:
                continue
            for partition, p in topic_stats.get("partitions", {}).items():
                lag = _lag(p)
                if partition != "-1" and lag is not None:
                    lags[(topic, int(partition))] = lag
        self.lag[stats.get("name", "")] = lags

    # -- wiring ------------------------------------------------------------------------------

    def kafka_settings(self, settings: KafkaSettings,
                       interval_ms: int = STATISTICS_INTERVAL_MS) -> KafkaSettings:
        """``settings`` with librdkafka's statistics reported to this object."""
        extra = {"statistics.interval.ms": interval_ms, **settings.extra,
                 "stats_cb": self.on_statistics}
        return dataclasses.replace(settings, extra=extra)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Export ``streamtask_<name>{app}``, read at scrape time (e.g. a worker's in-flight)."""
        self._gauges[name] = read

    def dropped_events(self, read: Callable[[], dict[str, int]]) -> None:
        """Export ``streamtask_events_dropped_total{subscriber}``, read at scrape time from
        ``read`` (e.g. a host's :attr:`~streamtask.worker.host.StageHost.events_dropped`)."""
        self._dropped = read

    def registry(self) -> CollectorRegistry:
        """A registry with these metrics and the process' own (CPU, memory, start time)."""
        registry = CollectorRegistry()
        registry.register(self)
        ProcessCollector(registry=registry)
        return registry

    # -- collector: called on the HTTP server's thread -------------------------------------

    def collect(self) -> Iterator[Metric]:
        app = self.app
        tasks = CounterMetricFamily("streamtask_tasks", "Task outcomes: executions that "
                                    "succeeded, failed or timed out, and what failures became "
                                    "(retried, dead_lettered).", labels=["app", "stage", "outcome"])
        for (stage, outcome), n in list(self.tasks.items()):
            tasks.add_metric([app, stage, outcome], n)
        yield tasks
        yield self._counter("streamtask_task_retries", "Tasks sent to a retry level.",
                            ["stage", "level"], self.retries)
        yield self._counter("streamtask_dead_letters", "Tasks and records dead-lettered, by "
                            "reason.", ["stage", "reason"], self.dead_letters)
        durations = HistogramMetricFamily("streamtask_task_duration_seconds",
                                          "How long handlers ran.", labels=["app", "stage"])
        for stage, histogram in list(self.durations.items()):
            durations.add_metric([app, stage], histogram.buckets(), histogram.sum)
        yield durations
        yield from self._worker_families()

    def _worker_families(self) -> Iterator[Metric]:
        app = self.app
        for name, read in list(self._gauges.items()):
            gauge = GaugeMetricFamily(f"streamtask_{name}", _GAUGE_HELP.get(name, name),
                                      labels=["app"])
            gauge.add_metric([app], read())
            yield gauge
        lag = GaugeMetricFamily("streamtask_consumer_lag", "Records after the committed offset "
                                "of each assigned partition (librdkafka statistics); kind "
                                "is input or retry (a retry level lags by design).",
                                labels=["app", "stage", "kind", "topic", "partition"])
        for lags in list(self.lag.values()):
            for (topic, partition), n in list(lags.items()):
                lag.add_metric([app, *self._stage_of[topic], topic, str(partition)], n)
        yield lag
        commits = HistogramMetricFamily("streamtask_commit_duration_seconds", "Time from an "
                                        "offset commit request to the broker's answer.",
                                        labels=["app"])
        commits.add_metric([app], self.commit_latency.buckets(), self.commit_latency.sum)
        yield commits
        for name, help_text in (("commits", "Offset commits requested."),
                                ("commit_failures", "Offset commits that failed."),
                                ("consumer_recreations", "Consumers closed and re-created "
                                 "because they stayed out of their group, or fetched nothing "
                                 "while records waited, while the cluster answered."),
                                ("client_recreations", "Times every client was re-created "
                                 "because no acknowledgement came while the cluster "
                                 "answered.")):
            counter = CounterMetricFamily(f"streamtask_{name}", help_text, labels=["app"])
            counter.add_metric([app], self.counters[name])
            yield counter
        yield self._counter("streamtask_rebalances", "Partitions assigned, revoked or lost "
                            "(one per rebalance callback).", ["kind"], self.rebalances)
        yield self._counter("streamtask_delivery_failures", "Produced records the broker never "
                            "acknowledged.", ["topic"], self.delivery_failures)
        yield self._counter("streamtask_events_dropped", "Events a detached subscriber (the "
                            "trail, a user's) missed because it was too far behind.",
                            ["subscriber"], self._dropped())
        info = InfoMetricFamily("streamtask_worker", "This worker process.")
        info.add_metric([], {**self._info, "worker": self.worker})
        yield info

    def _counter(self, name: str, help_text: str, labels: list[str],
                 values: dict[Any, int]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, help_text, labels=["app", *labels])
        for key, n in list(values.items()):
            family.add_metric([self.app, *(key if isinstance(key, tuple) else (key,))], n)
        return family


_GAUGE_HELP = {"tasks_in_flight": "Tasks a handler is running now.",
               "tasks_held": "Tasks received and not finished (running, waiting for a thread "
                             "or a key, or for acknowledgements), and retry records held until "
                             "due."}


def _lag(partition: dict[str, Any]) -> int | None:
    lag = partition.get("consumer_lag", -1)
    if lag >= 0:
        return int(lag)
    if partition.get("fetch_state") not in ("active", "offset-query", "offset-wait"):
        return None  # not consumed by this client
    end = partition.get("ls_offset", -1)
    end = end if end >= 0 else partition.get("hi_offset", -1)
    low = partition.get("lo_offset", -1)
    return int(end - low) if end >= 0 and low >= 0 else None


class MetricsServer:
    """The ``/metrics`` HTTP endpoint of one process, stopped with :meth:`close`."""

    def __init__(self, metrics: WorkerMetrics, port: int, addr: str = "0.0.0.0") -> None:
        try:
            self._server, self._thread = start_http_server(port, addr, metrics.registry())
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: "
                                     f"{exc.strerror or exc}") from exc

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not threading.current_thread():
            self._thread.join(5)


def observed_worker(app: App, stages: Sequence[str] | None, settings: WorkerSettings, *,
                    port: int, addr: str = "0.0.0.0", version: str = "",
                    interval_ms: int = STATISTICS_INTERVAL_MS,
                    events: EventBus | None = None) -> tuple[Worker, MetricsServer]:
    """A worker whose metrics are served on ``addr:port`` (close the server after the run);
    ``events``, if given, is the bus the metrics subscribe to (and the worker's parent)."""
    chosen = [app.get_stage(name) for name in stages] if stages else list(app.stages.values())
    metrics = WorkerMetrics(app.name, chosen, instance_id=settings.instance_id, version=version)
    bus = events or EventBus()
    bus.subscribe(metrics, inline=True)  # dict updates: cheaper than handing them over
    worker = Worker(app, stages, settings, metrics.kafka_settings(app.kafka, interval_ms),
                    events=bus)
    metrics.worker = worker.worker_id
    metrics.dropped_events(lambda: _dropped(bus, worker.events))
    metrics.gauge("tasks_in_flight", lambda: worker.in_flight)
    metrics.gauge("tasks_held", lambda: worker.held)
    return worker, MetricsServer(metrics, port, addr)


def _dropped(*buses: EventBus) -> dict[str, int]:
    """Events dropped per detached subscriber, over ``buses`` (a worker's own bus, where
    its trail is subscribed, and the bus the caller gave it)."""
    out: Counter[str] = Counter()
    for bus in buses:
        out.update(bus.dropped())
    return dict(out)
