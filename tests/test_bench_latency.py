"""``streamtask bench --scenario latency`` runs end to end at tiny sizes through the CLI.

It checks that the scenario measures both sides in interleaved pairs at the rates asked for
and reports their percentiles, differences and ratios, never that anything is fast; and that
a wrong ``--rate`` ends in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from streamtask.cli.bench import bench
from tests.conftest import TestBroker as SessionBroker

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("p50_ms", "p99_ms", "p999_ms", "max_ms")


def _streamtask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamtask", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def _bench(*args: str) -> dict[str, object]:
    app = typer.Typer()
    app.command()(bench)
    result = CliRunner().invoke(app, [*args, "--scenario", "latency", "--json"])
    assert result.exit_code == 0, result.output
    latency: dict[str, object] = json.loads(result.stdout)["latency"]
    return latency


def _check_side(figures: dict[str, float], tasks: int) -> None:
    assert 0 < figures["measured"] <= tasks
    values = [figures[key] for key in FIGURES]
    assert values == sorted(values)
    assert figures["achieved_send_rate"] > 0
    assert figures["consumer_cpu_percent"] > 0


def test_default_rates_are_1000_and_a_quarter_of_the_raw_maximum(
        kafka: SessionBroker) -> None:
    latency = _bench("--bootstrap", kafka.bootstrap, "--tasks", "200", "--pairs", "1")
    raw_max = latency["raw_max_rate"]
    assert isinstance(raw_max, float) and raw_max > 0
    rates = latency["rates"]
    assert isinstance(rates, list)
    assert [at["rate"] for at in rates] == [1000.0, round(0.25 * raw_max, 1)]
    for at in rates:
        _check_side(at["streamtask"], at["tasks"])
        _check_side(at["raw"], at["tasks"])
        (pair,) = at["pairs"]
        assert pair["p50_diff_ms"] == at["p50_diff_ms"] == round(
            pair["streamtask"]["p50_ms"] - pair["raw"]["p50_ms"], 2)
        assert pair["p99_ratio"] == at["p99_ratio"] > 0


def test_given_rates_run_interleaved_pairs_and_print_their_comparison(
        kafka: SessionBroker) -> None:
    done = _streamtask("bench", "-b", kafka.bootstrap, "--scenario", "latency",
                       "--rate", "300", "--tasks", "300", "--pairs", "2")
    assert done.returncode == 0, done.stderr
    assert "raw loop (bare record)" in done.stdout
    assert "medians of 2 interleaved pairs" in done.stdout
    assert "calibration" not in done.stdout  # the rate was given
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("at 300/s")]
    assert "streamtask p50 - raw p50 =" in line and "p99 streamtask/raw =" in line
    assert line.count(" ms / ") == 2  # one difference and ratio per pair


def test_a_wrong_rate_is_one_line() -> None:
    for args, needle in ((("--scenario", "latency", "--rate", "0"),
                          "--rate must be a positive number"),
                         (("--scenario", "drain", "--rate", "100"),
                          "--rate applies to the latency scenario only")):
        done = _streamtask("bench", *args)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], done.stderr


def test_help_explains_the_rates() -> None:
    done = _streamtask("bench", "--help")
    assert done.returncode == 0
    assert "--rate" in done.stdout
    assert "quarter of the raw loop's maximum" in done.stdout
