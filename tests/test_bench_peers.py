"""``streamtask bench --scenario peers`` runs end to end at tiny sizes.

It checks that the comparison runs, counts only durable work and reports its ratios, never
that anything is fast. Quix Streams is an optional extra (``make bench-peers``), so here its
side is checked when installed and its skip message when not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import confluent_kafka
import pytest
import typer
from typer.testing import CliRunner

from streamtask.cli.bench import bench
from streamtask.dev.bench_peers import QUIX_MISSING, AckedPrefix, quix_version
from streamtask.dev.broker import free_port
from streamtask.errors import DeliveryFailed
from tests.conftest import TestBroker as SessionBroker

ROOT = Path(__file__).resolve().parent.parent
TASKS = 600


def _streamtask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamtask", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def test_peers_reports_every_installed_side_and_its_ratios(kafka: SessionBroker) -> None:
    app = typer.Typer()
    app.command()(bench)
    result = CliRunner().invoke(app, ["--bootstrap", kafka.bootstrap, "--tasks", str(TASKS),
                                      "--pairs", "1", "--scenario", "peers", "--json"])
    assert result.exit_code == 0, result.output
    peers = json.loads(result.stdout)["peers"]
    expected = {"raw", "streamtask"} | ({"quix"} if quix_version() else set())
    assert set(peers["sides"]) == expected
    assert all(side["median_rate"] > 0 and side["median_cpu_us_per_task"] > 0
               for side in peers["sides"].values())
    assert peers["ratios"]["streamtask/raw"] > 0
    assert peers["cpu_ratios"]["streamtask/raw"] > 0
    assert {run["side"] for run in peers["runs"]} == expected
    assert set(peers["switches_per_task"]) == expected
    # Only durable work counts: every input offset committed, every result on the sink.
    assert all(run["committed"] >= TASKS and run["sink_records"] >= TASKS
               for run in peers["runs"])
    assert all(run["extra"]["handled"] >= TASKS for run in peers["runs"])
    if quix_version() is None:
        assert peers["skipped"] == QUIX_MISSING
        assert "streamtask/quix" not in peers["ratios"]
    else:
        assert peers["skipped"] is None
        assert peers["ratios"]["streamtask/quix"] > 0


@pytest.mark.skipif(quix_version() is not None, reason="Quix Streams is installed here")
def test_peers_without_quix_says_so_and_prints_the_table(kafka: SessionBroker) -> None:
    done = _streamtask("bench", "-b", kafka.bootstrap, "--scenario", "peers",
                       "--tasks", "200", "--pairs", "1")
    assert done.returncode == 0, done.stderr
    assert "Quix Streams is not installed" in done.stdout
    assert "make bench-peers" in done.stdout
    assert "raw loop" in done.stdout and "streamtask" in done.stdout
    assert "streamtask/raw" in done.stdout


def test_peers_against_no_broker_is_one_line() -> None:
    done = _streamtask("bench", "-b", f"127.0.0.1:{free_port()}", "--scenario", "peers",
                       "--tasks", "100", "--pairs", "1")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no Kafka broker answered" in lines[0], done.stderr


def test_a_partition_position_is_stored_only_past_acknowledged_outputs() -> None:
    prefix = AckedPrefix("sink")
    first, second, other = prefix.add(0), prefix.add(0), prefix.add(1)
    first.sent(0)
    first.sent(1)
    second.sent(2)
    other.sent(7)
    second.acknowledged(None, None)  # a later output acknowledged before an earlier one
    other.acknowledged(None, None)
    assert prefix.take() == ({1: 8}, 1)
    first.acknowledged(None, None)
    assert prefix.take() == ({}, 0)  # offset 1's output is still pending
    first.acknowledged(None, None)
    assert prefix.take() == ({0: 3}, 3)
    assert prefix.take() == ({}, 0)


def test_a_failed_output_is_never_stored() -> None:
    prefix = AckedPrefix("sink")
    failed, later = prefix.add(0), prefix.add(0)
    failed.sent(0)
    later.sent(1)
    later.acknowledged(None, None)
    failed.acknowledged(confluent_kafka.KafkaError(confluent_kafka.KafkaError._MSG_TIMED_OUT),
                        None)
    with pytest.raises(DeliveryFailed, match="record to sink was not acknowledged"):
        prefix.take()

