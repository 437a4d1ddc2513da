"""Test harness: one real Kafka broker per test session, unique names per test.

The broker comes from ``STREAMTASK_BOOTSTRAP`` if set; else from testcontainers when a Docker
engine answers; else streamtask's own :class:`~streamtask.broker.LocalBroker` on free ports
and a temporary data dir, stopped at the end. Tests that need it are marked ``kafka``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamtask.broker import LocalBroker, free_port
from streamtask.config import KafkaSettings


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
        if "kafka" in getattr(item, "fixturenames", ()) or \
                "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
