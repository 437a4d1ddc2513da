"""``streamtask worker --processes 2``: the supervisor runs two children, restarts one killed
with ``kill -9``, every task completes, and SIGTERM stops it all with exit code 0.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import WorkerProcess, child_pids, missing, pid_alive, recorder_run, summary
from tests.helpers import wait_until as wait

TASKS = 4000
DRAIN_TIMEOUT = 10.0


def live_children(supervisor: WorkerProcess) -> list[int]:
    return [pid for pid in child_pids(supervisor.pid) if pid_alive(pid)]


def group_is_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(180)
def test_supervisor_restarts_a_killed_child_and_stops_cleanly(
        kafka, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=0.002) as run:
        run.send(TASKS)
        supervisor = run.start_worker("--processes", "2", "--concurrency", "8",
                                      "--drain-timeout", str(DRAIN_TIMEOUT))
        wait(lambda: len(live_children(supervisor)) == 2, 30, "the supervisor runs 2 children",
             supervisor.describe)
        original = set(live_children(supervisor))

        run.wait_for_executions(300, timeout=60, watch=[supervisor])
        victim = Counter(e.pid for e in run.executions()).most_common(1)[0][0]
        assert victim in original, f"pid {victim} ran tasks but is no child of the supervisor"
        os.kill(victim, signal.SIGKILL)
        wait(lambda: len(set(live_children(supervisor)) - original) == 1
             and len(live_children(supervisor)) == 2, 30,
             f"the supervisor replaces its killed child {victim}", supervisor.describe)
        children = set(live_children(supervisor))
        (replacement,) = children - original

        run.wait_until_all_ran(TASKS, timeout=90, watch=[supervisor])
        ran_by = Counter(e.pid for e in run.executions())
        assert ran_by[replacement] > 0, f"the restarted child ran nothing: {dict(ran_by)}"

        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(timeout=DRAIN_TIMEOUT + 10) == 0, supervisor.describe()
        wait(lambda: group_is_empty(supervisor.pid), 10, "no child of the supervisor is alive",
             lambda: f"still alive: {[pid for pid in children if pid_alive(pid)]}")
        executions = run.executions()
        assert not missing(executions, TASKS), summary(executions, TASKS)
