"""A declarative switch on a payload field picks the downstream stage."""

from __future__ import annotations

from streamtask import Task
from streamtask.model.pipeline import Send, Switch
from tests.inprocess import new_app, run_stages, send_all


def test_switch_routes_by_field_and_handlers_can_route_themselves(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    seen: dict[str, list[int]] = {"resize": [], "transcode": [], "store": [], "audit": []}

    @app.stage("classify", partitions=2,
               then=Switch("kind", {"photo": "resize", "video": "transcode"}, default="store"))
    def classify(task: Task) -> list[object]:
        out: list[object] = [task.payload]
        if task.payload["n"] % 5 == 0:
            out.append(Send("audit", task.payload))
        return out

    for name in seen:
        def record(task: Task, name: str = name) -> None:
            seen[name].append(task.payload["n"])
        app.stage(name, partitions=1)(record)

    kinds = ["photo", "video", "pdf"]
    send_all(app, "classify", [{"n": n, "kind": kinds[n % 3]} for n in range(30)])
    run_stages(app, {"classify": 30, "resize": 10, "transcode": 10, "store": 10, "audit": 6})
    assert sorted(seen["resize"]) == list(range(0, 30, 3))
    assert sorted(seen["transcode"]) == list(range(1, 30, 3))
    assert sorted(seen["store"]) == list(range(2, 30, 3))
    assert sorted(seen["audit"]) == list(range(0, 30, 5))
