"""Long-running commands stop cleanly on Ctrl-C (SIGINT) and SIGTERM, through the CLI.

Commands that run until stopped (``worker``, ``status --watch``, ``ui``) exit 0 without a
traceback on either signal; a worker's second Ctrl-C exits at once (130) instead of waiting
for its running tasks; a finite command cut short (``send``) exits 130 after Ctrl-C and 143
after SIGTERM. The SIGTERM drain of a worker (what gets committed) has its own tests
(``test_worker_sigterm_drain``, ``test_host_sigterm_drain``, the supervisor's Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streamtask.dev.broker import free_port
from tests.helpers import recorder_run, wait_for_assignment, wait_until

ROOT = Path(__file__).resolve().parent.parent


def start(*args: str, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    with (tmp_path / "out.txt").open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "streamtask", *args], cwd=ROOT,
                                stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def stopped(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    assert "Traceback" not in stderr, stderr
    return process.returncode, stderr


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_status_watch_stops_with_exit_0(kafka: Any, unique: str, tmp_path: Path,
                                        signum: int) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path):
        process = start("status", "tests.apps.recorder:app", "--watch", "--window", "0.5",
                        "--bootstrap", kafka.bootstrap, tmp_path=tmp_path,
                        env={"RECORDER_APP": f"t{unique}"})
        try:
            # Off a terminal rich draws once, at the end: nothing to wait for but time (the
            # signal may come before the first look on a loaded box; it must stop it too).
            time.sleep(8)
            assert process.poll() is None, process.communicate()
            process.send_signal(signum)
            code, stderr = stopped(process)
            assert code == 0, stderr
        finally:
            process.kill()
            process.communicate()


@pytest.mark.timeout(180)
def test_the_console_stops_on_sigterm_with_exit_0(kafka: Any, tmp_path: Path) -> None:
    port = free_port()
    process = start("ui", "examples/order_fulfillment.json", "--port", str(port),
                    "--bootstrap", kafka.bootstrap, "--read-only", tmp_path=tmp_path)
    try:
        def answers() -> bool:
            assert process.poll() is None, process.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/designer", timeout=5):
                    return True
            except OSError:
                return False

        wait_until(answers, 120, "the console answered", lambda: "")
        process.send_signal(signal.SIGTERM)
        code, stderr = stopped(process, timeout=30)
        assert code == 0, stderr
    finally:
        process.kill()
        process.communicate()


@pytest.mark.timeout(180)
def test_ctrl_c_drains_a_worker_and_a_second_ctrl_c_exits_at_once(
        kafka: Any, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=60) as run:
        run.send(8)
        worker = run.start_worker("--concurrency", "4", "--drain-timeout", "120")
        wait_for_assignment(worker, run.stage.topic)
        time.sleep(2)  # its tasks started: each takes a minute, the drain would wait for them
        worker.signal(signal.SIGINT)
        time.sleep(1)
        assert worker.running(), worker.describe()  # the first Ctrl-C drains: tasks run on
        began = time.monotonic()
        worker.signal(signal.SIGINT)
        assert worker.wait(timeout=30) == 130, worker.describe()
        assert time.monotonic() - began < 30  # not the minute its tasks still needed
        assert "Traceback" not in worker.output(), worker.describe()


@pytest.mark.timeout(180)
def test_ctrl_c_stops_an_idle_worker_with_exit_0(kafka: Any, unique: str,
                                                 tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path) as run:
        run.send(20)
        worker = run.start_worker("--stage", "work")
        run.wait_until_all_ran(20, timeout=60, watch=[worker])
        worker.signal(signal.SIGINT)
        assert worker.wait(timeout=60) == 0, worker.describe()
        assert "Traceback" not in worker.output(), worker.describe()
        assert "worker.summary" in worker.output(), worker.describe()


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_a_finite_command_cut_short_exits_130_or_143(kafka: Any, unique: str, tmp_path: Path,
                                                     signum: int, code: int) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path):
        process = start("send", "tests.apps.recorder:app", "work", '{"n": 1}', "--count",
                        "1000000", "--bootstrap", kafka.bootstrap, tmp_path=tmp_path,
                        env={"RECORDER_APP": f"t{unique}"})
        try:
            time.sleep(5)  # connected and sending: a million copies take far longer
            assert process.poll() is None, process.communicate()
            process.send_signal(signum)
            returned, stderr = stopped(process)
            assert returned == code, stderr
            assert not stderr.strip(), stderr
        finally:
            process.kill()
            process.communicate()
