"""One process serving two stages: a stage whose handlers are all blocked (and whose held
window is full) does not starve the other one, which runs all its tasks meanwhile. The
process's one /metrics endpoint counts both stages (and sums what is in flight), and
``streamtask status`` shows the process as the one worker of each stage's group."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import orjson
import pytest

from streamtask.dev.broker import free_port
from tests.helpers import scrape, value, wait_until
from tests.host_helpers import StagesRun
from tests.test_cli_errors import streamtask

SLOW_TASKS = 20
FAST_TASKS = 200
CONCURRENCY = 2


@pytest.mark.timeout(180)
def test_blocked_slow_stage_does_not_starve_the_fast_one(kafka, unique: str,
                                                         tmp_path: Path) -> None:
    with StagesRun(kafka.bootstrap, f"t{unique}", tmp_path) as run:
        port = free_port()
        worker = run.start_worker("--stage", "slow", "--stage", "fast",
                                  "--concurrency", str(CONCURRENCY), "--prefetch", "4",
                                  "--metrics-port", str(port), "--drain-timeout", "20")
        # Slow tasks first: with one shared pool or window they would hold every thread and
        # every buffered slot, and no fast task could start until the gate opens.
        run.send("slow", SLOW_TASKS)
        run.send("fast", FAST_TASKS)
        run.wait_for("fast", FAST_TASKS, watch=[worker])
        assert run.count("slow") == 0, "the gate is closed: no slow task can have finished"
        assert {r.pid for r in run.ran()} == {worker.pid}, run.summary()

        def scraped() -> bool:
            samples = scrape(port)
            return (value(samples, "streamtask_tasks_total", app=run.app.name, stage="fast",
                          outcome="succeeded") == FAST_TASKS
                    and value(samples, "streamtask_tasks_in_flight") == CONCURRENCY)
        wait_until(scraped, 30, f"/metrics counts {FAST_TASKS} fast tasks and {CONCURRENCY} "
                   "slow ones in flight", lambda: str(scrape(port)))

        status = streamtask("status", "tests.apps.stages_app:app", "--stage", "slow",
                            "--stage", "fast", "--window", "1", "--json",
                            "--bootstrap", kafka.bootstrap, env=run.env)
        members = {s["stage"]: {m["client_id"] for m in s["members"]}
                   for s in orjson.loads(status.stdout)["stages"]}
        process = f"{socket.gethostname()}-{worker.pid}"
        assert members == {"slow": {process}, "fast": {process}}, status.stdout + status.stderr

        run.gate.touch()
        run.wait_for("slow", SLOW_TASKS, watch=[worker])
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=40) == 0, worker.describe()
