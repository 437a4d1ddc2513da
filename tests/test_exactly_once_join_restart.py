"""Exactly-once join: a new worker restores the join's state from a non-empty changelog that
was written in transactions (its last offset is a commit marker, which no consumer returns),
then completes the forks that were waiting, each once."""

from __future__ import annotations

from collections import Counter

import pytest

from streamtask import Task
from streamtask.model.pipeline import merged
from tests.inprocess import new_app, run_stages, run_worker, send_all
from tests.topic_reader import read_to_end

ORDERS = 5


@pytest.mark.timeout(180)
def test_exactly_once_join_restarts_from_its_changelog(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)

    @app.stage("pack", partitions=1, then=("send_email", "send_sms"))
    def pack(task: Task) -> dict[str, object]:
        return {"order": task.payload["order"]}

    @app.stage("send_email", partitions=1, then="notified")
    def send_email(task: Task) -> dict[str, object]:
        return {"email": f"sent #{task.payload['order']}"}

    @app.stage("send_sms", partitions=1, then="notified")
    def send_sms(task: Task) -> dict[str, object]:
        return {"sms": f"sent #{task.payload['order']}"}

    app.join("notified", branches=["send_email", "send_sms"], partitions=1, then="archive",
             exactly_once=True)(merged)

    @app.stage("archive", partitions=1)
    def archive(task: Task) -> None:
        """Not run: its topic is the join's output, read directly."""

    send_all(app, "pack", [{"order": n} for n in range(ORDERS)])
    run_stages(app, {"pack": ORDERS, "send_email": ORDERS})
    first = run_worker(app, ["notified"], max_tasks=ORDERS)  # email halves only: all wait
    assert first.counts.get("join.completed", 0) == 0
    run_stages(app, {"send_sms": ORDERS})
    second = run_worker(app, ["notified"], max_tasks=ORDERS)  # restores the changelog
    assert second.counts["join.completed"] == ORDERS

    archived = Counter(str(app.codec.decode(m.value()).payload["send_email"]["email"])
                       for m in read_to_end(kafka.bootstrap, app.stages["archive"].topic))
    assert archived == Counter({f"sent #{n}": 1 for n in range(ORDERS)})
