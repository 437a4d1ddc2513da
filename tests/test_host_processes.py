"""``--processes 2`` over several stages: each supervised child runs the whole set of
stages, the groups split each stage's partitions between the two, every task of the chain
runs, and SIGTERM stops it all with exit code 0."""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import child_pids
from tests.host_helpers import StagesRun

TASKS = 300
STAGES = ("step1", "step2", "step3")


@pytest.mark.timeout(180)
def test_two_processes_each_run_every_stage(kafka, unique: str, tmp_path: Path) -> None:
    with StagesRun(kafka.bootstrap, f"t{unique}", tmp_path, STAGES_SLEEP="0.05") as run:
        run.send("step1", TASKS)
        supervisor = run.start_worker(*(arg for s in STAGES for arg in ("--stage", s)),
                                      "--processes", "2", "--concurrency", "2",
                                      "--drain-timeout", "10")
        for stage in STAGES:
            run.wait_for(stage, TASKS, timeout=150, watch=[supervisor])
        children = set(child_pids(supervisor.pid))
        stages_by_pid: dict[int, set[str]] = defaultdict(set)
        for r in run.ran():
            stages_by_pid[r.pid].add(r.stage)
        assert set(stages_by_pid) <= children and len(stages_by_pid) == 2, (
            f"children {children}; {dict(stages_by_pid)}")
        assert all(len(stages) >= 2 for stages in stages_by_pid.values()), dict(stages_by_pid)
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(timeout=40) == 0, supervisor.describe()
