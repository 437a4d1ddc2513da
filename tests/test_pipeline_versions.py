"""Each task records the pipeline version it was created under; a version-2 worker still
finishes version-1 tasks that were in flight (their payload schema evolved compatibly)."""

from __future__ import annotations

from streamtask import App, KafkaSettings, Task
from streamtask.kafka.topics import ensure
from tests.inprocess import run_stages

V1 = {"type": "record", "name": "shop.Order", "fields": [
    {"name": "order_id", "type": "string"}]}
V2 = {"type": "record", "name": "shop.Order", "fields": [
    {"name": "order_id", "type": "string"},
    {"name": "priority", "type": "int", "default": 0}]}


def _app(bootstrap: str, name: str, version: int, schema: dict, seen: list[Task],
         older: tuple[dict, ...] = ()) -> App:
    app = App(name, kafka=KafkaSettings(bootstrap), version=version)
    for previous in older:  # a new release keeps the schemas its in-flight tasks were written in
        app.registry.register(previous)

    @app.stage("take", payload=schema, partitions=1, then="pack")
    def take(task: Task) -> dict[str, object]:
        return {"order_id": task.payload["order_id"], "seen_by": version}

    @app.stage("pack", partitions=1)
    def pack(task: Task) -> None:
        seen.append(task)

    return app


def test_version_one_tasks_are_finished_by_a_version_two_worker(kafka, unique) -> None:
    seen: list[Task] = []
    old = _app(kafka.bootstrap, f"t{unique}", 1, V1, seen)
    new = _app(kafka.bootstrap, f"t{unique}", 2, V2, seen, older=(V1,))
    ensure(old)
    with old.producer() as producer:
        producer.send("take", {"order_id": "o-1"})
    with new.producer() as producer:
        producer.send("take", {"order_id": "o-2", "priority": 5})
    run_stages(new, {"take": 2, "pack": 2})
    by_order = {t.payload["order_id"]: t for t in seen}
    assert by_order["o-1"].pipeline_version == 1 and by_order["o-1"].payload["seen_by"] == 2
    assert by_order["o-2"].pipeline_version == 2
