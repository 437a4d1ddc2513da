"""A single-node Apache Kafka broker (KRaft) for development, tests and the demo.

There is no Docker engine on every machine, but Maven Central is reachable everywhere, so the
broker is assembled from the ``org.apache.kafka:kafka_2.13`` jars and run with plain ``java``.
The jars are cached outside the project (``~/.cache/streamtask/kafka-<version>/lib``); the
data dir holds the log segments, the broker's log file and a small state file with the PID,
so ``up``/``down`` cycles keep the data and ``down`` stops exactly the process ``up`` started.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from streamtask.errors import BrokerSetupError

KAFKA_VERSION = "4.1.1"
SLF4J_VERSION = "1.7.36"
DEFAULT_PORT = 9092
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamtask"
DEFAULT_DATA_DIR = CACHE_ROOT / "broker-data"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.streamtask</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
      <exclusions>
        <exclusion><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId></exclusion>
        <exclusion><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_SERVER_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
log.cleaner.dedupe.buffer.size=1048577
"""


@dataclass(frozen=True)
class BrokerStatus:
    """What ``status`` reports: whether the broker runs, where it listens, and its data dir."""

    running: bool
    bootstrap: str
    data_dir: Path
    pid: int | None = None


def kafka_classpath(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Return the lib dir of the broker jars, fetching them with Maven on first use.

    A marker file is written only after Maven succeeded, so an interrupted download is
    retried on the next call instead of leaving a half-filled classpath.
    """
    home = CACHE_ROOT / f"kafka-{version}"
    lib = home / "lib"
    if (home / ".complete").exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerSetupError(
            "Maven (mvn) is not installed; it is needed once to fetch the Kafka broker jars "
            "from Maven Central. Install it (e.g. `apt-get install maven`) or point "
            "STREAMTASK_BOOTSTRAP at an existing broker."
        )
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(_POM.format(kafka=version, slf4j=SLF4J_VERSION))
    cmd = [mvn, "-B", "dependency:copy-dependencies", f"-DoutputDirectory={lib}",
           "-DincludeScope=runtime"]
    if quiet:
        cmd.insert(1, "-q")
    done = subprocess.run(cmd, cwd=home, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise BrokerSetupError(
            f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} "
            f"(exit {done.returncode}). Is Maven Central reachable?\n{tail}"
        )
    (home / ".complete").write_text(version)
    return lib


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerSetupError(
            "Java is not installed; the local Kafka broker needs Java 17 or newer "
            "(e.g. `apt-get install openjdk-17-jre-headless`), or set STREAMTASK_BOOTSTRAP "
            "to use an existing broker."
        )
    return java


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (checked by binding it briefly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the broker's own socket: connections in TIME_WAIT do not make a port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def free_port() -> int:
    """Ask the OS for a currently free port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalBroker:
    """One broker process bound to one data dir.

    The data dir owns the broker: its state file records the PID and ports, so a later
    ``LocalBroker(data_dir)`` (another CLI call, another test) finds and stops the same process.
    """

    def __init__(self, data_dir: Path = DEFAULT_DATA_DIR, port: int | None = None,
                 controller_port: int | None = None, version: str = KAFKA_VERSION) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        saved = self._read_state()
        self.port = port or int(saved.get("port", DEFAULT_PORT))
        self.controller_port = controller_port or int(
            saved.get("controller_port", 0)) or self.port + 1
        self.version = version
        self._process: subprocess.Popen[bytes] | None = None
        """The broker process when this object started it (so it can be reaped)."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "streamtask-broker.json"

    def _read_state(self) -> dict[str, int]:
        try:
            state: dict[str, int] = json.loads(self._state_file.read_text())
            return state
        except (OSError, ValueError):
            return {}

    def running_pid(self) -> int | None:
        """PID of this data dir's broker if it is alive (and really a Kafka broker)."""
        pid = self._read_state().get("pid")
        if not pid:
            return None
        if self._process is not None and self._process.pid == pid and \
                self._process.poll() is not None:
            return None  # our child exited (reaped now, so it is no zombie)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"kafka.Kafka" in cmdline and str(self.data_dir).encode() in cmdline \
            else None

    def status(self) -> BrokerStatus:
        pid = self.running_pid()
        return BrokerStatus(pid is not None, self.bootstrap, self.data_dir, pid)

    def up(self, timeout: float = 90.0) -> BrokerStatus:
        """Start the broker unless it already runs; return once it answers metadata requests."""
        current = self.status()
        if current.running:
            return current
        if self._process is not None:  # stopped by someone else: reap it
            self._process.wait()
            self._process = None
        java = _require_java()
        for port in (self.port, self.controller_port):
            if not port_is_free(port):
                raise BrokerSetupError(
                    f"port {port} on 127.0.0.1 is already taken by another process; "
                    "choose another with --port (the controller uses --port + 1), "
                    "or stop what listens there."
                )
        lib = kafka_classpath(self.version)
        properties = self._write_properties()
        self._format_storage(java, lib, properties)
        process = self._spawn(java, lib, properties)
        self._wait_until_ready(process, timeout)
        return self.status()

    def down(self, timeout: float = 60.0) -> bool:
        """Stop the broker with a controlled shutdown (SIGTERM); SIGKILL after ``timeout``.

        Returns False when no broker of this data dir was running.
        """
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running_pid() is None:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        if self._process is not None:
            self._process.wait()
            self._process = None
        self._forget_pid()
        return True

    def _write_properties(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "server.properties"
        path.write_text(_SERVER_PROPERTIES.format(
            port=self.port, controller_port=self.controller_port,
            log_dir=self.data_dir / "kraft-logs"))
        return path

    def _format_storage(self, java: str, lib: Path, properties: Path) -> None:
        if (self.data_dir / "kraft-logs" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        done = subprocess.run(
            [java, "-cp", f"{lib}/*", "kafka.tools.StorageTool", "format",
             f"--cluster-id={cluster_id}",  # an id may start with '-', so never a separate arg
             "-c", str(properties), "--ignore-formatted"],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BrokerSetupError(
                f"formatting the broker's storage in {self.data_dir} failed:\n"
                + "\n".join((done.stdout + done.stderr).splitlines()[-10:]))

    def _spawn(self, java: str, lib: Path, properties: Path) -> subprocess.Popen[bytes]:
        log = self.log_file.open("ab")
        process = subprocess.Popen(
            [java, "-Xms256m", "-Xmx512m", "-XX:TieredStopAtLevel=1",
             f"-Dstreamtask.data.dir={self.data_dir}", "-cp", f"{lib}/*",
             "kafka.Kafka", str(properties)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        self._process = process
        self._state_file.write_text(json.dumps({
            "pid": process.pid, "port": self.port, "controller_port": self.controller_port}))
        return process

    def _wait_until_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._forget_pid()
                raise BrokerSetupError(
                    f"the Kafka broker exited with code {process.returncode} while starting. "
                    f"Last lines of {self.log_file}:\n{self.log_tail()}")
            if _answers_metadata(self.bootstrap):
                return
            time.sleep(0.2)
        process.kill()
        process.wait()
        self._forget_pid()
        raise BrokerSetupError(
            f"the Kafka broker did not answer on {self.bootstrap} within {timeout:.0f}s. "
            f"Last lines of {self.log_file}:\n{self.log_tail()}")

    def _forget_pid(self) -> None:
        state = self._read_state()
        state.pop("pid", None)
        if self.data_dir.exists():
            self._state_file.write_text(json.dumps(state))

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log file)"


def _answers_metadata(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    from streamtask.kafka import cluster_is_reachable

    return cluster_is_reachable(bootstrap, timeout=5.0)
