"""``--max-tasks`` and ``--idle-timeout`` count over all the stages of a process: it exits
0 after that many tasks ended in any of its stages, or once none of them had work for that
long. A stage with nothing to do while another is busy keeps serving: tasks sent to it
later still run."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.host_helpers import StagesRun

IDLE = 2.0


@pytest.mark.timeout(150)
def test_max_tasks_counts_every_stage(kafka, unique: str, tmp_path: Path) -> None:
    with StagesRun(kafka.bootstrap, f"t{unique}", tmp_path) as run:
        run.send("step1", 20)
        worker = run.start_worker("--stage", "step1", "--stage", "step2", "--stage", "step3",
                                  "--max-tasks", "60", "--log-format", "json")
        assert worker.wait(timeout=120) == 0, worker.describe()
        assert [run.count(s) for s in ("step1", "step2", "step3")] == [20, 20, 20], (
            run.summary())
        # The JSON log stays one object per line with three Workers writing to it, each
        # Worker's start names its stage, and the summary counts the tasks of all three.
        lines = [orjson.loads(line) for line in worker.output().splitlines()]
        started = sorted(line["stages"] for line in lines
                         if line.get("event") == "worker.started")
        assert started == [["step1"], ["step2"], ["step3"]], worker.describe()
        (summary,) = [line for line in lines if line.get("event") == "worker.summary"]
        assert summary["task.succeeded"] == 60, summary


@pytest.mark.timeout(150)
def test_idle_timeout_waits_for_every_stage(kafka, unique: str, tmp_path: Path) -> None:
    with StagesRun(kafka.bootstrap, f"t{unique}", tmp_path) as run:
        worker = run.start_worker("--stage", "slow", "--stage", "fast", "--concurrency", "2",
                                  "--idle-timeout", str(IDLE))
        run.send("slow", 2)
        run.send("fast", 5)
        run.wait_for("fast", 5, watch=[worker])
        time.sleep(2 * IDLE + 1)  # fast has had nothing to do for longer than the timeout
        run.send("fast", 5, start=5)
        run.wait_for("fast", 10, watch=[worker])
        assert run.count("slow") == 0, run.summary()
        run.gate.touch()
        assert worker.wait(timeout=120) == 0, worker.describe()
        assert run.count("slow") == 2, run.summary()
