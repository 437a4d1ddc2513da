"""``streamtask dlq replay`` sends dead letters back to their stage: same task id and key,
attempt 1, one more replay counted; it filters, paces, parks what keeps failing, resumes
after an interruption without replaying twice, and changes nothing when dry."""

from __future__ import annotations

import _thread
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import confluent_kafka
import pytest

from streamtask.errors import ConfigurationError
from streamtask.kafka import headers as dl
from streamtask.ops.deadletters import (
    Outcome,
    Replay,
    ReplayOptions,
    TokenBucket,
    parse_since,
    replay_group,
)
from tests.apps.dlq_app import Faulty, build, fill
from tests.test_dlq_cli import dlq, topic_exists, topic_records


def input_ids(faulty: Faulty, bootstrap: str, stage: str = "work") -> Counter[str]:
    """How often each task id was written to the stage's input topic."""
    codec = faulty.app.codec
    return Counter(codec.decode(m.value()).id
                   for m in topic_records(bootstrap, f"{faulty.app.name}.{stage}"))


def summary(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.mark.timeout(120)
def test_replay_after_the_fix_completes_the_same_tasks_at_attempt_one(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": n} for n in range(4)])
    dead_ids = {run.task_id for run in faulty.runs}
    faulty.broken = False
    out = dlq("replay", faulty.ref, "work").stdout
    assert summary(out).startswith("replayed 4, skipped (filter) 0, parked 0, undecodable 0")
    fill(faulty, "work", [], queued=4)
    done = faulty.succeeded()
    assert sorted(run.task_id for run in done) == sorted(dead_ids)
    assert {run.attempt for run in done} == {1}
    records = topic_records(kafka.bootstrap, f"{faulty.app.name}.work")
    replayed = [m for m in records if dl.find(m.headers(), dl.REPLAYS) is not None]
    assert len(replayed) == 4
    for message in replayed:
        task = faulty.app.codec.decode(message.value())
        assert dl.find(message.headers(), dl.REPLAYS) == b"1"
        assert message.key() == task.id.encode() and task.attempt == 1
        assert task.not_before is None


@pytest.mark.timeout(120)
def test_dry_run_sends_and_commits_nothing(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": n} for n in range(3)])
    before = input_ids(faulty, kafka.bootstrap)
    out = dlq("replay", faulty.ref, "work", "--dry-run", "--max-replays", "0").stdout
    for run in faulty.runs:
        assert f"would park  {run.task_id}" in out
    assert "dry run, nothing sent or committed" in summary(out)
    out = dlq("replay", faulty.ref, "work", "--dry-run").stdout
    for run in faulty.runs:
        assert f"would replay  {run.task_id}" in out
    assert "would replay 3, skipped (filter) 0, would park 0" in summary(out)
    assert input_ids(faulty, kafka.bootstrap) == before
    stage = faulty.app.get_stage("work")
    assert not topic_exists(kafka.bootstrap, f"{stage.dlq_topic}.parked")
    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka.bootstrap,
                                         "group.id": replay_group(stage, ReplayOptions())})
    tps = [confluent_kafka.TopicPartition(stage.dlq_topic, p) for p in range(2)]
    committed = consumer.committed(tps, timeout=10)
    consumer.close()
    assert all(tp.offset < 0 for tp in committed)


@pytest.mark.timeout(120)
def test_a_task_that_keeps_failing_is_parked_after_max_replays(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": 0}])
    [task_id] = {run.task_id for run in faulty.runs}
    for _ in range(2):
        out = dlq("replay", faulty.ref, "work", "--max-replays", "2").stdout
        assert summary(out).startswith("replayed 1, skipped (filter) 0, parked 0")
        fill(faulty, "work", [], queued=1)
    out = dlq("replay", faulty.ref, "work", "--max-replays", "2").stdout
    assert summary(out).startswith("replayed 0, skipped (filter) 0, parked 1")
    assert f"park  {task_id}" in out and "already replayed 2 times" in out
    assert input_ids(faulty, kafka.bootstrap) == {task_id: 3}
    [parked] = topic_records(kafka.bootstrap, f"{faulty.app.name}.work.dlq.parked")
    assert faulty.app.codec.decode(parked.value()).id == task_id
    assert dl.find(parked.headers(), dl.REPLAYS) == b"2"
    assert dl.find(parked.headers(), dl.EXCEPTION_FQCN) == b"ValueError"
    assert [run.attempt for run in faulty.runs] == [1, 1, 1]


@pytest.mark.timeout(120)
def test_an_interrupted_replay_resumes_without_replaying_twice(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": n} for n in range(8)])
    out = dlq("replay", faulty.ref, "work", "--limit", "3").stdout
    assert summary(out).startswith("replayed 3, skipped (filter) 0, parked 0, undecodable 0 "
                                   "(stopped at --limit")
    assert sum(input_ids(faulty, kafka.bootstrap).values()) == 8 + 3
    out = dlq("replay", faulty.ref, "work").stdout
    assert summary(out).startswith("replayed 5, skipped (filter) 0")
    out = dlq("replay", faulty.ref, "work").stdout
    assert summary(out).startswith("replayed 0, skipped (filter) 0")
    assert input_ids(faulty, kafka.bootstrap) == {run.task_id: 2 for run in faulty.runs}


@pytest.mark.timeout(120)
def test_a_replay_stopped_by_ctrl_c_resumes_without_replaying_twice(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": n} for n in range(8)])
    stage = faulty.app.get_stage("work")
    ctrl_c = threading.Timer(1.7, _thread.interrupt_main)
    ctrl_c.start()
    with pytest.raises(KeyboardInterrupt):
        Replay(faulty.app, stage, ReplayOptions(rate=2.0)).run()
    first = sum(input_ids(faulty, kafka.bootstrap).values()) - 8
    assert 1 <= first < 8
    rest = Replay(faulty.app, stage, ReplayOptions()).run()
    assert rest.counts[Outcome.REPLAYED] == 8 - first
    assert input_ids(faulty, kafka.bootstrap) == {run.task_id: 2 for run in faulty.runs}


@pytest.mark.timeout(120)
def test_error_type_filter_replays_only_that_error(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": n, "error": "QuotaExceeded" if n % 2 else "KeyError"}
                          for n in range(6)])
    out = dlq("replay", faulty.ref, "work", "--error-type", "QuotaExceeded").stdout
    assert summary(out).startswith("replayed 3, skipped (filter) 3")
    wanted = {run.task_id for run in faulty.runs if run.payload["error"] == "QuotaExceeded"}
    counts = input_ids(faulty, kafka.bootstrap)
    assert {task_id for task_id, n in counts.items() if n == 2} == wanted
    out = dlq("replay", faulty.ref, "work", "--error-type", "Exceeded").stdout
    assert summary(out).startswith("replayed 0, skipped (filter) 6"), "suffixes end at a dot"
    out = dlq("replay", faulty.ref, "work", "--error-type", "KeyError", "--dry-run").stdout
    assert "would replay 3, skipped (filter) 3" in summary(out)


@pytest.mark.timeout(120)
def test_since_filter_replays_only_recent_dead_letters(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": n} for n in range(2)])
    time.sleep(1.0)
    cutoff = datetime.now(UTC).isoformat()
    fill(faulty, "work", [{"n": n} for n in range(2, 5)])
    out = dlq("replay", faulty.ref, "work", "--since", cutoff).stdout
    assert summary(out).startswith("replayed 3, skipped (filter) 2")
    recent = {run.task_id for run in faulty.runs if run.payload["n"] >= 2}
    counts = input_ids(faulty, kafka.bootstrap)
    assert {task_id for task_id, n in counts.items() if n == 2} == recent
    out = dlq("replay", faulty.ref, "work", "--since", "1h", "--dry-run").stdout
    assert "would replay 5, skipped (filter) 0" in summary(out)


@pytest.mark.timeout(120)
def test_rate_caps_records_per_second(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": n} for n in range(6)])
    started = time.monotonic()
    out = dlq("replay", faulty.ref, "work", "--rate", "5").stdout
    took = time.monotonic() - started
    assert summary(out).startswith("replayed 6")
    assert took >= 1.0, f"6 records at 5/s took only {took:.2f}s"


def test_parse_since_reads_relative_and_iso_times() -> None:
    now = 1_800_000_000_000
    assert parse_since("90s", now) == now - 90_000
    assert parse_since("10m", now) == now - 600_000
    assert parse_since("2h", now) == now - 7_200_000
    assert parse_since("1d", now) == now - 86_400_000
    assert parse_since("1.5h", now) == now - 5_400_000
    assert parse_since("2027-01-15T08:00:00Z", now) == 1_800_000_000_000
    assert parse_since("2027-01-15T09:00:00+01:00", now) == 1_800_000_000_000
    for bad in ("yesterday", "10 minutes", "-5m", "2027-13-01"):
        with pytest.raises(ConfigurationError, match="--since"):
            parse_since(bad, now)


def test_token_bucket_spaces_acquisitions_without_spinning() -> None:
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    bucket = TokenBucket(4.0, sleep=sleep, clock=lambda: clock[0])
    for _ in range(5):
        bucket.acquire()
    assert clock[0] == pytest.approx(1.0)
    assert sleeps == pytest.approx([0.25] * 4)
    with pytest.raises(ConfigurationError):
        TokenBucket(0)
