"""A join's bad paths: its handler fails (the retry and the dead letter carry the merged task,
not the last branch), a branch arrives after its fork ended (dropped with a log line, even by
a worker that restored the join from its changelog), a branch header that is not UTF-8, and
branch results too large to keep in the changelog (dead-lettered; the worker runs on)."""

from __future__ import annotations

import time

import confluent_kafka

from streamtask import Task
from streamtask.kafka import headers as dl
from streamtask.kafka.topics import ensure
from streamtask.model.pipeline import merged
from streamtask.retry import RetryPolicy
from streamtask.worker.joins import FORK, FROM_STAGE, PendingJoin
from tests.helpers import read_to_end, wait_for_leaders
from tests.inprocess import new_app, run_worker


def _join_app(kafka, unique, branches=("a", "b"), timeout=60.0, fail_until: int = 0):
    app = new_app(kafka.bootstrap, unique)
    seen: list[Task] = []

    @app.join("j", branches=list(branches), partitions=1, timeout=timeout,
              retry=RetryPolicy(max_attempts=2, levels=(0.2,)))
    def j(task: Task) -> None:
        seen.append(task)
        if task.attempt <= fail_until:
            raise ConnectionError(f"attempt {task.attempt} fails")

    for branch in branches:
        app.stage(branch)(merged)
    ensure(app)
    # A worker restores a join from its changelog when assigned; give the new topic a leader.
    wait_for_leaders(kafka.bootstrap, [app.stages["j"].changelog_topic])
    return app, seen


def _send_branches(app, items: list[tuple[str, str, object]],
                   from_stage: dict[str, bytes] | None = None) -> None:
    """Branch results (fork, branch, payload) straight onto the join's input topic."""
    topic = app.stages["j"].topic
    raw = confluent_kafka.Producer({"bootstrap.servers": app.kafka.bootstrap})
    for fork, branch, payload in items:
        task = Task.new("j", payload, run_id="run-" + fork, headers={FORK: fork})
        header = (from_stage or {}).get(branch, branch.encode())
        raw.produce(topic, app.codec.encode(task), fork, headers=[(FROM_STAGE, header)])
    assert raw.flush(10) == 0


def _dead_letters(kafka, app) -> list[dl.DeadLetterRecord]:
    return [dl.DeadLetterRecord.from_message(m.topic(), m.partition(), m.offset(), m.key(),
                                             m.value(), m.headers())
            for m in read_to_end(kafka.bootstrap, app.stages["j"].dlq_topic)]


def test_a_failing_join_retries_and_dead_letters_the_merged_task(kafka, unique) -> None:
    app, seen = _join_app(kafka, unique, fail_until=2)  # both attempts fail
    _send_branches(app, [("F1", "a", {"n": 1}), ("F1", "b", {"n": 2})])
    stats = run_worker(app, ["j"], max_tasks=3, idle_timeout=10)
    assert stats.counts["join.completed"] == 1 and stats.counts["task.retried"] == 1
    assert [t.payload for t in seen] == [{"a": {"n": 1}, "b": {"n": 2}}] * 2
    assert [t.attempt for t in seen] == [1, 2]
    [dead] = _dead_letters(kafka, app)
    assert dead.reason == "exhausted"
    task = app.codec.decode(dead.value or b"")
    assert task.type == "j" and task.payload == {"a": {"n": 1}, "b": {"n": 2}}
    replayed = app.codec.decode(dead.value or b"")
    assert replayed.id == seen[0].id
    assert dl.find(dead.carried_headers, FROM_STAGE) is None  # a replay is no branch
    again = run_worker(app, ["j"], idle_timeout=2.0)  # the changelog holds no waiting fork
    assert again.counts.get("join.timed_out", 0) == 0


def test_a_branch_after_its_fork_ended_is_dropped_even_after_a_restart(kafka, unique) -> None:
    app, seen = _join_app(kafka, unique, timeout=1.0)
    _send_branches(app, [("F1", "a", {"n": 1}), ("F1", "b", {"n": 2}),
                         ("F2", "a", {"n": 3})])  # F2 times out
    first = run_worker(app, ["j"], idle_timeout=3.0)
    assert first.counts["join.completed"] == 1 and first.counts["join.timed_out"] == 1
    assert len(_dead_letters(kafka, app)) == 1
    # Late and duplicate results of both ended forks, seen by a new worker, which only knows
    # the forks ended from the changelog's tombstones.
    _send_branches(app, [("F1", "b", {"n": 2}), ("F1", "a", {"n": 1}),
                         ("F2", "b", {"n": 4})])
    second = run_worker(app, ["j"], idle_timeout=3.0)
    assert second.counts["join.late_branch"] == 3
    assert second.counts.get("join.timed_out", 0) == 0
    assert second.counts.get("join.branch_stored", 0) == 0
    assert len(seen) == 1 and len(_dead_letters(kafka, app)) == 1


def test_bad_branch_header_and_oversize_join_state_are_dead_lettered(kafka, unique) -> None:
    app, seen = _join_app(kafka, unique, branches=("a", "b", "c"), timeout=2.0)
    big = "x" * 400_000
    _send_branches(app, [("F1", "a", {"n": 1})], from_stage={"a": b"\xff\xfe\x80"})
    _send_branches(app, [("F2", "a", {"big": big}), ("F2", "b", {"big": big}),
                         ("F3", "a", {"n": 1}), ("F3", "b", {"n": 2}),
                         ("F3", "c", {"n": 3})])
    stats = run_worker(app, ["j"], idle_timeout=4.0)  # returns: the worker never stopped
    assert stats.counts["join.completed"] == 1 and [t.payload for t in seen] == [
        {"a": {"n": 1}, "b": {"n": 2}, "c": {"n": 3}}]
    reasons = sorted(d.reason for d in _dead_letters(kafka, app))
    # F2: b could not be kept with a (base64 in one changelog record); a times out alone.
    assert reasons == ["join-timeout", "poison:join-state-too-large", "poison:unknown-branch"]


def test_unreadable_changelog_records_are_skipped_not_a_crash_loop(kafka, unique) -> None:
    app, seen = _join_app(kafka, unique, timeout=1.0)
    changelog = app.stages["j"].changelog_topic
    corrupt = PendingJoin(int(time.time() * 1000), {"a": b"\x00not an envelope"}).encode()
    raw = confluent_kafka.Producer({"bootstrap.servers": kafka.bootstrap})
    raw.produce(changelog, corrupt, "F9", partition=0)
    raw.produce(changelog, b"not json at all", "F8", partition=0)
    assert raw.flush(10) == 0
    _send_branches(app, [("F9", "b", {"n": 2}), ("F1", "a", {"n": 1}), ("F1", "b", {"n": 2})])
    stats = run_worker(app, ["j"], idle_timeout=3.0)  # returns: no crash on restore or expiry
    assert stats.counts["join.completed"] == 1 and len(seen) == 1
    assert [d.reason for d in _dead_letters(kafka, app)] == ["join-timeout"]  # F9's b alone
