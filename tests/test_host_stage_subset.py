"""``--stage step1 --stage step2`` runs exactly those stages of the chain in one process:
step3's tasks wait in its topic (no group consumes them) until a worker for step3 starts."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.host_helpers import StagesRun

TASKS = 50


@pytest.mark.timeout(150)
def test_stage_options_pick_a_subset(kafka, unique: str, tmp_path: Path) -> None:
    with StagesRun(kafka.bootstrap, f"t{unique}", tmp_path) as run:
        run.send("step1", TASKS)
        pair = run.start_worker("--stage", "step1", "--stage", "step2")
        run.wait_for("step2", TASKS, watch=[pair])
        pair.signal(signal.SIGTERM)
        assert pair.wait(timeout=40) == 0, pair.describe()
        assert run.count("step3") == 0, run.summary()
        assert {r.pid for r in run.ran()} == {pair.pid}, run.summary()
        started = [line for line in pair.output().splitlines() if " worker.started " in line]
        assert sorted(line.split("stages=")[1] for line in started) == [
            "['step1']", "['step2']"], pair.describe()

        last = run.start_worker("--stage", "step3")
        run.wait_for("step3", TASKS, watch=[last])
        assert {r.pid for r in run.ran() if r.stage == "step3"} == {last.pid}
