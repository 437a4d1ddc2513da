"""A local multi-broker KRaft cluster: several :class:`~streamtask.dev.broker.LocalBroker` nodes,
each its own process and data dir, for testing failover the way production runs.

Every node is broker and controller at once (KRaft combined mode) in a static quorum, so
three nodes survive the loss of any one. Internal topics get three replicas with
``min.insync.replicas=2`` (and ``topics ensure`` gives the app's topics the same), so an
acknowledged record (``acks=all``) is on at least two brokers. Node ``i`` listens on
``port + 2(i-1)`` for clients and the port after it for the controller; the cluster's data
dir holds ``cluster.json`` (size, ports, cluster id) and one ``node-<i>`` dir per node.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamtask.config import KafkaSettings
from streamtask.dev import tls
from streamtask.dev.broker import DEFAULT_PORT, BrokerSecurity, BrokerStatus, LocalBroker
from streamtask.errors import BrokerSetupError, ConfigurationError

STATE = "cluster.json"


@dataclass(frozen=True)
class ClusterStatus:
    """Each node's status, and the bootstrap list of the whole cluster."""

    bootstrap: str
    nodes: list[BrokerStatus]

    @property
    def running(self) -> int:
        return sum(node.running for node in self.nodes)


class LocalCluster:
    """``brokers`` local nodes sharing one cluster id; see the module docstring."""

    def __init__(self, data_dir: Path, brokers: int | None = None, port: int | None = None,
                 security: BrokerSecurity | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        saved = self._read_state()
        self.size = brokers or int(saved.get("brokers", 3))
        if self.size < 1:
            raise ConfigurationError("a cluster needs at least one broker")
        self.port = port or int(saved.get("port", DEFAULT_PORT))
        self.cluster_id = str(saved.get("cluster_id") or base64.urlsafe_b64encode(
            uuid.uuid4().bytes).rstrip(b"=").decode())
        voters = ",".join(f"{i}@127.0.0.1:{self._ports(i)[1]}" for i in self.node_ids)
        self.nodes = {i: LocalBroker(self.data_dir / f"node-{i}", *self._ports(i),
                                     security=security, node_id=i, voters=voters,
                                     cluster_id=self.cluster_id,
                                     replication=min(3, self.size))
                      for i in self.node_ids}

    @staticmethod
    def exists(data_dir: Path) -> bool:
        """True when ``data_dir`` holds a cluster (rather than a single broker)."""
        return (Path(data_dir).expanduser() / STATE).exists()

    @property
    def node_ids(self) -> range:
        return range(1, self.size + 1)

    def _ports(self, node_id: int) -> tuple[int, int]:
        client = self.port + 2 * (node_id - 1)
        return client, client + 1

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes.values())

    @property
    def security(self) -> BrokerSecurity | None:
        return self.nodes[1].security

    @property
    def admin_config(self) -> Path:
        """The admin's streamtask.toml for the whole cluster when it is secured (0600)."""
        return self.data_dir / "admin.toml"

    def client_settings(self) -> KafkaSettings:
        """Settings that reach the cluster (as the super user when it is secured)."""
        first = self.nodes[1].client_settings()
        return first.replace(bootstrap=self.bootstrap)

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.data_dir / STATE).read_text())
            return state
        except (OSError, ValueError):
            return {}

    def status(self) -> ClusterStatus:
        return ClusterStatus(self.bootstrap, [node.status() for node in self.nodes.values()])

    def up(self, timeout: float = 120.0) -> ClusterStatus:
        """Start every stopped node, then wait for each: no node answers before a majority of
        the quorum runs, so all are spawned before any is waited for."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / STATE).write_text(json.dumps(
            {"brokers": self.size, "port": self.port, "cluster_id": self.cluster_id}))
        if self.security is not None:
            self.security.write(self.admin_config, self.bootstrap)
            files = self.security.tls
            if files is not None:  # once, before the nodes start side by side
                tls.generate(files.directory, self.security.admin_password)
        with ThreadPoolExecutor(self.size) as pool:  # formatting is a JVM start per node
            started = list(zip(self.nodes.values(),
                               pool.map(LocalBroker.start, self.nodes.values()), strict=True))
        deadline = time.monotonic() + timeout
        try:
            for node, process in started:
                node.wait_until_ready(process, max(1.0, deadline - time.monotonic()))
        except BrokerSetupError:
            self.down()
            raise
        return self.status()

    def down(self, timeout: float = 60.0) -> bool:
        """Stop every node (controlled shutdown); False when none was running. All at once:
        one by one, the last node would wait out ``timeout`` for a quorum that is gone."""
        with ThreadPoolExecutor(self.size) as pool:
            stopped = list(pool.map(lambda node: node.down(timeout), self.nodes.values()))
        return any(stopped)

    def leader_of(self, topic: str, partition: int, timeout: float = 10.0) -> int:
        """The node id leading ``topic[partition]`` now."""
        from streamtask.kafka import clients as kafka

        metadata = kafka.admin(self.client_settings()).list_topics(topic, timeout=timeout)
        leader: int = metadata.topics[topic].partitions[partition].leader
        return leader
