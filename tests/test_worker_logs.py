"""``--log-format json`` writes every log line as one JSON object with the event's fields."""

from __future__ import annotations

import orjson

from tests.test_cli_errors import streamtask


def test_json_logs_carry_events_and_their_fields(kafka, unique) -> None:
    done = streamtask("worker", "tests.apps.recorder:app", "--bootstrap", kafka.bootstrap,
                      "--create-topics", "--idle-timeout", "1", "--log-format", "json",
                      timeout=90, env={"RECORDER_APP": f"t{unique}"})
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stderr.splitlines() if line.strip()]
    events = {line.get("event") for line in lines}
    assert {"worker.started", "partitions.assigned", "worker.stopped",
            "worker.summary"} <= events, events
    started = next(line for line in lines if line.get("event") == "worker.started")
    assert started["stages"] == ["work"] and started["level"] == "INFO"
