"""EVENT with ``sink: "kafka:<topic>"`` publishes the task's resolved input (plus the run's
id, type, version and correlation id) to that topic and records it as the task's output,
with ``event_produced``; a sink given by an expression that resolves to another kind of
sink dead-letters the run with the reason. Against the broker, through load_workflow."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streamtask.errors import ConfigurationError
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops import deadletters as dlq
from streamtask.ops.check import WARNING, check
from tests.helpers import wait_until
from tests.topic_reader import read_to_end
from tests.workflow_helpers import Finished, running


@pytest.mark.timeout(240)
def test_an_event_is_published_to_its_kafka_topic(kafka, unique) -> None:
    topic = f"orders-{unique}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    finished = Finished()
    app = load_workflow({"name": "notify", "version": 3, "tasks": [
        {"name": "announce", "taskReferenceName": "announce", "type": "EVENT",
         "sink": "${workflow.input.sink}",
         "inputParameters": {"order": "${workflow.input.order}", "note": "placed"}},
        {"name": "after", "taskReferenceName": "after",
         "inputParameters": {"sent": "${announce.output.event_produced}"}}]},
        {"after": lambda task: task.payload}, kafka=kafka.settings, name=f"ev{unique}",
        on_end=finished.on_end)
    assert [p for p in check(app) if not p.startswith(WARNING)] == []
    ensure(app)
    run = app.start({"order": {"id": "o-1"}, "sink": f"kafka:{topic}"}, correlation_id="c-9")
    wrong = app.start({"order": {"id": "o-2"}, "sink": "sqs:orders"})

    def letters() -> dict[str, str]:
        return {letter.task.run_id: letter.record.message
                for letter in dlq.recent(app, [app.get_stage("announce")], 10)
                if letter.task is not None}

    with running(app):
        wait_until(lambda: run in finished.runs, 180, "the run ended", lambda: str(finished.runs))
        wait_until(lambda: wrong in letters(), 180, "the sqs sink was dead-lettered")
    published = {"order": {"id": "o-1"}, "note": "placed", "workflowInstanceId": run,
                 "workflowType": "notify", "workflowVersion": 3, "correlationId": "c-9"}
    records = read_to_end(kafka.bootstrap, topic)
    assert [(r.key().decode(), orjson.loads(r.value())) for r in records] == [(run, published)]
    result = finished.runs[run]
    assert result.status == "COMPLETED"
    assert result.tasks["announce"]["output"] == {**published,
                                                  "event_produced": f"kafka:{topic}"}
    assert result.tasks["after"]["output"] == {"sent": f"kafka:{topic}"}
    assert "sink 'sqs:orders' is not supported: give kafka:<topic>" in letters()[wrong]


@pytest.mark.parametrize(("sink", "needle"), [
    ("conductor", "sink 'conductor' is not supported: give kafka:<topic>"),
    ("sqs:queue", "sink 'sqs:queue' is not supported"),
    ("kafka:", "'' is not a Kafka topic name"),
    ("kafka:bad topic", "'bad topic' is not a Kafka topic name"),
    (None, "sink None is not supported"),
])
def test_other_sinks_are_refused_at_load(sink: Any, needle: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be loaded") as caught:
        load_workflow({"name": "w", "tasks": [{"name": "e", "taskReferenceName": "e",
                                               "type": "EVENT", "sink": sink}]}, {})
    assert needle in str(caught.value)
