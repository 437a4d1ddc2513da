"""On a broker with SASL/SCRAM and ACLs, each role works with exactly the ACLs streamtask
derives for it: the operator creates topics and replays dead letters, a service and the
CLI send, the worker runs, retries and dead-letters. Every CLI call takes its credentials
from ``STREAMTASK_*`` variables (the password from a file) and the app module builds its App
without settings, so the library follows the same configuration as the CLI."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from streamtask.kafka import acls
from tests.conftest import SecuredBroker
from tests.secured_helpers import SECURED_REF, SecuredRun, committed

# The first secured test also waits for the session's secured broker (keytool, JVM start).
pytestmark = pytest.mark.timeout(300)

TOTAL = 20


def test_every_role_works_with_the_acls_streamtask_derives(
        secured_broker: SecuredBroker, unique: str, tmp_path: Path) -> None:
    run = SecuredRun(f"s{unique}", tmp_path)
    users = {role: secured_broker.user(f"{role}-{unique}") for role in acls.ROLES}
    shape = run.app(secured_broker.admin)
    admin_env = {"STREAMTASK_CONFIG": str(secured_broker.broker.admin_config)}
    for role, settings in users.items():  # the admin grants with the CLI
        granted = run.cli(admin_env, "acls", "grant", SECURED_REF, "--role", role,
                          "--user", str(settings.sasl_username))
        assert granted.returncode == 0, granted.stderr
    env = {role: secured_broker.env(settings) for role, settings in users.items()}

    ensured = run.cli(env["operator"], "topics", "ensure", SECURED_REF)
    assert ensured.returncode == 0, ensured.stderr
    assert f"created   s{unique}.work.dlq" in ensured.stdout

    service = run.app(users["producer"])
    for n in range(TOTAL - 1):
        service.send("work", {"n": n})
    service.flush(60)
    sent = run.cli(env["producer"], "send", SECURED_REF, "work", f'{{"n": {TOTAL - 1}}}')
    assert sent.returncode == 0, sent.stderr

    worked = run.cli(env["worker"], "worker", SECURED_REF, "--idle-timeout", "4", timeout=180)
    assert worked.returncode == 0, worked.stdout + worked.stderr
    ran = Counter(run.executions())
    assert {n for n, _ in ran} == set(range(TOTAL)), ran
    assert ran[(5, 2)] == ran[(15, 2)] == 1, "tasks failing once ran again from the retry level"
    assert ran[(3, 2)] == ran[(13, 2)] == 1, "tasks failing for good used both attempts"
    offsets = committed(users["worker"], shape.get_stage("work").group, f"s{unique}.work",
                        run.partitions)
    assert sum(offsets) == TOTAL, offsets

    listed = run.cli(env["operator"], "dlq", "ls", SECURED_REF)
    assert listed.returncode == 0, listed.stderr
    [count_row] = [line for line in listed.stdout.splitlines() if f"s{unique}.work.dlq" in line
                   and "@" not in line]
    assert count_row.split("│")[3].strip() == "2", listed.stdout
    assert "task 13 always fails" in listed.stdout
    replayed = run.cli(env["operator"], "dlq", "replay", SECURED_REF, "work")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip().splitlines()[-1].startswith("replayed 2,"), replayed.stdout

    again = run.cli(env["worker"], "worker", SECURED_REF, "--idle-timeout", "4", timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    ran = Counter(run.executions())
    assert ran[(3, 1)] == ran[(13, 1)] == 2, f"replayed dead letters ran again: {ran}"
