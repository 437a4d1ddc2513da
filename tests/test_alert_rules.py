"""The shipped Prometheus alerts (deploy/prometheus/alerts.yml) pass their ``promtool test
rules`` unit tests, and every streamtask metric they use is one a worker exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from streamtask import App
from streamtask.events import Event
from streamtask.ops.metrics import WorkerMetrics
from streamtask.retry import RetryPolicy

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`; "
                             "`make test` installs it)")


@needs_promtool
def test_rules_are_valid() -> None:
    done = subprocess.run([str(PROMTOOL), "check", "rules", "alerts.yml"], cwd=RULES,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    done = subprocess.run([str(PROMTOOL), "test", "rules", "alerts_test.yml"], cwd=RULES,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_use_only_metrics_a_worker_exports() -> None:
    app = App("photos")
    app.stage("resize", retry=RetryPolicy(max_attempts=2, levels=(5.0,)))(lambda task: None)
    metrics = WorkerMetrics(app.name, app.stages.values(), worker="w", version="1")
    metrics(Event.TASK_SUCCEEDED, {"stage": "resize", "seconds": 0.01})
    metrics(Event.DELIVERY_FAILED, {"topic": "photos.resize"})
    metrics.on_statistics('{"type": "consumer", "name": "c", "topics": {"photos.resize": '
                          '{"partitions": {"0": {"consumer_lag": 3}}}}}')
    exported = generate_latest(metrics.registry()).decode()
    names = set(re.findall(r"^(streamtask_[a-z_]+)", exported, re.MULTILINE))
    used = set(re.findall(r"streamtask_[a-z_]+", (RULES / "alerts.yml").read_text()))
    assert used and used <= names, f"not exported: {used - names}"
    assert 'streamtask_consumer_lag{app="photos",kind="input",partition="0",' \
           'stage="resize",topic="photos.resize"} 3.0' in exported
