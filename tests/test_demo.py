"""The README's main job: ``streamtask demo`` runs the pipeline end to end and says so."""

from __future__ import annotations

import pytest

from tests.test_cli_errors import streamtask


@pytest.mark.timeout(120)
def test_demo_runs_every_upload_through_every_stage(kafka) -> None:
    done = streamtask("demo", "--uploads", "300", "--bootstrap", kafka.bootstrap, timeout=110)
    assert done.returncode == 0, done.stderr
    rows = [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in done.stdout.splitlines() if line.count("│") == 4]
    assert rows == [["resize", "300", "0"], ["filter", "300", "0"], ["scan", "300", "0"]], \
        done.stdout
    assert "upload -> scanned: p50" in done.stdout
