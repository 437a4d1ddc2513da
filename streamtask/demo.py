"""The demo: a photo-upload pipeline (resize -> filter -> scan) on a real local broker.

It starts the local broker when none is given, sends a batch of uploads as a service would,
runs one worker per stage, shows live progress per stage and ends with a summary: tasks,
failures, end-to-end latency percentiles and throughput.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamtask.app import App
from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.envelope import Task
from streamtask.events import Event, EventBus
from streamtask.topics import ensure
from streamtask.worker import Worker

STAGES = ("resize", "filter", "scan")


@dataclass
class DemoResult:
    uploads: int
    seconds: float
    succeeded: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


def build_app(bootstrap: str, name: str, latencies: list[float]) -> App:
    """The demo's stages; ``latencies`` collects upload-to-scanned times in ms."""
    app = App(name, kafka=KafkaSettings(bootstrap=bootstrap))

    @app.stage("resize", payload="photos.ResizeRequest", partitions=4, then="filter")
    def resize(task: Task) -> dict[str, Any]:
        time.sleep(0.001)  # stands in for real image work
        request = task.payload
        return {"photo_id": request["photo_id"],
                "variant": f"{request['width']}x{request['height']}"}

    @app.stage("filter", partitions=4, then="scan")
    def apply_filter(task: Task) -> dict[str, Any]:
        return {**task.payload, "filter": "warm"}

    @app.stage("scan", partitions=4)
    def scan(task: Task) -> None:
        latencies.append(time.time() * 1000 - int(task.headers["uploaded_at"]))

    return app


def run_demo(bootstrap: str, uploads: int = 2000, console: Console | None = None) -> DemoResult:
    console = console or Console(stderr=True)
    latencies: list[float] = []
    app = build_app(bootstrap, f"demo-{uuid.uuid4().hex[:6]}", latencies)
    ensure(app)
    result = DemoResult(uploads, 0.0, latencies_ms=latencies)
    bus = EventBus()
    bus.subscribe(lambda event, fields: _count(result, event, fields))
    started = time.monotonic()
    workers = [Worker(app, [stage], WorkerSettings(concurrency=8), events=bus)
               for stage in STAGES]
    threads = [threading.Thread(target=w.run, kwargs={"max_tasks": uploads}, daemon=True)
               for w in workers]
    for thread in threads:
        thread.start()
    _send_uploads(app, uploads)
    _show_progress(console, result, threads)
    result.seconds = time.monotonic() - started
    return result


def _send_uploads(app: App, uploads: int) -> None:
    with app.producer() as producer:
        for n in range(uploads):
            producer.send("resize", {"photo_id": f"photo-{n}", "width": 640, "height": 480},
                          key=f"user-{n % 50}",
                          headers={"uploaded_at": str(int(time.time() * 1000))})


def _count(result: DemoResult, event: Event, fields: dict[str, Any]) -> None:
    if event is Event.TASK_SUCCEEDED:
        result.succeeded[fields["stage"]] += 1
    elif event in (Event.TASK_FAILED, Event.TASK_TIMED_OUT):
        result.failed[fields["stage"]] += 1


def _show_progress(console: Console, result: DemoResult, threads: list[threading.Thread]) -> None:
    columns = (TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bars = {stage: progress.add_task(stage, total=result.uploads) for stage in STAGES}
        while any(thread.is_alive() for thread in threads):
            for stage, bar in bars.items():
                progress.update(bar, completed=result.succeeded[stage] + result.failed[stage])
            time.sleep(0.1)
        for stage, bar in bars.items():
            progress.update(bar, completed=result.succeeded[stage] + result.failed[stage])


def summary_table(result: DemoResult) -> Table:
    table = Table(title=f"demo: {result.uploads} uploads in {result.seconds:.1f}s")
    for column in ("stage", "succeeded", "failed"):
        table.add_column(column)
    for stage in STAGES:
        table.add_row(stage, str(result.succeeded[stage]), str(result.failed[stage]))
    return table


def summary_line(result: DemoResult) -> str:
    """Latency from upload to scanned (the whole batch is queued at once) and throughput."""
    if len(result.latencies_ms) < 2:
        return "too few photos finished to report latency"
    cuts = statistics.quantiles(result.latencies_ms, n=100)
    return (f"upload -> scanned: p50 {cuts[49]:.0f} ms, p99 {cuts[98]:.0f} ms; "
            f"{result.succeeded['scan'] / result.seconds:.0f} photos/s end to end")
