"""``streamtask ui`` on the demo pipeline and from the command line: after the demo ran, the
console shows its five stages and the dead letter of the photo whose scan always fails;
``streamtask ui FILE.json`` serves until stopped and stops cleanly on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from starlette.testclient import TestClient

from streamtask.dev.broker import free_port
from streamtask.dev.demo import CURSED, STAGES, build_app, run_demo
from streamtask.loading import load_app
from streamtask.ui import ConsoleSettings, create_app

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_app_is_reachable_by_reference() -> None:
    app = load_app("streamtask.dev.demo:app")
    assert app.name == "demo" and tuple(app.stages) == STAGES


@pytest.mark.timeout(300)
def test_the_console_shows_the_demo_pipeline_and_its_dead_letter(kafka: Any,
                                                                 unique: str) -> None:
    name = f"demo{unique}"
    result = run_demo(kafka.bootstrap, 30, Console(quiet=True), name=name)
    assert result.done()
    asgi = create_app(build_app(kafka.bootstrap, name, []), ConsoleSettings())
    with TestClient(asgi) as client:
        deadline = time.monotonic() + 120
        while not asgi.state.console.index.ready:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pipeline = client.get("/pipeline").text
        for stage in STAGES:
            assert f'data-stage="{stage}"' in pipeline
        letters = client.get("/letters/scan").text
        link = re.search(r'href="(/letters/scan/\d+/\d+)"', letters)
        assert link, letters
        detail = client.get(link.group(1)).text
        assert CURSED in detail and "content scanner rejects this photo" in detail


@pytest.mark.timeout(200)
def test_the_command_serves_until_interrupted(kafka: Any, tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "streamtask", "ui", "examples/order_fulfillment.json",
               "--port", str(port), "--bootstrap", kafka.bootstrap, "--read-only"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/designer", timeout=5) as r:
                    page = r.read().decode()
                break
            except OSError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the console never answered"
                time.sleep(0.3)
        assert "check passed" in page and "read-only" in page
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert f"console for app order_fulfillment_workflow on http://127.0.0.1:{port}/" \
            in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
