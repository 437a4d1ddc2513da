"""A worker stopped (SIGTERM) while a handler hangs waits one ``--drain-timeout`` for it,
not two: its own drain and the revoke that closing its consumer calls share one deadline.

The numbers discriminate: the process must exit within the drain timeout plus a slack
smaller than the drain timeout, so a shutdown that drained twice (2 x DRAIN) fails.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.host_helpers import StagesRun

DRAIN = 15.0
SLACK = 11.0
"""For the final commit, leaving the group and the interpreter's exit; below DRAIN."""


@pytest.mark.timeout(180)
def test_a_hung_handler_delays_shutdown_by_one_drain_timeout(kafka, unique: str,
                                                             tmp_path: Path) -> None:
    assert SLACK < DRAIN
    with StagesRun(kafka.bootstrap, f"t{unique}", tmp_path) as run:
        run.send("slow", 1)  # its gate stays closed: the handler hangs past the drain
        worker = run.start_worker("--stage", "slow", "--drain-timeout", str(DRAIN))
        run.wait_for("slow.started", 1, watch=[worker])
        began = time.monotonic()
        worker.signal(signal.SIGTERM)
        code = worker.wait(timeout=2 * DRAIN + 60)
        elapsed = time.monotonic() - began
        print(f"stopped {elapsed:.1f}s after SIGTERM (--drain-timeout {DRAIN:g})")
        assert code == 0, worker.describe()
        assert DRAIN - 1 <= elapsed < DRAIN + SLACK, (
            f"stopped in {elapsed:.1f}s with --drain-timeout {DRAIN:g}\n{worker.describe()}")
        assert run.count("slow") == 0, run.summary()
