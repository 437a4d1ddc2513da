"""The README's Conductor example as a new user runs it: one
``streamtask worker examples.order_fulfillment:app`` process serves every stage of the
workflow (each with its own consumer group), and every started order runs to its end, its
payment retried where the gateway times out; the execution trail shows one worker."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from examples import order_fulfillment as example
from streamtask.conductor.context import END
from streamtask.kafka.topics import ensure
from streamtask.ops.trail import read_since
from tests.helpers import WorkerProcess, wait_until

ORDERS = 8


@pytest.mark.timeout(180)
def test_one_process_runs_the_whole_workflow(kafka, tmp_path: Path) -> None:
    app = example.build(kafka=kafka.settings)
    ensure(app)
    since = int(time.time() * 1000) - 1000
    worker = WorkerProcess([sys.executable, "-m", "streamtask", "worker",
                            "examples.order_fulfillment:app", "--bootstrap", kafka.bootstrap],
                           {**os.environ, "PYTHONUNBUFFERED": "1"},
                           tmp_path / "worker.out")
    try:
        orders = {app.start({"order_id": f"o-{n}",
                             "customer": {"email": f"c{n}@example.com", "phone": "+15550100"},
                             "items": [{"sku": "mug", "qty": 1}], "total": 9.5}): f"o-{n}"
                  for n in range(ORDERS)}
        flaky = [oid for oid in orders.values() if example.gateway_times_out(oid)]
        assert flaky, "the sample needs orders whose payment is retried"
        records: list[dict[str, Any]] = []

        def ended() -> bool:
            assert worker.running(), worker.describe()
            records[:] = read_since(app, since)
            done = {e["run_id"] for r in records for e in r["events"]
                    if e["stage"] == END and e["outcome"] == "succeeded"}
            return done >= set(orders)
        wait_until(ended, 150, f"all {ORDERS} orders reach the end of the workflow",
                   worker.describe, interval=0.5)
        events = [e for r in records for e in r["events"]]
        retried = {e["run_id"] for e in events
                   if e["stage"] == "process_payment" and e["outcome"] == "retried"}
        assert {orders[run] for run in retried} == set(flaky)
        assert {r["worker"] for r in records} == {f"{socket.gethostname()}-{worker.pid}"}
        started = worker.output().count("worker.started")
        assert started == len(app.stages), worker.describe()  # one Worker per stage group
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.describe()
    finally:
        worker.kill_group()

