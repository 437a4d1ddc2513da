"""Running the CLI as one user of the secured broker, and reading what it left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from streamtask import App
from streamtask.kafka import clients as kafka
from streamtask.kafka.acls import Permission
from tests.apps import secured_app
from tests.helpers import REPO_ROOT

SECURED_REF = "tests.apps.secured_app:app"


class SecuredRun:
    """One test's app on the secured broker: its name, log, and the environment of its CLI
    subprocesses (one user's ``STREAMTASK_*`` variables on top)."""

    def __init__(self, name: str, tmp_path: Path, partitions: int = 2) -> None:
        self.name = name
        self.log = tmp_path / "executions.log"
        self.partitions = partitions
        self.base_env = {**os.environ, "SECURED_APP": name, "SECURED_LOG": str(self.log),
                         "SECURED_PARTITIONS": str(partitions), "PYTHONUNBUFFERED": "1",
                         "COLUMNS": "200"}
        for variable in [k for k in self.base_env if k.startswith("STREAMTASK_")]:
            del self.base_env[variable]
        self.tmp_path = tmp_path

    def app(self, settings: kafka.KafkaSettings) -> App:
        return secured_app.build(self.name, settings, self.partitions)

    def cli(self, user_env: dict[str, str], *args: str,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``streamtask ARGS`` as the user whose variables ``user_env`` holds."""
        return subprocess.run([sys.executable, "-m", "streamtask", *args], cwd=REPO_ROOT,
                              env={**self.base_env, **user_env}, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def executions(self) -> list[tuple[int, int]]:
        return secured_app.executions(str(self.log))

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}; log: "
                                     f"{self.executions()}")
            time.sleep(0.1)


def committed(settings: kafka.KafkaSettings, group: str, topic: str,
              partitions: int) -> list[int]:
    """The group's committed offset per partition (-1001 when none), read as ``settings``."""
    reader = kafka.consumer(settings, group)
    try:
        found = reader.committed([kafka.TopicPartition(topic, p) for p in range(partitions)],
                                 timeout=10)
        return [tp.offset for tp in found]
    finally:
        reader.close()


def without(permissions: list[Permission], topic: str, operation: str) -> list[Permission]:
    """The permissions minus ``operation`` on ``topic`` (one ACL an admin forgot)."""
    kept = [p for p in permissions if not (p.name == topic and p.operation == operation)]
    assert len(kept) == len(permissions) - 1, (topic, operation, permissions)
    return kept
