"""HUMAN and WAIT tasks pause a run without holding a worker: the approval example's runs
resume on a signal (from the CLI or from Python), a rejected one terminates, an unsigned
one is dead-lettered at its deadline, a WAIT's duration passes on its own, and a run that
waits while every worker is stopped resumes after the restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from examples import approval
from streamtask.conductor.waits import parse_duration
from streamtask.errors import ConfigurationError
from streamtask.kafka import clients as kafka_io
from streamtask.kafka.topics import ensure
from streamtask.ops import deadletters as dlq
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running

ROOT = Path(__file__).resolve().parent.parent


def parked_runs(app: approval.WorkflowApp) -> set[str]:
    """Run ids the approval's resume join holds in its changelog (waiting, durably)."""
    stage = app.stages["approve_resume"]
    held: dict[str, bool] = {}
    try:
        for partition in range(stage.partitions):
            for key, value in kafka_io.read_partition(app.kafka, stage.changelog_topic,
                                                      partition):
                held[key if isinstance(key, str) else key.decode()] = value is not None
    except Exception:  # a topic just created may have no leader yet: ask again later
        return set()
    return {run for run, waiting in held.items() if waiting}


@pytest.mark.timeout(300)
def test_approvals_resume_on_signals_from_the_cli_and_python(kafka, unique,
                                                             tmp_path: Path) -> None:
    finished = Finished()
    app = approval.build(name=f"ap{unique}", kafka=kafka.settings, on_end=finished.on_end)
    definition = orjson.loads(approval.DEFINITION.read_bytes())
    definition["name"] = app.name  # the CLI loads the file: same app name, same topics
    file = tmp_path / "approval.json"
    file.write_bytes(orjson.dumps(definition))
    ensure(app)
    approved = app.start({"employee": "ann", "amount": 42})
    rejected = app.start({"employee": "bob", "amount": 9000})
    early = app.start({"employee": "di", "amount": 1})
    app.signal(early, "approval_ref", {"approved": True, "approver": "eve"})  # before it waits
    with running(app):
        wait_until(lambda: {approved, rejected} <= parked_runs(app), 120,
                   "two runs wait for their approval", lambda: str(parked_runs(app)))
        done = subprocess.run(
            [sys.executable, "-m", "streamtask", "signal", str(file), approved,
             "approval_ref", "--output", '{"approved": true, "approver": "zoe"}',
             "--bootstrap", kafka.bootstrap],
            cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60,
            check=False)
        assert (done.returncode, done.stdout) == (
            0, f"signalled approval_ref of run {approved}\n"), done.stderr
        app.signal(rejected, "approval_ref", {"approved": False, "approver": "max"})
        wait_until(lambda: {approved, rejected, early} <= set(finished.runs), 120,
                   "the signalled runs finished", lambda: str(finished.runs))
    runs = finished.runs
    assert runs[approved].status == "COMPLETED"
    assert runs[approved].output == {"paid": True, "payment": "pay-ann-42", "approver": "zoe"}
    assert runs[approved].tasks["cool_off_ref"]["status"] == "COMPLETED"
    assert runs[early].output["approver"] == "eve"
    assert runs[rejected].status == "TERMINATED"
    assert runs[rejected].reason == "rejected by max"
    assert runs[rejected].output == {"paid": False, "approver": "max"}


@pytest.mark.timeout(300)
def test_an_approval_nobody_gives_is_dead_lettered_at_its_deadline(kafka, unique) -> None:
    finished = Finished()
    app = approval.build(name=f"dl{unique}", kafka=kafka.settings, deadline=3,
                         on_end=finished.on_end)
    ensure(app)
    forgotten = app.start({"employee": "cy", "amount": 7})
    with running(app):
        wait_until(lambda: forgotten in parked_runs(app), 120, "the run waits")
        wait_until(lambda: forgotten not in parked_runs(app), 120, "its deadline passed")
    assert forgotten not in finished.runs
    letters = dlq.recent(app, [app.stages["approve_resume"]], 10)
    assert [(letter.task.run_id if letter.task else None) for letter in letters] == [forgotten]
    assert "timed out" in letters[0].record.message


@pytest.mark.timeout(300)
def test_a_waiting_run_survives_a_restart_of_every_worker(kafka, unique) -> None:
    finished = Finished()
    app = approval.build(name=f"rs{unique}", kafka=kafka.settings, on_end=finished.on_end)
    ensure(app)
    run = app.start({"employee": "fay", "amount": 5})
    with running(app):
        wait_until(lambda: run in parked_runs(app), 120, "the run waits for approval")
    app.signal(run, "approval_ref", {"approved": True, "approver": "gus"})  # nobody running
    with running(app):
        wait_until(lambda: run in finished.runs, 120, "the run finished after the restart")
    assert finished.runs[run].output == {"paid": True, "payment": "pay-fay-5",
                                         "approver": "gus"}


@pytest.mark.parametrize(("text", "seconds"), [
    ("2 seconds", 2), ("90s", 90), ("1m30s", 90), ("2d 3h", 2 * 86400 + 3 * 3600),
    ("1 hour 5 mins", 3900)])
def test_durations_read_as_conductor_reads_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "PT5S", "5s 1m", "3 weeks"])
def test_other_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="is not like"):
        parse_duration(text)
