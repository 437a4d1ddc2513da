"""Who may do what: the Kafka ACLs each streamtask role needs, as data.

A secured cluster denies everything that no ACL allows (``allow.everyone.if.no.acl.found=
false``), so each deployment needs the right grants. This module derives them from the app's
declaration, so they cannot drift from the topics and groups the code really uses:

- a **producer** (a service calling ``app.send``) writes to the stages' input topics;
- a **worker** reads its stages' inputs and retry levels in its groups, and writes retry
  levels, dead-letter queues, the next stages' inputs, join changelogs and the execution
  trail ``<app>.events`` (exactly-once stages also own transactional ids named after the
  group);
- an **operator** (``topics ensure``, ``dlq``) creates and inspects every topic of the app
  and reads dead letters with groups of its own: prefixed grants on ``<app>.``.

Idempotent producers need no cluster-level grant: since Kafka 3.0, ``Write`` on a topic
implies ``IdempotentWrite`` (KIP-679). ``Read`` and ``Write`` imply ``Describe``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from streamtask.config import KafkaSettings
from streamtask.errors import KafkaError
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import events_topic
from streamtask.model.app import App, Stage
from streamtask.model.pipeline import targets_of

Role = Literal["producer", "worker", "operator"]
ROLES: tuple[Role, ...] = ("producer", "worker", "operator")
Resource = Literal["topic", "group", "transactional-id"]


@dataclass(frozen=True, order=True)
class Permission:
    """One ACL: ``operation`` on a ``resource`` named ``name`` (or every name that starts
    with it, when ``prefixed``)."""

    resource: Resource
    name: str
    operation: str
    prefixed: bool = False

    def command(self, principal: str) -> str:
        """The ``kafka-acls.sh`` line an admin runs to grant it."""
        pattern = " --resource-pattern-type prefixed" if self.prefixed else ""
        return (f"kafka-acls.sh --add --allow-principal {principal} --operation "
                f"{self.operation} --{self.resource} {self.name}{pattern}")


def permissions(app: App, role: Role, stages: Sequence[str] | None = None) -> list[Permission]:
    """Every ACL ``role`` needs for ``app`` (``stages``: only these, for a worker)."""
    chosen = [app.get_stage(name) for name in stages] if stages else list(app.stages.values())
    if role == "producer":
        found = {Permission("topic", stage.topic, "Write") for stage in chosen}
    elif role == "worker":
        found = {p for stage in chosen for p in _worker(app, stage)}
    else:
        prefix = f"{app.name}."
        found = {Permission("topic", prefix, operation, prefixed=True)
                 for operation in ("Create", "Read", "Write", "DescribeConfigs")}
        found |= {Permission("group", prefix, "Read", prefixed=True)}
    return sorted(found)


def _worker(app: App, stage: Stage) -> set[Permission]:
    reads = {stage.topic, *stage.retry_topics}
    writes = {*stage.retry_topics, stage.dlq_topic}
    writes |= {app.get_stage(target).topic for target in targets_of(stage.then)}
    if stage.compensate is not None:
        writes.add(app.get_stage(stage.compensate).topic)
    if stage.join is not None:
        reads.add(stage.changelog_topic)
        writes.add(stage.changelog_topic)
    writes.add(events_topic(app).name)
    found = {Permission("topic", name, "Read") for name in reads}
    found |= {Permission("topic", name, "Write") for name in writes}
    found |= {Permission("group", stage.group, "Read"),
              Permission("group", f"{stage.group}.retry", "Read")}
    if stage.exactly_once:
        found |= {Permission("transactional-id", f"{stage.group}.", operation, prefixed=True)
                  for operation in ("Write", "Describe")}
    return found


_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional-id": ResourceType.TRANSACTIONAL_ID}
_OPERATION = {"Read": AclOperation.READ, "Write": AclOperation.WRITE,
              "Create": AclOperation.CREATE, "Describe": AclOperation.DESCRIBE,
              "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS}


def grant(settings: KafkaSettings, principal: str, wanted: Sequence[Permission],
          timeout: float = 30.0) -> None:
    """Create the ACLs (idempotent); ``settings`` must be an admin's (``Alter`` on the
    cluster, e.g. a super user)."""
    bindings = [AclBinding(_RESOURCE[p.resource], p.name,
                           ResourcePatternType.PREFIXED if p.prefixed else
                           ResourcePatternType.LITERAL,
                           principal, "*", _OPERATION[p.operation], AclPermissionType.ALLOW)
                for p in wanted]
    kafka.wait_for_cluster(settings)
    client = kafka.admin(settings)  # kept alive until the futures resolve
    futures = client.create_acls(bindings, request_timeout=timeout)
    for permission, future in zip(wanted, futures.values(), strict=True):
        try:
            future.result(timeout)
        except kafka.KafkaException as exc:
            raise kafka.mapped(exc, f"granting {permission.operation} on {permission.resource} "
                                    f"{permission.name}") from None


def upsert_user(settings: KafkaSettings, user: str, password: str,
                timeout: float = 30.0) -> None:
    """Create or change a SCRAM-SHA-512 user (an admin's ``settings``)."""
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode())
    kafka.wait_for_cluster(settings)
    client = kafka.admin(settings)  # kept alive until the futures resolve
    for future in client.alter_user_scram_credentials([upsert]).values():
        try:
            future.result(timeout)
        except kafka.KafkaException as exc:
            raise KafkaError(f"creating SCRAM user {user!r} failed: "
                             f"{kafka.mapped(exc, 'alter_user_scram_credentials')}") from None


def invisible_topics_hint(app: App, stages: Sequence[str], missing: Sequence[str],
                          settings: KafkaSettings) -> str:
    """On a secured cluster a topic the user may not Describe looks missing: say which ACL
    would show each of ``missing`` to a worker of ``stages`` (Read and Write imply
    Describe)."""
    user = f"User:{settings.sasl_username}" if settings.sasl_username else "this principal"
    wanted = [p for p in permissions(app, "worker", stages) if p.name in missing]
    commands = "; ".join(p.command(user) for p in wanted)
    return f" If they exist, {user} may not see them; ask the cluster admin for: {commands}"
