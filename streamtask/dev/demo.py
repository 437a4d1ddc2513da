"""The demo: the photo-upload flow of the product brief, end to end on a real broker.

A service enqueues uploads; ``resize -> filter -> scan`` run in turn, then the scan forks to
``notify_followers`` and ``update_feeds``. A few failures are injected on purpose: some
filters fail once (they climb the retry ladder and succeed), and one photo's content scan
always fails (after its attempts it lands in the dead-letter queue). One worker per stage
runs in this process; the demo shows live progress per stage and ends with a summary.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.dev.broker import DEFAULT_PORT
from streamtask.events import Event, EventBus
from streamtask.kafka.topics import ensure
from streamtask.model.app import App
from streamtask.model.envelope import Task, new_task_id
from streamtask.ops.trail import TrailWriter
from streamtask.retry import Backoff, RetryPolicy
from streamtask.worker import Worker

STAGES = ("resize", "filter", "scan", "notify_followers", "update_feeds")
NAME = "demo"
"""The demo app's name: its topics and groups are ``demo.<stage>``, kept between runs."""
CURSED = "photo-13"
"""The photo whose content scan always fails: it ends in the dead-letter queue."""
QUICK_RETRIES = RetryPolicy(max_attempts=3, backoff=Backoff.FIXED, delay=0.5)


@dataclass
class DemoResult:
    uploads: int
    seconds: float = 0.0
    succeeded: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    app: str = ""
    run_id: str = ""
    """One run to inspect with ``streamtask runs show``."""

    @property
    def expected_at_end(self) -> int:
        """Photos that reach the last stages (all but the cursed one)."""
        return self.uploads - (1 if self.uploads > 13 else 0)

    def done(self) -> bool:
        return (self.succeeded["update_feeds"] >= self.expected_at_end
                and self.succeeded["notify_followers"] >= self.expected_at_end
                and self.dead["scan"] >= self.uploads - self.expected_at_end)


def build_app(bootstrap: str, name: str, latencies: list[float]) -> App:
    """The demo's stages; ``latencies`` collects upload-to-feed times in ms."""
    app = App(name, kafka=KafkaSettings(bootstrap=bootstrap))

    @app.stage("resize", payload="photos.ResizeRequest", partitions=4, then="filter")
    def resize(task: Task) -> dict[str, Any]:
        time.sleep(0.001)  # stands in for real image work
        return {"photo_id": task.payload["photo_id"],
                "variant": f"{task.payload['width']}x{task.payload['height']}"}

    @app.stage("filter", partitions=4, then="scan", retry=QUICK_RETRIES)
    def apply_filter(task: Task) -> dict[str, Any]:
        if task.attempt == 1 and task.payload["photo_id"].endswith("7"):
            raise ConnectionError("filter service busy")  # succeeds on its retry
        return {**task.payload, "filter": "warm"}

    @app.stage("scan", partitions=4, then=("notify_followers", "update_feeds"),
               retry=QUICK_RETRIES)
    def scan(task: Task) -> dict[str, Any]:
        if task.payload["photo_id"] == CURSED:
            raise ValueError("content scanner rejects this photo")
        return {**task.payload, "safe": True}

    @app.stage("notify_followers", partitions=4, concurrency=16)
    def notify_followers(task: Task) -> None:
        time.sleep(0.002)  # a push notification

    @app.stage("update_feeds", partitions=4)
    def update_feeds(task: Task) -> None:
        latencies.append(time.time() * 1000 - int(task.headers["uploaded_at"]))

    return app


def run_demo(bootstrap: str, uploads: int = 500, console: Console | None = None,
             timeout: float = 300.0, name: str = NAME) -> DemoResult:
    console = console or Console(stderr=True)
    result = DemoResult(uploads)
    app = build_app(bootstrap, name, result.latencies_ms)
    ensure(app)
    bus = EventBus()
    bus.subscribe(lambda event, fields: _count(result, event, fields), inline=True)
    workers = [Worker(app, [stage], WorkerSettings(concurrency=8), events=bus)
               for stage in STAGES]
    for worker, stage in zip(workers, STAGES, strict=True):
        worker.events.subscribe(TrailWriter(app, f"{worker.worker_id}-{stage}"))
    result.app = app.name
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    result.run_id = _send_uploads(app, uploads)
    try:
        _show_progress(console, result, started + timeout)
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(60)
    result.seconds = time.monotonic() - started
    return result


def _send_uploads(app: App, uploads: int) -> str:
    """Send the uploads; returns the run id of one worth inspecting (the cursed photo's, whose
    scan is dead-lettered, else photo-7's, whose filter is retried)."""
    shown = CURSED if uploads > 13 else "photo-7"
    run_id = ""
    with app.producer() as producer:
        for n in range(uploads):
            photo = f"photo-{n}"
            task_id = new_task_id()
            if photo == shown or not run_id:
                run_id = task_id
            producer.send("resize", {"photo_id": photo, "width": 640, "height": 480},
                          key=f"user-{n % 50}", task_id=task_id,
                          headers={"uploaded_at": str(int(time.time() * 1000))})
    return run_id


def _count(result: DemoResult, event: Event, fields: dict[str, Any]) -> None:
    if event is Event.TASK_SUCCEEDED:
        result.succeeded[fields["stage"]] += 1
    elif event is Event.TASK_RETRIED:
        result.retried[fields["stage"]] += 1
    elif event is Event.TASK_DEAD_LETTERED:
        result.dead[fields["stage"]] += 1


def _show_progress(console: Console, result: DemoResult, deadline: float) -> None:
    columns = (TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    totals = {stage: result.uploads for stage in STAGES}
    totals["notify_followers"] = totals["update_feeds"] = result.expected_at_end
    with Progress(*columns, console=console) as progress:
        bars = {stage: progress.add_task(stage, total=totals[stage], note="")
                for stage in STAGES}
        while not result.done() and time.monotonic() < deadline:
            _update(progress, bars, result)
            time.sleep(0.1)
        _update(progress, bars, result)


def _update(progress: Progress, bars: dict[str, Any], result: DemoResult) -> None:
    for stage, bar in bars.items():
        note = " ".join(part for part in (
            f"{result.retried[stage]} retried" if result.retried[stage] else "",
            f"{result.dead[stage]} dead-lettered" if result.dead[stage] else "") if part)
        progress.update(bar, completed=result.succeeded[stage] + result.dead[stage], note=note)


def summary_table(result: DemoResult) -> Table:
    table = Table(title=f"demo: {result.uploads} uploads in {result.seconds:.1f}s")
    for column in ("stage", "succeeded", "retried", "dead-lettered"):
        table.add_column(column)
    for stage in STAGES:
        table.add_row(stage, str(result.succeeded[stage]), str(result.retried[stage]),
                      str(result.dead[stage]))
    return table


def summary_line(result: DemoResult) -> str:
    """Latency from upload to feed (the whole batch is queued at once) and throughput."""
    if len(result.latencies_ms) < 2:
        return "too few photos finished to report latency"
    cuts = statistics.quantiles(result.latencies_ms, n=100)
    return (f"upload -> feed updated: p50 {cuts[49]:.0f} ms, p99 {cuts[98]:.0f} ms; "
            f"{result.succeeded['update_feeds'] / result.seconds:.0f} photos/s end to end; "
            f"{sum(result.retried.values())} retries, {sum(result.dead.values())} dead letter(s)")


app = build_app(f"127.0.0.1:{DEFAULT_PORT}", NAME, [])
"""The demo's app on the broker ``make demo`` starts, for the tools that take an app after
the demo ran: ``streamtask ui streamtask.dev.demo:app``, ``streamtask dlq ls
streamtask.dev.demo:app``."""
