"""``streamtask dlq ls`` and ``show`` report what each stage's DLQ holds: counts, reasons,
error types and task ids (``-`` / "undecodable" for poison); bad arguments fail in one line."""

from __future__ import annotations

import time
from typing import Any

import confluent_kafka
import orjson
import pytest
from typer.testing import CliRunner, Result

from streamtask.cli import app as cli
from streamtask.kafka.topics import ensure
from tests.apps.dlq_app import build, fill
from tests.test_cli_errors import assert_one_line_error, streamtask


def dlq(*args: str) -> Result:
    """Run ``streamtask dlq ARGS`` in this process (the test's app is importable here)."""
    result = CliRunner().invoke(cli, ["dlq", *args], env={"COLUMNS": "250"},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the rich tables in ``text``."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in text.splitlines() if line.strip().startswith("│")]


def topic_records(bootstrap: str, topic: str, timeout: float = 20) -> list[Any]:
    """Every record the topic holds now (read by assignment, no group, nothing committed)."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(timeout=10).topics[topic].partitions
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, p), timeout=10)
            if low < high:
                ends[p] = (low, high)
        consumer.assign([confluent_kafka.TopicPartition(topic, p, low)
                         for p, (low, _) in ends.items()])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < sum(high - low for low, high in ends.values()):
            assert time.monotonic() < deadline, f"read {len(records)} records of {topic}"
            records += [m for m in consumer.consume(100, 0.5) if m.error() is None]
        return records
    finally:
        consumer.close()


def topic_exists(bootstrap: str, topic: str) -> bool:
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
    return topic in admin.list_topics(timeout=10).topics


@pytest.mark.timeout(120)
def test_ls_counts_each_stage_and_lists_recent_dead_letters(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique, stages=("resize", "upload"))
    fill(faulty, "resize", [{"n": n} for n in range(3)])
    fill(faulty, "upload", [{"n": n, "error": "KeyError"} for n in range(2)])
    rows = table_rows(dlq("ls", faulty.ref).stdout)
    name = faulty.app.name
    assert [f"{name}.resize.dlq", "3", "-"] == rows[0][1:]
    assert [f"{name}.upload.dlq", "2", "-"] == rows[1][1:]
    recent = {row[1]: row for row in rows[2:]}
    assert set(recent) == {run.task_id for run in faulty.runs}
    for run in faulty.runs:
        stage, _, reason, error_type, message, attempts, failed_at, _ = recent[run.task_id]
        assert (stage, reason, attempts) == (run.stage, "exhausted", "1")
        assert error_type == ("ValueError" if run.stage == "resize" else "KeyError")
        assert f"n={run.payload['n']}" in message
        assert failed_at.startswith(f"{name}.{run.stage}[")


@pytest.mark.timeout(120)
def test_ls_of_one_stage_lists_only_its_last_n(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique, stages=("resize", "upload"))
    fill(faulty, "resize", [{"n": 0}])
    fill(faulty, "upload", [{"n": n} for n in range(5)])
    rows = table_rows(dlq("ls", faulty.ref, "--stage", "upload", "--limit", "2").stdout)
    assert [row[0] for row in rows] == ["upload", "upload", "upload"]
    assert rows[0][2] == "5"
    assert len(rows[1:]) == 2
    assert {row[1] for row in rows[1:]} <= {r.task_id for r in faulty.runs if r.stage == "upload"}


@pytest.mark.timeout(120)
def test_show_json_has_every_record_field_and_the_task(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": 0, "error": "KeyError"}, {"n": 1}])
    lines = dlq("show", faulty.ref, "work", "--json").stdout.splitlines()
    letters = {letter["task_id"]: letter for letter in map(orjson.loads, lines)}
    assert set(letters) == {run.task_id for run in faulty.runs}
    for run in faulty.runs:
        letter = letters[run.task_id]
        assert letter["error_type"] == run.payload.get("error", "ValueError")
        assert letter["reason"] == "exhausted" and letter["stage"] == "work"
        assert letter["attempts"] == 1 and letter["replays"] == 0
        assert letter["origin"]["topic"] == f"{faulty.app.name}.work"
        assert letter["origin"]["group"] == f"{faulty.app.name}.work"
        assert letter["dlq_topic"] == f"{faulty.app.name}.work.dlq"
        assert letter["dead_at"] > 0 and letter["dead_at_iso"].endswith("Z")
        assert "Traceback" in letter["stacktrace"] and letter["worker"]
        assert letter["errors"][0]["attempt"] == 1
        assert letter["decodable"] is True and letter["key"] == run.task_id
        assert letter["task"]["payload"] == run.payload and letter["task"]["attempt"] == 1


@pytest.mark.timeout(120)
def test_show_marks_undecodable_poison_and_previews_its_bytes(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique, partitions=1)
    ensure(faulty.app)
    raw = confluent_kafka.Producer({"bootstrap.servers": kafka.bootstrap})
    raw.produce(f"{faulty.app.name}.work", b"\x00garbage bytes", key=b"g")
    raw.flush(10)
    fill(faulty, "work", [{"n": 0}], queued=1)
    human = dlq("show", faulty.ref, "work").stdout
    assert "undecodable" in human and "\\x00garbage bytes" in human
    assert faulty.runs[0].task_id in human
    poison, decoded = (orjson.loads(line) for line in
                       dlq("show", faulty.ref, "work", "--json").stdout.splitlines())
    assert decoded["task_id"] == faulty.runs[0].task_id
    assert poison["task_id"] is None and poison["task"] is None
    assert poison["decodable"] is False and poison["reason"] == "poison:undecodable"
    assert bytes.fromhex(poison["value"]) == b"\x00garbage bytes" and poison["key"] == "g"
    rows = table_rows(dlq("ls", faulty.ref).stdout)
    assert [row[1] for row in rows[1:]] == ["-", faulty.runs[0].task_id]


@pytest.mark.timeout(120)
def test_show_says_a_value_was_null_or_omitted_for_size(kafka, unique) -> None:
    faulty = build(kafka.bootstrap, unique, partitions=1)
    ensure(faulty.app)
    raw = confluent_kafka.Producer({"bootstrap.servers": kafka.bootstrap,
                                    "message.max.bytes": 1_048_000})
    raw.produce(f"{faulty.app.name}.work", None, key=b"null")
    raw.produce(f"{faulty.app.name}.work", b"\x01" * 1_020_000, key=b"big")
    raw.flush(10)
    fill(faulty, "work", [], queued=2)
    human = dlq("show", faulty.ref, "work").stdout
    assert "value   null" in human
    assert "value   omitted (1020000 bytes, too large for the dead letter)" in human
    letters = {letter["key"]: letter for letter in map(
        orjson.loads, dlq("show", faulty.ref, "work", "--json").stdout.splitlines())}
    null, big = letters["null"], letters["big"]
    assert null["value"] is None and null["value_omitted"] is None
    assert big["value"] is None and big["value_omitted"] == 1_020_000
    assert big["reason"] == "poison:oversize" and "value omitted" in big["problem"]


def test_bad_arguments_end_with_one_line_errors() -> None:
    ref = "tests.apps.recorder:app"
    assert_one_line_error(streamtask("dlq", "ls", ref, "--stage", "nope"),
                          "has no stage 'nope'")
    assert_one_line_error(streamtask("dlq", "show", ref, "nope"), "has no stage 'nope'")
    assert_one_line_error(streamtask("dlq", "replay", ref, "nope"), "has no stage 'nope'")
    assert_one_line_error(streamtask("dlq", "replay", ref, "work", "--since", "yesterday"),
                          "--since 'yesterday' is neither")
    assert_one_line_error(streamtask("dlq", "replay", ref, "work", "--rate", "-5"),
                          "--rate -5.0 must be a positive number")
    assert_one_line_error(streamtask("dlq", "replay", ref, "work", "--limit", "0"),
                          "--limit 0 must be at least 1")
    assert_one_line_error(streamtask("dlq", "show", ref, "work", "--limit", "-1"),
                          "--limit -1 must be at least 1")
