"""Small frozen settings objects.

Environment variables are read only at the CLI edge (see :mod:`streamtask.cli`); library code
receives these objects. ``extra`` is the escape hatch that passes any librdkafka setting
through untouched (security, TLS, tuning), so streamtask never has to mirror librdkafka's
whole configuration surface.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from streamtask.errors import ConfigurationError


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is and how to talk to it."""

    bootstrap: str = "127.0.0.1:9092"
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    connect_timeout: float = 15.0
    """How long a client waits for the cluster to answer at start before giving up."""

    def __post_init__(self) -> None:
        if not self.bootstrap or " " in self.bootstrap.strip():
            raise ConfigurationError(
                f"bootstrap servers {self.bootstrap!r} are not valid: give host:port[,host:port]")


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker process consumes, runs and commits."""

    concurrency: int = 8
    """Tasks in flight at once in one process (threads for plain handlers)."""
    prefetch: int = 0
    """Decoded tasks buffered beyond ``concurrency`` before partitions are paused (0 = auto:
    1000). A full worker stops taking records and pauses only if it stays full (pausing
    drops librdkafka's prefetch, and the first record after a resume took 0.45-1 s here);
    1000 small tasks cost about a megabyte."""
    commit_interval: float = 1.0
    """Seconds between offset commits; commits also happen on revoke and shutdown."""
    commit_every: int = 2000
    """Commit early once this many tasks finished since the last commit."""
    drain_timeout: float = 30.0
    """On shutdown or revoke: how long in-flight tasks may take to finish before we give up."""
    poll_batch: int = 500
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    instance_id: str | None = None
    """Stable identity of this worker (exactly-once: its transactional id survives restarts)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if self.commit_interval <= 0:
            raise ConfigurationError("commit_interval must be a positive number of seconds")
        if self.drain_timeout < 0:
            raise ConfigurationError("drain_timeout must be zero or more seconds")

    @property
    def max_buffered(self) -> int:
        """Tasks held before the worker stops taking records: every task received and not
        yet below its partition's commit position (running, waiting, or finished above an
        unfinished one). A crash reruns at most these plus those finished since the last
        commit (see :mod:`streamtask.window`)."""
        return self.concurrency + (self.prefetch or max(2 * self.concurrency, 1000))
