"""``streamtask bench`` runs end to end at tiny sizes and reports both rates and their ratio.

It checks that the benchmark runs and reports, never that anything is fast.
"""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from streamtask.cli.bench import bench
from tests.conftest import TestBroker as SessionBroker


def test_bench_drain_reports_both_rates_and_their_ratio(kafka: SessionBroker) -> None:
    app = typer.Typer()
    app.command()(bench)
    result = CliRunner().invoke(app, ["--bootstrap", kafka.bootstrap, "--tasks", "2000",
                                      "--pairs", "1", "--scenario", "drain", "--json"])
    assert result.exit_code == 0, result.output
    drain = json.loads(result.stdout)["drain"]
    assert drain["streamtask"]["median_rate"] > 0
    assert drain["raw"]["median_rate"] > 0
    assert drain["ratio"] > 0
    assert len(drain["ratios"]) == 1
    assert {run["side"] for run in drain["runs"]} == {"streamtask", "raw"}
    assert all(run["committed"] >= 2000 for run in drain["runs"])
