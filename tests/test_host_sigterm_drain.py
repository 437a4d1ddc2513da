"""SIGTERM mid-run drains every stage of a process: a 3-step chain runs in one process, its
running tasks finish and are committed in each stage, the process exits 0, and a process
started afterwards runs none of the tasks the first one finished, in any stage (0 reruns).
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.host_helpers import StagesRun

TASKS = 300
STAGES = ("step1", "step2", "step3")
DRAIN_TIMEOUT = 10.0


@pytest.mark.timeout(180)
def test_sigterm_drains_all_stages_and_nothing_runs_again(kafka, unique: str,
                                                          tmp_path: Path) -> None:
    with StagesRun(kafka.bootstrap, f"t{unique}", tmp_path, STAGES_SLEEP="0.02") as run:
        run.send("step1", TASKS)
        options = ("--stage", "step1", "--stage", "step2", "--stage", "step3",
                   "--concurrency", "4", "--drain-timeout", str(DRAIN_TIMEOUT))
        first = run.start_worker(*options)
        run.wait_for("step3", 30, watch=[first])  # every stage of the chain has work now
        first.signal(signal.SIGTERM)
        assert first.wait(timeout=DRAIN_TIMEOUT + 20) == 0, first.describe()
        by_first = {(r.stage, r.n) for r in run.ran()}
        assert len({n for stage, n in by_first if stage == "step3"}) < TASKS, (
            "SIGTERM came after the last task: not mid-run")
        assert first.output().count(" worker.stopped worker=") == len(STAGES), first.describe()

        second = run.start_worker(*options)
        for stage in STAGES:
            run.wait_for(stage, TASKS, watch=[second])
        second.signal(signal.SIGTERM)
        assert second.wait(timeout=DRAIN_TIMEOUT + 20) == 0, second.describe()

        ran = run.ran()
        again = sorted((r.stage, r.n) for r in ran
                       if r.pid == second.pid and (r.stage, r.n) in by_first)
        assert not again, (f"{len(again)} tasks finished before SIGTERM ran again in the next "
                           f"process (first: {again[:10]}); {run.summary()}")
        runs = Counter((r.stage, r.n) for r in ran)
        assert sorted(runs) == sorted((s, n) for s in STAGES for n in range(TASKS)), run.summary()
        assert max(runs.values()) == 1, run.summary()
