"""``topics ensure`` creates every topic of an app idempotently with the stage's partitions
and a retention longer than each retry delay, and reports drift it cannot fix."""

from __future__ import annotations

from confluent_kafka.admin import ConfigResource, NewTopic

from streamtask import Task
from streamtask.kafka.clients import admin
from streamtask.kafka.topics import ensure
from streamtask.retry import RetryPolicy
from tests.inprocess import new_app


def _app(kafka, unique):
    app = new_app(kafka.bootstrap, unique)

    @app.stage("resize", partitions=3, retry=RetryPolicy(max_attempts=3, levels=(5, 300)))
    def resize(task: Task) -> None:
        return None

    return app


def test_creates_inputs_retry_levels_and_dlq_then_is_idempotent(kafka, unique) -> None:
    app = _app(kafka, unique)
    report = ensure(app)
    base = f"t{unique}.resize"
    assert sorted(report.created) == sorted(
        [base, f"{base}.retry.5s", f"{base}.retry.5m", f"{base}.dlq", f"t{unique}.events"])
    client = admin(app.kafka)
    topics = client.list_topics(timeout=10).topics
    assert all(len(topics[name].partitions) == 3 for name in report.created
               if name.startswith(base))
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"{base}.retry.5m")
    retention = client.describe_configs([resource])[resource].result(10)["retention.ms"]
    assert int(retention.value) >= 7 * 86_400_000 > 300_000
    again = ensure(app)
    assert again.created == [] and again.drift == [] and len(again.unchanged) == 5


def test_reports_short_retention_and_too_few_partitions(kafka, unique) -> None:
    app = _app(kafka, unique)
    base = f"t{unique}.resize"
    client = admin(app.kafka)
    futures = client.create_topics([
        NewTopic(f"{base}.retry.5m", 3, 1, config={"retention.ms": "60000"}),
        NewTopic(f"{base}.dlq", 1, 1)])
    for future in futures.values():
        future.result(10)
    report = ensure(app)
    assert sorted(report.created) == [f"t{unique}.events", base, f"{base}.retry.5s"]
    assert any(line.startswith(f"{base}.retry.5m: retention.ms=60000 is not longer")
               for line in report.drift), report.drift
    assert any(line.startswith(f"{base}.dlq: has 1 partitions") for line in report.drift)
