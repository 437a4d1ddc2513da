"""A real Prometheus scraping a real worker whose handler hangs fires the shipped
``StreamtaskStageStuck`` alert, and resolves it once the worker drains.

The rules are deploy/prometheus/alerts.yml with their windows and ``for`` durations divided
by 20 (5 min -> 15 s), so the test takes under a minute; the expressions are the shipped ones.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streamtask import WorkerSettings
from streamtask.dev.broker import free_port
from streamtask.ops.metrics import observed_worker
from tests.apps.observed_app import build_stuck
from tests.helpers import wait_until

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")
SCALE = 20


def compressed(rules: str) -> str:
    """The rules with every duration divided by ``SCALE`` (``[5m]`` -> ``[15s]``)."""
    def shorter(match: re.Match[str]) -> str:
        seconds = int(match.group(2)) * (60 if match.group(3) == "m" else 1)
        return f"{match.group(1)}{max(1, seconds // SCALE)}s"
    return re.sub(r"(\[|for: )(\d+)([ms])", shorter, rules)


def alerts(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as resp:
        found: list[dict[str, Any]] = json.loads(resp.read())["data"]["alerts"]
    return found


def firing(port: int, name: str, app: str) -> bool:
    try:
        return any(a["labels"]["alertname"] == name and a["labels"].get("app") == app
                   and a["state"] == "firing" for a in alerts(port))
    except OSError:
        return False


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (Debian package "
                                               "`prometheus`; `make test` installs it)")
@pytest.mark.timeout(240)
def test_stuck_worker_fires_the_stage_stuck_alert(kafka, unique, tmp_path) -> None:
    observed = build_stuck(kafka.bootstrap, unique, behind=3)
    app = observed.app
    worker, server = observed_worker(app, None, WorkerSettings(concurrency=1), port=0,
                                     addr="127.0.0.1", interval_ms=500)
    (tmp_path / "alerts.yml").write_text(compressed(RULES.read_text()))
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        f"  - {{job_name: streamtask, static_configs: "
        f"[{{targets: ['127.0.0.1:{server.port}']}}]}}\n")
    web = free_port()
    thread = threading.Thread(target=worker.run, daemon=True)
    with (tmp_path / "prometheus.log").open("wb") as log:
        prometheus = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{web}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        thread.start()
        assert observed.hanging.wait(60)

        def diagnose() -> str:
            return (tmp_path / "prometheus.log").read_text()[-3000:]

        wait_until(lambda: firing(web, "StreamtaskStageStuck", app.name), 120,
                   "StreamtaskStageStuck fires", diagnose, interval=1)
        assert not firing(web, "StreamtaskDeadLettersGrowing", app.name)

        observed.gate.set()
        wait_until(lambda: not firing(web, "StreamtaskStageStuck", app.name), 120,
                   "the alert resolves once the worker drained", diagnose, interval=1)
    finally:
        observed.gate.set()
        prometheus.terminate()
        prometheus.wait(30)
        worker.stop()
        thread.join(30)
        server.close()
