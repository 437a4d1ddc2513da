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
import secrets
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

from streamtask.config import KafkaSettings, Secret
from streamtask.dev import tls
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
node.id={node_id}
controller.quorum.voters={voters}
listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={listener}://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name={listener}
listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
auto.create.topics.enable=false
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
log.cleaner.dedupe.buffer.size=1048577
"""

_SASL_PROPERTIES = """sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.{listener}.scram-sha-512.sasl.jaas.config=\\
  org.apache.kafka.common.security.scram.ScramLoginModule required \\
  username="{user}" password="{password}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# The admin, and the brokers themselves on the loopback-only PLAINTEXT controller listener.
super.users=User:{user};User:ANONYMOUS
"""

_TLS_PROPERTIES = """ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={password}
ssl.key.password={password}
ssl.truststore.type=PKCS12
ssl.truststore.location={keystore}
ssl.truststore.password={password}
"""


@dataclass(frozen=True)
class BrokerSecurity:
    """SASL/SCRAM-SHA-512 on the client listener, the StandardAuthorizer with no access by
    default, and one super user (``admin``) whose SCRAM credentials are written into the
    storage at format time (KRaft keeps SCRAM users in its metadata log, so the first one
    cannot be created through a broker that nobody may log into yet). With ``tls_dir`` the
    listener is SASL_SSL, with certificates from :mod:`streamtask.dev.tls` kept there (their
    store password is the admin's)."""

    admin_password: Secret
    admin_user: str = "admin"
    tls_dir: Path | None = None

    @classmethod
    def generate(cls, tls_dir: Path | None = None) -> BrokerSecurity:
        return cls(Secret(secrets.token_urlsafe(18)), tls_dir=tls_dir)

    @property
    def listener(self) -> str:
        return "SASL_SSL" if self.tls_dir is not None else "SASL_PLAINTEXT"

    @property
    def tls(self) -> tls.TlsFiles | None:
        return tls.TlsFiles(self.tls_dir) if self.tls_dir is not None else None

    def admin_settings(self, bootstrap: str) -> KafkaSettings:
        """Client settings that log in as the super user."""
        files = self.tls
        return KafkaSettings(bootstrap=bootstrap, security_protocol=self.listener,
                             sasl_username=self.admin_user, sasl_password=self.admin_password,
                             ssl_ca=str(files.ca) if files is not None else None)

    def server_properties(self) -> str:
        """The broker settings for this security (secrets included: the file is 0600)."""
        text = _SASL_PROPERTIES.format(listener=self.listener.lower(), user=self.admin_user,
                                       password=self.admin_password.reveal())
        files = self.tls
        if files is not None:
            tls.generate(files.directory, self.admin_password)
            text += _TLS_PROPERTIES.format(keystore=files.keystore,
                                           password=self.admin_password.reveal())
        return text

    def write(self, path: Path, bootstrap: str) -> None:
        """A streamtask.toml for the admin (mode 0600), usable as ``STREAMTASK_CONFIG``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        files = self.tls
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f'[kafka]\nbootstrap = "{bootstrap}"\n'
                      f'security_protocol = "{self.listener}"\n'
                      f'sasl_mechanism = "SCRAM-SHA-512"\n'
                      f'sasl_username = "{self.admin_user}"\n'
                      f'sasl_password = "{self.admin_password.reveal()}"\n'
                      + (f'ssl_ca = "{files.ca}"\n' if files is not None else ""))

    @classmethod
    def read(cls, path: Path) -> BrokerSecurity | None:
        try:
            document = tomllib.loads(path.read_text())["kafka"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return None
        ca = document.get("ssl_ca")
        return cls(Secret(document["sasl_password"]), document["sasl_username"],
                   Path(ca).parent if ca else None)


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
    With ``security``, the client listener takes SASL/SCRAM-SHA-512 and ACLs apply; as one
    node of a :class:`~streamtask.dev.cluster.LocalCluster`, ``node_id``, ``voters`` (the quorum),
    ``cluster_id`` and ``replication`` come from the cluster.
    """

    def __init__(self, data_dir: Path = DEFAULT_DATA_DIR, port: int | None = None,
                 controller_port: int | None = None, version: str = KAFKA_VERSION, *,
                 security: BrokerSecurity | None = None, node_id: int = 1,
                 voters: str | None = None, cluster_id: str | None = None,
                 replication: int = 1) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        saved = self._read_state()
        self.port = port or int(saved.get("port", DEFAULT_PORT))
        self.controller_port = controller_port or int(
            saved.get("controller_port", 0)) or self.port + 1
        self.version = version
        self.security = security or BrokerSecurity.read(self.admin_config)
        self.node_id = node_id
        self.voters = voters or f"{node_id}@127.0.0.1:{self.controller_port}"
        self.cluster_id = cluster_id
        self.replication = replication
        self._process: subprocess.Popen[bytes] | None = None
        """The broker process when this object started it (so it can be reaped)."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_config(self) -> Path:
        """The admin's streamtask.toml when the broker is secured (mode 0600)."""
        return self.data_dir / "admin.toml"

    def client_settings(self) -> KafkaSettings:
        """Settings that reach this broker (as the super user when it is secured)."""
        if self.security is None:
            return KafkaSettings(bootstrap=self.bootstrap)
        return self.security.admin_settings(self.bootstrap)

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
        process = self.start()
        self.wait_until_ready(process, timeout)
        return self.status()

    def start(self) -> subprocess.Popen[bytes] | None:
        """Format (first time) and spawn the broker without waiting for it to answer; None
        when it already runs. A cluster starts every node before waiting for any, since no
        node answers before the quorum has a majority."""
        if self.status().running:
            return None
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
        return self._spawn(java, lib, properties)

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
        text = _SERVER_PROPERTIES.format(
            node_id=self.node_id, voters=self.voters,
            listener=self.security.listener if self.security else "PLAINTEXT",
            port=self.port, controller_port=self.controller_port,
            log_dir=self.data_dir / "kraft-logs", replication=self.replication,
            min_isr=min(2, self.replication))
        if self.security is not None:
            self.security.write(self.admin_config, self.bootstrap)
            text += self.security.server_properties()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        return path

    def _format_storage(self, java: str, lib: Path, properties: Path) -> None:
        if (self.data_dir / "kraft-logs" / "meta.properties").exists():
            return
        cluster_id = self.cluster_id or base64.urlsafe_b64encode(
            uuid.uuid4().bytes).rstrip(b"=").decode()
        command = [java, "-XX:TieredStopAtLevel=1", "-cp", f"{lib}/*",
                   "kafka.tools.StorageTool", "format",
                   f"--cluster-id={cluster_id}",  # an id may start with '-': never a separate arg
                   "-c", str(properties), "--ignore-formatted"]
        if self.security is not None:
            command += ["--add-scram", f"SCRAM-SHA-512=[name={self.security.admin_user},"
                        f"password={self.security.admin_password.reveal()}]"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            output = done.stdout + done.stderr
            if self.security is not None:
                output = output.replace(self.security.admin_password.reveal(), "***")
            raise BrokerSetupError(
                f"formatting the broker's storage in {self.data_dir} failed:\n"
                + "\n".join(output.splitlines()[-10:]))

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

    def wait_until_ready(self, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
        """Return once the broker answers metadata requests; stop it and raise if it exits or
        does not answer within ``timeout``."""
        if process is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._forget_pid()
                raise BrokerSetupError(
                    f"the Kafka broker exited with code {process.returncode} while starting. "
                    f"Last lines of {self.log_file}:\n{self.log_tail()}")
            if _answers_metadata(self.client_settings()):
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


def _answers_metadata(settings: KafkaSettings) -> bool:
    host, port = settings.bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    from streamtask.kafka.clients import cluster_is_reachable

    return cluster_is_reachable(settings, timeout=5.0)
