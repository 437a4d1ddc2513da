"""Test harness: one real Kafka broker per test session, unique names per test.

The broker comes from ``STREAMTASK_BOOTSTRAP`` if set; else from testcontainers when a Docker
engine answers; else streamtask's own :class:`~streamtask.dev.broker.LocalBroker` on free ports
and a temporary data dir, stopped at the end. Tests that need it are marked ``kafka``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamtask.config import KafkaSettings, Secret, load_kafka_settings
from streamtask.dev.broker import LocalBroker, free_port, port_is_free
from streamtask.errors import AuthenticationFailed
from streamtask.kafka.clients import wait_for_cluster


@dataclass
class TestBroker:
    """The session's broker; ``local`` is set when this session started it and may restart it."""

    bootstrap: str
    local: LocalBroker | None = None

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap=self.bootstrap)


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TestBroker]:
    bootstrap = os.environ.get("STREAMTASK_BOOTSTRAP")
    if bootstrap:
        yield TestBroker(bootstrap)
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield TestBroker(container.get_bootstrap_server())
        return
    data_dir = Path(tempfile.mkdtemp(prefix="streamtask-test-broker-"))
    broker = LocalBroker(data_dir, port=free_port(), controller_port=free_port())
    broker.up(timeout=120)
    try:
        yield TestBroker(broker.bootstrap, broker)
    finally:
        broker.down()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def kafka(kafka_broker: TestBroker) -> TestBroker:
    """The session broker, after checking it still answers (a test may have restarted it)."""
    if kafka_broker.local is not None and not kafka_broker.local.status().running:
        kafka_broker.local.up(timeout=120)
    return kafka_broker


@pytest.fixture
def unique() -> str:
    """A short unique suffix; tests build their app, topic and group names from it."""
    return uuid.uuid4().hex[:10]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"kafka", "kafka_broker", "secured_broker"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)
    # Files holding a ``long`` test run first (whole files, in their order), so that with
    # two processes (`make test`) none of them starts last while the other process idles.
    long_files = {item.path for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.path not in long_files)


# -- a secured broker (SASL/SCRAM-SHA-512 + ACLs), started only by the tests that need it ----

@dataclass
class SecuredBroker:
    """A broker that authenticates with SCRAM over TLS and denies what no ACL allows.

    ``admin`` are the super user's settings; :meth:`user` creates a SCRAM user and returns
    its settings; :meth:`env` turns settings into the ``STREAMTASK_*`` variables a CLI
    subprocess reads (the password through a file, as a deployment would mount it).
    """

    broker: LocalBroker
    admin: KafkaSettings
    secrets_dir: Path

    def user(self, name: str) -> KafkaSettings:
        """A new SCRAM user, created as an admin would: ``streamtask acls add-user``."""
        password = uuid.uuid4().hex
        secret = self.secrets_dir / f"new-{name}"
        secret.write_text(password + "\n")
        added = subprocess.run(
            [sys.executable, "-m", "streamtask", "acls", "add-user", name,
             "--password-file", str(secret)],
            env={**os.environ, "STREAMTASK_CONFIG": str(self.broker.admin_config)},
            capture_output=True, text=True, timeout=60, check=False)
        assert added.returncode == 0, added.stderr
        settings = self.admin.replace(sasl_username=name, sasl_password=password)
        # A new SCRAM user reaches the broker's credential cache a moment after the
        # controller committed it.
        for _ in range(50):
            try:
                wait_for_cluster(settings)
                return settings
            except AuthenticationFailed:
                time.sleep(0.2)
        raise AssertionError(f"SCRAM user {name} cannot log in")

    def env(self, settings: KafkaSettings) -> dict[str, str]:
        assert settings.sasl_username is not None
        assert isinstance(settings.sasl_password, Secret)
        secret = self.secrets_dir / f"{settings.sasl_username}-{uuid.uuid4().hex[:6]}"
        secret.write_text(settings.sasl_password.reveal() + "\n")
        assert settings.ssl_ca is not None
        return {"STREAMTASK_BOOTSTRAP": settings.bootstrap,
                "STREAMTASK_SECURITY_PROTOCOL": "SASL_SSL",
                "STREAMTASK_SASL_MECHANISM": "SCRAM-SHA-512",
                "STREAMTASK_SASL_USERNAME": settings.sasl_username,
                "STREAMTASK_SASL_PASSWORD_FILE": str(secret),
                "STREAMTASK_SSL_CA": settings.ssl_ca}


@pytest.fixture(scope="session")
def secured_broker() -> Iterator[SecuredBroker]:
    """Started through ``streamtask kafka up --security sasl-ssl`` (SCRAM over TLS, so the
    CLI path is the one tested), on free ports; the admin's settings come from the
    admin.toml it writes."""
    data_dir = Path(tempfile.mkdtemp(prefix="streamtask-test-secured-"))
    port = next(p for p in iter(free_port, None) if port_is_free(p + 1))
    up = subprocess.run(
        [sys.executable, "-m", "streamtask", "kafka", "up", "--security", "sasl-ssl",
         "--port", str(port), "--data-dir", str(data_dir / "broker"), "--timeout", "120"],
        capture_output=True, text=True, timeout=200, check=False)
    assert up.returncode == 0, up.stderr
    broker = LocalBroker(data_dir / "broker")
    assert f"export STREAMTASK_CONFIG={broker.admin_config}" in up.stderr
    admin = load_kafka_settings({}, config_file=broker.admin_config)
    secrets_dir = data_dir / "secrets"
    secrets_dir.mkdir()
    try:
        yield SecuredBroker(broker, admin, secrets_dir)
    finally:
        broker.down()
        shutil.rmtree(data_dir, ignore_errors=True)
