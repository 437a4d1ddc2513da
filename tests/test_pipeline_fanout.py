"""A handler returning a list fans out: 1 task becomes 1,000, all in the same run."""

from __future__ import annotations

from streamtask import Task
from tests.inprocess import new_app, run_stages, send_all


def test_one_task_fans_out_to_a_thousand(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    chunks: list[Task] = []

    @app.stage("split_csv", partitions=2, then="load_chunk")
    def split_csv(task: Task) -> list[dict[str, int]]:
        return [{"chunk": n} for n in range(task.payload["chunks"])]

    @app.stage("load_chunk", partitions=4, concurrency=16)
    def load_chunk(task: Task) -> None:
        chunks.append(task)

    send_all(app, "split_csv", [{"chunks": 1000}], key="file-1")
    stats = run_stages(app, {"split_csv": 1, "load_chunk": 1000})
    assert stats["split_csv"].counts["task.succeeded"] == 1
    assert sorted(t.payload["chunk"] for t in chunks) == list(range(1000))
    assert len({t.run_id for t in chunks}) == 1
    assert len({t.parent_id for t in chunks}) == 1
    assert {t.key for t in chunks} == {"file-1"}
