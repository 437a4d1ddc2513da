"""Wrong arguments and unreachable brokers end CLI commands with one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def streamtask(*args: str, timeout: float = 60,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamtask", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert any(needle in line for line in lines), done.stderr


def test_help_lists_the_commands() -> None:
    done = streamtask("--help")
    assert done.returncode == 0
    for command in ("kafka", "worker", "send", "topics"):
        assert command in done.stdout


def test_bad_app_reference() -> None:
    assert_one_line_error(streamtask("worker", "no_colon_here"), "module:attribute")
    assert_one_line_error(streamtask("worker", "no_such_module_xyz:app"), "cannot import")
    assert_one_line_error(streamtask("worker", "tests.apps.recorder:record"),
                          "not a streamtask.App")


def test_unknown_option_and_bad_value() -> None:
    done = streamtask("worker", "tests.apps.recorder:app", "--concurrency", "0")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = streamtask("worker", "tests.apps.recorder:app", "--no-such-option")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_send_rejects_bad_json_and_unknown_stage() -> None:
    assert_one_line_error(streamtask("send", "tests.apps.recorder:app", "work", "{not json"),
                          "not valid JSON")
    assert_one_line_error(streamtask("send", "tests.apps.recorder:app", "nope", "{}"),
                          "has no stage 'nope'")


@pytest.mark.timeout(60)
def test_unreachable_broker_gives_a_clear_bounded_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    env_args = ("--bootstrap", dead)
    done = streamtask("send", "tests.apps.recorder:app", "work", '{"n": 1}', *env_args)
    assert_one_line_error(done, f"no Kafka broker answered at {dead}")
    done = streamtask("worker", "tests.apps.recorder:app", *env_args)
    assert_one_line_error(done, "streamtask kafka up")


def test_kafka_status_of_an_unused_data_dir(tmp_path: Path) -> None:
    done = streamtask("kafka", "status", "--data-dir", str(tmp_path))
    assert done.returncode == 3
    assert "stopped" in done.stdout


def test_kafka_up_on_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = streamtask("kafka", "up", "--port", str(port), "--data-dir", str(tmp_path))
    assert_one_line_error(done, f"port {port} on 127.0.0.1 is already taken")


def test_an_unexpected_crash_is_one_line_and_its_traceback_is_in_the_debug_log() -> None:
    done = streamtask("worker", "tests.apps.crashing:app")
    assert_one_line_error(done, "RuntimeError: an unexpected failure inside streamtask")
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1, done.stderr
    debug = streamtask("worker", "tests.apps.crashing:app", "--log-level", "DEBUG",
                       "--log-format", "json")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and '"exception"' in debug.stderr


def test_a_worker_error_is_one_json_log_line_under_the_json_log_format() -> None:
    done = streamtask("worker", "tests.apps.crashing:app", "--log-format", "json")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    record = json.loads(line)
    assert record["event"] == "command.failed" and record["level"] == "ERROR"
    assert "RuntimeError: an unexpected failure inside streamtask" in record["error"]
