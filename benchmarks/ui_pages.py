"""Page loads of ``streamtask ui`` on a 20-stage pipeline with 10k dead letters.

Builds an app of ``--stages`` chained stages (each with a two-level retry ladder), writes
``--letters`` dead letters straight into the first stage's DLQ (real dead-letter records:
an encoded task and the headers a worker writes, three error types, 200 keys) plus a few in
every other stage, serves the console with uvicorn in this process, waits until its reader
caught up (reported: the time to read them all), then times each page over one keep-alive
HTTP connection: ``--rounds`` loads after a warm-up, median and 95th percentile, as the
server answers them (the browser's rendering is not included). The dead-letter list pages
filter and sort all 10k held records on every load, so they are the worst case.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
import uuid

import uvicorn

from streamtask import App, Task
from streamtask.config import KafkaSettings
from streamtask.dev.broker import free_port
from streamtask.kafka import clients as kafka
from streamtask.kafka import headers as dl
from streamtask.kafka.topics import ensure
from streamtask.retry import Backoff, RetryPolicy
from streamtask.ui import ConsoleSettings, create_app

ERRORS = ("ValueError", "KeyError", "myapp.errors.QuotaExceeded")


def build(bootstrap: str, stages: int) -> App:
    app = App(f"uibench-{uuid.uuid4().hex[:6]}", kafka=KafkaSettings(bootstrap=bootstrap))
    names = [f"stage_{n:02d}" for n in range(stages)]
    for index, name in enumerate(names):
        then = names[index + 1] if index + 1 < len(names) else None
        app.stage(name, partitions=2, then=then,
                  retry=RetryPolicy(max_attempts=3, backoff=Backoff.FIXED, delay=5))(
            lambda task: task.payload)
    return app


def fill(app: App, stage: str, count: int) -> None:
    """``count`` dead letters in the stage's DLQ, as a worker would have written them."""
    target = app.get_stage(stage)
    raw = kafka.producer(app.kafka)  # straight to the DLQ, as the worker's producer writes
    now = time.time_ns() // 1_000_000
    for n in range(count):
        task = Task.new(stage, {"n": n, "photo": f"photo-{n}"}, key=f"user-{n % 200}")
        error = ERRORS[n % len(ERRORS)]
        headers = dl.dead_letter_headers(
            dl.Origin(target.topic, n % 2, n, now - 60_000, target.group),
            dl.Failure("exhausted", f"{error}: failed while handling n={n}"),
            stage=stage, worker="bench", attempts=3, now_ms=now - (count - n),
            errors=f'[{{"attempt": 3, "error": "{error}", "message": "n={n}", "at": {now}}}]')
        while True:
            try:
                raw.produce(target.dlq_topic, app.codec.encode(task), task.key,
                            headers=headers, partition=n % 2)
                break
            except BufferError:
                raw.poll(0.05)
    raw.flush(60)


def timed(connection: http.client.HTTPConnection, path: str, rounds: int) -> list[float]:
    times = []
    for number in range(rounds + 3):  # the first three warm up
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status == 200, (path, response.status, body[:300])
        if number >= 3:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bootstrap", required=True)
    parser.add_argument("--stages", type=int, default=20)
    parser.add_argument("--letters", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    app = build(args.bootstrap, args.stages)
    ensure(app)
    first = next(iter(app.stages))
    fill(app, first, args.letters)
    for name in list(app.stages)[1:]:
        fill(app, name, 5)
    asgi = create_app(app, ConsoleSettings(status_interval=5.0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=1))
    started = time.monotonic()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    index = asgi.state.console.index
    while not (server.started and index.ready):
        time.sleep(0.05)
    print(f"{args.stages} stages, {args.letters} dead letters in {first}: the console read "
          f"them all {time.monotonic() - started:.2f}s after starting")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    pages = ["/pipeline", "/letters", f"/letters/{first}",
             f"/letters/{first}?error_type=KeyError", f"/letters/{first}?key=user-7",
             f"/letters/{first}?since=1h&page=100", f"/letters/{first}/0/4242",
             f"/stages/{first}", "/designer"]
    print(f"{'page':<44} {'median ms':>10} {'p95 ms':>8}")
    for path in pages:
        times = sorted(timed(connection, path, args.rounds))
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"{path:<44} {statistics.median(times):>10.1f} {p95:>8.1f}")
    server.should_exit = True
    thread.join(30)


if __name__ == "__main__":
    main()
