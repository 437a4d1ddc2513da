"""A stage whose Worker fails mid-run ends its whole process: the process's other stages
drain and stop, and it exits non-zero with one line naming the failed stage, rather than
living on half-served (a supervisor restarts it; uncommitted tasks run again).

The failure is a real broker error: a second process started with the same
``--instance-id`` for the exactly-once stage fences the first one's transactional producer.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.host_helpers import StagesRun


@pytest.mark.timeout(180)
def test_a_failed_stage_stops_the_process_with_one_line(kafka, unique: str,
                                                        tmp_path: Path) -> None:
    with StagesRun(kafka.bootstrap, f"t{unique}", tmp_path,
                   STAGES_EXACTLY_ONCE="step2") as run:
        options = ("--stage", "step1", "--stage", "step2", "--stage", "fast",
                   "--instance-id", "same", "--drain-timeout", "10")
        first = run.start_worker(*options)
        run.send("step1", 20)
        run.send("fast", 20)
        run.wait_for("step2", 20, watch=[first])
        run.wait_for("fast", 20, watch=[first])

        fencer = run.start_worker("--stage", "step2", "--instance-id", "same")
        sent = 20

        def first_exited() -> bool:
            nonlocal sent
            if first.running():  # keep step2 busy: its next transaction meets the fence
                run.send("step1", 10, start=sent)
                sent += 10
                return False
            return True
        wait_until(first_exited, 120, "the fenced process exits", run.describe_workers,
                   interval=0.5)
        assert first.wait(timeout=5) == 1, first.describe()
        output = first.output()
        assert "Traceback" not in output, output
        errors = [line for line in output.splitlines() if "streamtask error: " in line]
        assert len(errors) == 1, first.describe()
        # Where the fence meets the producer decides the words: ending the transaction
        # ("transaction failed (... fenced ...)", or the broker's "Unknown broker error" when
        # the fence lands while it ends the transaction) or producing into it ("Local: Fatal
        # error").
        assert "stage step2: " in errors[0], errors[0]
        assert "transaction failed" in errors[0] or "Fatal error" in errors[0], errors[0]
        assert "the other stages were stopped" in errors[0], errors[0]
        # step1's and fast's Workers drained and stopped (each logs worker.stopped)
        assert output.count(" worker.stopped worker=") >= 2, first.describe()
        fencer.signal(signal.SIGTERM)


@pytest.mark.timeout(120)
def test_a_stage_that_cannot_start_stops_the_process_with_one_line(kafka, unique: str,
                                                                   tmp_path: Path) -> None:
    with StagesRun(kafka.bootstrap, f"t{unique}", tmp_path) as run:
        # The worker's app has a step4 whose topics were never created.
        worker = run.start_worker(env={"STAGES_CHAIN": "4"})
        assert worker.wait(timeout=90) == 1, worker.describe()
        output = worker.output()
        errors = [line for line in output.splitlines() if "streamtask error: " in line]
        assert len(errors) == 1 and "Traceback" not in output, worker.describe()
        assert f"stage step4: topic(s) t{unique}.step4," in errors[0], errors[0]
        assert "the other stages were stopped" in errors[0], errors[0]
