"""A worker whose user may not write a retry level or the DLQ stops with one line naming
the topic, the operation and the ACL to ask for, and commits no offset past the task it
could not route: after the admin grants the ACL, the next worker routes that task. And
``topics ensure`` without Create rights says what to ask the admin for."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from streamtask.errors import StreamtaskError
from streamtask.kafka import acls
from streamtask.kafka.topics import ensure
from tests.conftest import SecuredBroker
from tests.secured_helpers import SECURED_REF, SecuredRun, committed, without

# The first secured test also waits for the session's secured broker (keytool, JVM start).
pytestmark = pytest.mark.timeout(300)

TOTAL = 10


@pytest.mark.parametrize(("missing", "failing"), [("retry", 5), ("dlq", 3)])
def test_worker_stops_without_committing_past_a_task_it_cannot_route(
        secured_broker: SecuredBroker, unique: str, tmp_path: Path, missing: str,
        failing: int) -> None:
    run = SecuredRun(f"m{unique}", tmp_path, partitions=1)
    admin = secured_broker.admin
    app = run.app(admin)
    stage = app.get_stage("work")
    topic = stage.dlq_topic if missing == "dlq" else next(iter(stage.retry_topics))
    worker = secured_broker.user(f"worker-{unique}")
    principal = f"User:{worker.sasl_username}"
    acls.grant(admin, principal, without(acls.permissions(app, "worker"), topic, "Write"))
    ensure(app)
    for n in range(TOTAL):  # one partition: task n is at offset n
        app.send("work", {"n": n})
    app.flush(60)

    denied = run.cli(secured_broker.env(worker), "worker", SECURED_REF, "--idle-timeout", "10",
                     timeout=180)
    assert denied.returncode == 1, denied.stdout + denied.stderr
    assert "Traceback" not in denied.stderr
    # A worker has configured logging, so its failure is one log record (command.failed).
    error = [line for line in denied.stderr.splitlines() if " ERROR streamtask error: " in line]
    assert len(error) == 1, denied.stderr
    # A retry level stays visible (the worker reads it), so the write fails at the first
    # retry; a DLQ the worker may not write is not even listed, so it refuses to start.
    if missing == "retry":
        assert f"not authorized to WRITE topic '{topic}' as {principal}" in error[0]
    assert f"--allow-principal {principal} --operation Write --topic {topic}" in error[0]
    [offset] = committed(worker, stage.group, stage.topic, 1)
    assert offset <= failing, f"committed {offset}, past task {failing} that was not routed"

    acls.grant(admin, principal, [acls.Permission("topic", topic, "Write")])
    fixed = run.cli(secured_broker.env(worker), "worker", SECURED_REF, "--idle-timeout", "4",
                    timeout=180)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert committed(worker, stage.group, stage.topic, 1) == [TOTAL]
    ran = Counter(run.executions())
    assert ran[(failing, 2)] >= 1, f"task {failing} went on to its second attempt: {ran}"


def test_topics_ensure_without_create_rights_names_what_to_ask_for(
        secured_broker: SecuredBroker, unique: str, tmp_path: Path) -> None:
    run = SecuredRun(f"c{unique}", tmp_path)
    worker = secured_broker.user(f"worker-{unique}")
    acls.grant(secured_broker.admin, f"User:{worker.sasl_username}",
               acls.permissions(run.app(secured_broker.admin), "worker"))
    done = run.cli(secured_broker.env(worker), "topics", "ensure", SECURED_REF)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert f"not allowed to create topic(s) c{unique}.work" in line
    assert (f"--allow-principal User:worker-{unique} --operation Create --topic c{unique}. "
            "--resource-pattern-type prefixed") in line


def test_a_service_without_write_rights_is_told_which_acl_to_ask_for(
        secured_broker: SecuredBroker, unique: str, tmp_path: Path) -> None:
    """With Write on no topic at all, librdkafka may fail the record (TOPIC_AUTHORIZATION_
    FAILED) or the whole producer (no idempotent producer id: a fatal error, which
    confluent-kafka raises from inside a callback); either way the service gets one of
    streamtask's errors naming the ACL, never a SystemError."""
    run = SecuredRun(f"p{unique}", tmp_path)
    ensure(run.app(secured_broker.admin))
    service = secured_broker.user(f"svc-{unique}")
    for attempt in range(3):  # which of the two failures comes first is a race
        app = run.app(service)
        with pytest.raises(StreamtaskError) as refused:
            app.send("work", {"n": attempt})
            app.flush(60)
        assert (f"--allow-principal User:svc-{unique} --operation Write --topic p{unique}.work"
                in str(refused.value)), repr(refused.value)
