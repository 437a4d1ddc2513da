"""A wrong password ends a command with one line naming the user and mechanism, within
seconds and without retrying (so does a client that does not trust the broker's TLS
certificate); no password (right or wrong) appears in anything printed, in ``--help``, in an
exception or in a settings object's repr."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamtask.config import Secret
from streamtask.errors import AuthenticationFailed
from tests.conftest import SecuredBroker
from tests.secured_helpers import SECURED_REF, SecuredRun

WRONG = "not-the-password-4f2a9c"


@pytest.mark.timeout(300)  # with the secured broker's start when it runs first
def test_wrong_password_is_one_line_and_leaks_nothing(
        secured_broker: SecuredBroker, unique: str, tmp_path: Path) -> None:
    run = SecuredRun(f"w{unique}", tmp_path)
    user = secured_broker.user(f"user-{unique}")
    assert isinstance(user.sasl_password, Secret)
    real = user.sasl_password.reveal()
    env = secured_broker.env(user)
    wrong_file = tmp_path / "wrong-password"
    wrong_file.write_text(WRONG + "\n")
    env["STREAMTASK_SASL_PASSWORD_FILE"] = str(wrong_file)

    printed = []
    for command in (["send", SECURED_REF, "work", '{"n": 1}'],
                    ["topics", "ensure", SECURED_REF],
                    ["dlq", "ls", SECURED_REF],
                    ["worker", SECURED_REF, "--idle-timeout", "1"]):
        started = time.monotonic()
        done = run.cli(env, *command)
        elapsed = time.monotonic() - started
        output = done.stdout + done.stderr
        printed.append(output)
        assert done.returncode == 1, (command, output)
        assert "Traceback" not in output
        # A worker has configured logging, so its failure is one log record (command.failed).
        errors = [line for line in done.stderr.splitlines()
                  if line.startswith("error:") or " ERROR streamtask error: " in line]
        assert len(errors) == 1, (command, output)
        assert "refused the credentials" in errors[0] and f"user-{unique}" in errors[0]
        # librdkafka alone would retry for its 5-minute message timeout; the bound is loose
        # for a loaded machine but far below that.
        assert elapsed < 60, (command, elapsed)
        if command[0] != "worker":  # a worker also logs its start; the others print one line
            assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1, output

    no_ca = {k: v for k, v in secured_broker.env(user).items() if k != "STREAMTASK_SSL_CA"}
    done = run.cli(no_ca, "send", SECURED_REF, "work", '{"n": 1}')
    printed.append(done.stdout + done.stderr)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert "the TLS handshake" in line and "certificate verify failed" in line

    env_with_password = {**env, "STREAMTASK_SASL_PASSWORD": real}
    del env_with_password["STREAMTASK_SASL_PASSWORD_FILE"]
    for command in (["--help"], ["worker", "--help"], ["send", "--help"],
                    ["topics", "ensure", "--help"]):
        done = run.cli(env_with_password, *command)
        assert done.returncode == 0
        printed.append(done.stdout + done.stderr)

    app = run.app(user.replace(sasl_password=WRONG))
    with pytest.raises(AuthenticationFailed) as refused:
        app.send("work", {"n": 1})
    printed += [str(refused.value), repr(refused.value), repr(app.kafka), str(app.kafka),
                repr(user)]
    everything = "\n".join(printed)
    assert WRONG not in everything
    assert real not in everything
