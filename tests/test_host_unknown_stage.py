"""``streamtask worker --stage`` with a name the app does not declare ends with one line
naming the app's stages and a non-zero exit, also under ``--processes`` (where each child
would otherwise fail and be restarted in a loop)."""

from __future__ import annotations

import pytest

from tests.test_cli_errors import assert_one_line_error, streamtask


@pytest.mark.parametrize("extra", [(), ("--processes", "2")])
def test_unknown_stage_is_one_line_error(extra: tuple[str, ...]) -> None:
    done = streamtask("worker", "tests.apps.stages_app:app", "--stage", "step1",
                      "--stage", "nope", "--bootstrap", "127.0.0.1:9", *extra, timeout=60)
    assert_one_line_error(done, "has no stage 'nope' (stages: fast, slow, step1, step2, step3)")
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1, done.stderr
