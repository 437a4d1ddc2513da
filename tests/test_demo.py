"""The README's main job: ``streamtask demo`` runs the pipeline end to end and says so."""

from __future__ import annotations

import pytest

from tests.test_cli_errors import streamtask


@pytest.mark.timeout(120)
def test_demo_runs_every_upload_through_every_stage(kafka) -> None:
    done = streamtask("demo", "--uploads", "300", "--bootstrap", kafka.bootstrap, timeout=110)
    assert done.returncode == 0, done.stderr
    rows = {cells[0]: cells[1:] for cells in (
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in done.stdout.splitlines() if line.count("│") == 5)}
    assert rows["resize"] == ["300", "0", "0"], done.stdout
    assert rows["filter"] == ["300", "30", "0"], done.stdout  # photo ids ending in 7 retry
    assert rows["scan"] == ["299", "2", "1"], done.stdout  # photo-13 always fails
    assert rows["notify_followers"][0] == rows["update_feeds"][0] == "299", done.stdout
    assert "upload -> feed updated: p50" in done.stdout
