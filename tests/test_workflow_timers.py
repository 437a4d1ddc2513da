"""Timers of a run, against the broker: a task's ``startDelay`` holds the run before it, and
a WAIT whose ``duration`` is an expression, or that waits ``until`` a time, goes on once that
time has come (held on retry levels: no partition sleeps). Inputs that resolve to nothing or
to no time dead-letter the run at the WAIT with the reason; definitions that are wrong at
load are refused there (see also the malformed corpus)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamtask import clock
from streamtask.conductor.timers import LEVELS, hop, parse_until
from streamtask.conductor.waits import ends_at
from streamtask.errors import ConfigurationError
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops import deadletters as dlq
from streamtask.ops.check import WARNING, check
from streamtask.retry import DeadLetter
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running


def stamp(task: Any) -> dict[str, Any]:
    return {"at": int(time.time() * 1000), **task.payload}


@pytest.mark.timeout(240)
def test_start_delay_holds_the_run_before_the_task(kafka, unique) -> None:
    finished = Finished()
    app = load_workflow({"name": "delayed", "tasks": [
        {"name": "first", "taskReferenceName": "first"},
        {"name": "second", "taskReferenceName": "second", "startDelay": 3,
         "inputParameters": {"after": "${first.output.at}"}}]},
        {"first": stamp, "second": stamp}, kafka=kafka.settings, name=f"sd{unique}",
        on_end=finished.on_end)
    assert app.get_stage("second_delay").then == "second"
    assert [p for p in check(app) if not p.startswith(WARNING)] == []
    ensure(app)
    run = app.start({})
    with running(app):
        wait_until(lambda: run in finished.runs, 180, "the run ended", lambda: str(finished.runs))
    result = finished.runs[run]
    assert result.status == "COMPLETED"
    second = result.tasks["second"]["output"]
    assert second["at"] - second["after"] >= 3000  # never early: held at least the delay


@pytest.mark.timeout(240)
def test_a_wait_timed_by_its_input_goes_on_when_due_or_dead_letters_with_why(
        kafka, unique) -> None:
    finished = Finished()
    app = load_workflow({"name": "timed", "tasks": [
        {"name": "first", "taskReferenceName": "first"},
        {"name": "pause", "taskReferenceName": "pause", "type": "WAIT",
         "inputParameters": {"duration": "${workflow.input.delay}"}},
        {"name": "then", "taskReferenceName": "then",
         "inputParameters": {"after": "${first.output.at}"}},
        {"name": "until", "taskReferenceName": "until", "type": "WAIT",
         "inputParameters": {"until": "${workflow.input.until}"}}]},
        {"first": stamp, "then": stamp}, kafka=kafka.settings, name=f"tw{unique}",
        on_end=finished.on_end)
    assert [p for p in check(app) if not p.startswith(WARNING)] == []
    ensure(app)
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    good = app.start({"delay": "3 seconds", "until": f"{past} UTC"})
    nothing = app.start({"until": past})
    not_a_time = app.start({"delay": "1s", "until": "next tuesday"})

    def letters() -> dict[str, str]:
        stages = [app.get_stage("pause"), app.get_stage("until")]
        return {letter.task.run_id: letter.record.message
                for letter in dlq.recent(app, stages, 10) if letter.task is not None}

    with running(app):
        wait_until(lambda: good in finished.runs, 180, "the timed run ended",
                   lambda: str(finished.runs))
        wait_until(lambda: {nothing, not_a_time} <= set(letters()), 180,
                   "the bad runs were dead-lettered", lambda: str(letters()))
    result = finished.runs[good]
    assert result.status == "COMPLETED"
    assert result.tasks["pause"]["status"] == "COMPLETED"
    assert result.tasks["pause"]["output"] == {}
    assert result.tasks["pause"]["input"] == {"duration": "3 seconds"}
    then = result.tasks["then"]["output"]
    assert then["at"] - then["after"] >= 3000
    assert result.tasks["until"]["status"] == "COMPLETED"  # a time past: goes on at once
    found = letters()
    assert "WAIT 'pause': {'duration': '${workflow.input.delay}'} resolved to nothing" \
        in found[nothing]
    assert "until 'next tuesday' is not like 'yyyy-MM-dd HH:mm'" in found[not_a_time]
    assert nothing not in finished.runs and not_a_time not in finished.runs


@pytest.mark.parametrize(("text", "iso"), [
    ("2026-12-24 18:30", "2026-12-24T18:30:00+00:00"),
    ("2026-12-24", "2026-12-24T00:00:00+00:00"),
    ("2026-12-24 18:30 UTC", "2026-12-24T18:30:00+00:00"),
    ("2026-12-24 18:30 GMT+2", "2026-12-24T18:30:00+02:00"),
    ("2026-12-24 18:30 -05:00", "2026-12-24T18:30:00-05:00"),
    ("2026-07-01 12:00 Europe/Paris", "2026-07-01T12:00:00+02:00"),
])
def test_until_reads_conductors_formats(text: str, iso: str) -> None:
    assert parse_until(text) == int(datetime.fromisoformat(iso).timestamp() * 1000)


@pytest.mark.parametrize(("text", "needle"), [
    ("tomorrow", "is not like"), ("2026-13-01", "not a real date"),
    ("2026-12-24T18:30", "is not like"), ("2026-12-24 18:30 Mars/Base", "unknown zone"),
])
def test_other_untils_are_refused(text: str, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        parse_until(text)


def test_a_wait_needs_exactly_one_of_until_or_duration_when_it_runs() -> None:
    template = {"until": "${workflow.input.u}", "duration": "${workflow.input.d}"}
    with pytest.raises(DeadLetter, match="resolved to both"):
        ends_at("w", template, {"until": "2026-12-24", "duration": "1s"})
    with pytest.raises(DeadLetter, match="resolved to nothing"):
        ends_at("w", template, {"until": None, "duration": ""})
    with pytest.raises(DeadLetter, match="duration must be text"):
        ends_at("w", template, {"duration": 30})
    now = clock.now_ms()
    assert ends_at("w", template, {"duration": "1m"}) - now in range(60_000, 61_000)


def test_hops_never_overshoot_and_stay_on_exact_levels() -> None:
    assert hop(45 * 86_400) == 86_400
    assert hop(5000) == 3600
    assert hop(2.5) == 1
    assert hop(0.4) == 0.4  # the last, short hop: the 1 s level, due at once when it lands
    remaining, hops = 45 * 86_400 + 3725.5, 0
    while remaining > 0:
        step = hop(remaining)
        assert step in LEVELS or step < LEVELS[0]
        remaining, hops = remaining - step, hops + 1
    assert hops < 60


@pytest.mark.parametrize(("task", "needle"), [
    ({"startDelay": -2}, "startDelay must be a number of seconds >= 0, not -2"),
    ({"startDelay": "soon"}, "startDelay must be a number of seconds >= 0, not 'soon'"),
    ({"type": "WAIT", "inputParameters": {"until": "someday"}}, "until 'someday' is not like"),
    ({"type": "WAIT", "inputParameters": {"until": "2026-12-24", "duration": "1s"}},
     "give one of until or duration, not both"),
])
def test_timers_wrong_at_load_are_refused_there(task: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        load_workflow({"name": "w", "tasks": [{"name": "t", "taskReferenceName": "t", **task}]},
                      {"t": stamp})
