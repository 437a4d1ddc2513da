"""Small frozen settings objects, and the one loader that fills them from a deployment.

Library code receives these objects. The deployment's configuration (``STREAMTASK_*``
environment variables and an optional ``streamtask.toml``) is read by one function,
:func:`load_kafka_settings`, called at exactly two edges: the CLI, and an :class:`App` built
without explicit ``kafka=`` settings. That keeps STYLE's rule that no module deep in the
library reads the environment, while a service calling ``app.send`` connects where
``streamtask worker`` does. Explicit values always win: code over file and environment for
an App, command-line flags over environment over file for the CLI.

Passwords are :class:`Secret` values: their ``repr``/``str`` is ``***``, so they cannot leak
through logs, exception messages or a printed settings object. ``extra`` is the escape hatch
that passes any librdkafka setting through untouched (tuning, OAuth, ...).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from streamtask.errors import ConfigurationError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
CONFIG_FILE = "streamtask.toml"
_SENSITIVE = ("password", "secret", "key.pem", "token", "jaas")


class Secret:
    """A string that never shows itself: ``str``/``repr`` print ``***``; ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that hands it to librdkafka."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _is_sensitive(key: str) -> bool:
    return any(word in key.lower() for word in _SENSITIVE)


def _is_server(server: str) -> bool:
    """``host[:port]`` (a scheme such as ``SSL://`` may lead), the port a number 1-65535."""
    address = server.strip().rpartition("://")[2]
    host, colon, port = address.rpartition(":")
    if not colon:
        return bool(address)
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


@dataclass(frozen=True, repr=False)
class KafkaSettings:
    """Where the cluster is and how to talk to it (address, authentication, TLS).

    Giving ``sasl_username`` alone implies SCRAM-SHA-512 over ``SASL_PLAINTEXT`` (or
    ``SASL_SSL`` when ``ssl_ca`` is given); a plain ``str`` password is wrapped in a
    :class:`Secret`.
    """

    bootstrap: str = "127.0.0.1:9092"
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    connect_timeout: float = 15.0
    """How long a client waits for the cluster to answer at start before giving up."""
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | str | None = None
    ssl_ca: str | None = None
    """A PEM file of the CA(s) that signed the brokers' certificates."""
    ssl_certificate: str | None = None
    """A PEM client certificate, for clusters that authenticate clients by TLS (mTLS)."""
    ssl_key: str | None = None
    ssl_key_password: Secret | str | None = None

    def __post_init__(self) -> None:
        if not self.bootstrap or " " in self.bootstrap.strip() or any(
                not _is_server(server) for server in self.bootstrap.split(",")):
            raise ConfigurationError(
                f"bootstrap servers {self.bootstrap!r} are not valid: give host:port[,host:port]")
        if not math.isfinite(self.connect_timeout) or self.connect_timeout <= 0:
            raise ConfigurationError("connect_timeout must be a positive number of seconds")
        for name in ("sasl_password", "ssl_key_password"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Secret(value))
        if self.sasl_username is not None:
            if self.security_protocol is None:
                protocol = "SASL_SSL" if self.ssl_ca else "SASL_PLAINTEXT"
                object.__setattr__(self, "security_protocol", protocol)
            if self.sasl_mechanism is None:
                object.__setattr__(self, "sasl_mechanism", "SCRAM-SHA-512")
        self._check_security()

    def _check_security(self) -> None:
        protocol = self.security_protocol
        if protocol is not None and protocol not in SECURITY_PROTOCOLS:
            raise ConfigurationError(f"security protocol {protocol!r} is not one of "
                                     f"{', '.join(SECURITY_PROTOCOLS)}")
        mechanism = self.sasl_mechanism
        if mechanism is not None and mechanism not in SASL_MECHANISMS:
            raise ConfigurationError(f"SASL mechanism {mechanism!r} is not one of "
                                     f"{', '.join(SASL_MECHANISMS)}")
        if protocol in ("SASL_PLAINTEXT", "SASL_SSL") and (
                self.sasl_username is None or self.sasl_password is None):
            raise ConfigurationError(
                f"security protocol {protocol} needs a SASL user name and password "
                "(STREAMTASK_SASL_USERNAME and STREAMTASK_SASL_PASSWORD or "
                "STREAMTASK_SASL_PASSWORD_FILE)")
        if self.sasl_password is not None and self.sasl_username is None:
            raise ConfigurationError("a SASL password is set but no user name "
                                     "(STREAMTASK_SASL_USERNAME)")

    @property
    def secured(self) -> bool:
        return self.security_protocol not in (None, "PLAINTEXT")

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings these fields stand for (``extra`` comes on top)."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.security_protocol is not None:
            config["security.protocol"] = self.security_protocol.lower()
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            config["sasl.username"] = self.sasl_username
        if isinstance(self.sasl_password, Secret):
            config["sasl.password"] = self.sasl_password.reveal()
        for key, value in (("ssl.ca.location", self.ssl_ca),
                           ("ssl.certificate.location", self.ssl_certificate),
                           ("ssl.key.location", self.ssl_key)):
            if value is not None:
                config[key] = value
        if isinstance(self.ssl_key_password, Secret):
            config["ssl.key.password"] = self.ssl_key_password.reveal()
        return config

    def describe(self) -> str:
        """The address and identity, for messages (never a secret)."""
        if self.sasl_username is None:
            return self.bootstrap if not self.secured else \
                f"{self.bootstrap} ({self.security_protocol})"
        return (f"{self.bootstrap} ({self.security_protocol}, {self.sasl_mechanism} as user "
                f"{self.sasl_username!r})")

    def replace(self, **changes: Any) -> KafkaSettings:
        """A copy with ``changes`` applied (and validated again)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        shown = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "extra":
                value = {k: "***" if _is_sensitive(k) else v for k, v in value.items()}
                if not value:
                    continue
            elif value is None or value == item.default:
                continue
            shown.append(f"{item.name}={value!r}")
        return f"KafkaSettings({', '.join(shown)})"


_ENV = {
    "STREAMTASK_BOOTSTRAP": "bootstrap",
    "STREAMTASK_CONNECT_TIMEOUT": "connect_timeout",
    "STREAMTASK_SECURITY_PROTOCOL": "security_protocol",
    "STREAMTASK_SASL_MECHANISM": "sasl_mechanism",
    "STREAMTASK_SASL_USERNAME": "sasl_username",
    "STREAMTASK_SASL_PASSWORD": "sasl_password",
    "STREAMTASK_SASL_PASSWORD_FILE": "sasl_password_file",
    "STREAMTASK_SSL_CA": "ssl_ca",
    "STREAMTASK_SSL_CERTIFICATE": "ssl_certificate",
    "STREAMTASK_SSL_KEY": "ssl_key",
    "STREAMTASK_SSL_KEY_PASSWORD": "ssl_key_password",
}
"""Environment variable -> setting; a streamtask.toml's ``[kafka]`` table uses the same names
(plus ``librdkafka``, a table passed through as ``extra``)."""
_FILE_KEYS = {*_ENV.values(), "librdkafka"}


def load_kafka_settings(environ: Mapping[str, str] | None = None, *,
                        base: KafkaSettings | None = None, config_file: str | Path | None = None,
                        **explicit: Any) -> KafkaSettings:
    """Settings of this deployment: ``base`` (or the defaults), then the config file, then the
    environment, then ``explicit`` values that are not None, each layer over the last.

    The config file is ``config_file``, else ``$STREAMTASK_CONFIG``, else ``streamtask.toml``
    in the working directory when it exists. Only the CLI and :class:`App` call this.
    """
    environ = os.environ if environ is None else environ
    layers = [_file_values(_config_path(environ, config_file)),
              _env_values(environ),
              {k: v for k, v in explicit.items() if v is not None}]
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(_resolve_password(layer))
    extra = values.pop("librdkafka", None)
    if extra is not None:
        values["extra"] = MappingProxyType({**(base.extra if base else {}), **extra})
    try:
        return (base or KafkaSettings()).replace(**values)
    except TypeError as exc:  # an unknown explicit keyword
        raise ConfigurationError(f"unknown Kafka setting: {exc}") from None


def _config_path(environ: Mapping[str, str], given: str | Path | None) -> Path | None:
    if given is not None:
        return Path(given)
    if environ.get("STREAMTASK_CONFIG"):
        return Path(environ["STREAMTASK_CONFIG"])
    default = Path(CONFIG_FILE)
    return default if default.is_file() else None


def _file_values(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not TOML text (not UTF-8 at byte "
                                 f"{exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    table = document.get("kafka", {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"config file {path}: kafka must be a table ([kafka])")
    unknown = sorted(set(table) - _FILE_KEYS)
    if unknown or set(document) - {"kafka"}:
        raise ConfigurationError(
            f"config file {path}: unknown setting(s) {', '.join(unknown or sorted(document))}; "
            f"a [kafka] table may hold {', '.join(sorted(_FILE_KEYS))}")
    for key, value in table.items():
        wanted = _FILE_TYPES.get(key, str)
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise ConfigurationError(
                f"config file {path}: kafka.{key} must be {_TYPE_NAMES[wanted]}, not "
                f"{value!r}")
    return dict(table)


_FILE_TYPES: dict[str, type | tuple[type, ...]] = {
    "connect_timeout": (int, float), "librdkafka": dict}
"""Settings of a config file that are not strings."""
_TYPE_NAMES: dict[type | tuple[type, ...], str] = {
    str: "a string", (int, float): "a number of seconds", dict: "a table of librdkafka settings"}


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, name in _ENV.items():
        text = environ.get(variable)
        if text:
            values[name] = text
    if "connect_timeout" in values:
        try:
            values["connect_timeout"] = float(values["connect_timeout"])
        except ValueError:
            raise ConfigurationError("STREAMTASK_CONNECT_TIMEOUT must be a number of "
                                     "seconds") from None
    return values


def _resolve_password(layer: dict[str, Any]) -> dict[str, Any]:
    """Turn ``sasl_password_file`` into ``sasl_password`` (a file wins over nothing only)."""
    path = layer.pop("sasl_password_file", None)
    if path is None:
        return layer
    if layer.get("sasl_password") is not None:
        raise ConfigurationError("give the SASL password or a file holding it, not both "
                                 "(STREAMTASK_SASL_PASSWORD / STREAMTASK_SASL_PASSWORD_FILE)")
    try:
        layer["sasl_password"] = Secret(Path(path).read_text(encoding="utf-8").rstrip("\r\n"))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the SASL password file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"the SASL password file {path} is not text (not UTF-8)") from None
    return layer


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
    rejoin_timeout: float = 60.0
    """Seconds a consumer may stay out of its group, or hand out no record while records
    wait for it, while the cluster answers, before the worker closes and re-creates it; and
    (at-least-once) that held tasks may all wait for acknowledgements that do not come
    before every client is re-created (:mod:`streamtask.worker.liveness`). Rejoining after
    an outage takes a few seconds to a session timeout or two; after broker restarts a
    consumer was seen never to rejoin, and a worker never to take a record again."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if self.commit_interval <= 0:
            raise ConfigurationError("commit_interval must be a positive number of seconds")
        if self.drain_timeout < 0:
            raise ConfigurationError("drain_timeout must be zero or more seconds")
        if self.rejoin_timeout <= 0:
            raise ConfigurationError("rejoin_timeout must be a positive number of seconds")

    @property
    def max_buffered(self) -> int:
        """Tasks held before the worker stops taking records: every task received and not
        yet below its partition's commit position (running, waiting, or finished above an
        unfinished one). A crash reruns at most these plus those finished since the last
        commit (see :mod:`streamtask.worker.window`)."""
        return self.concurrency + (self.prefetch or max(2 * self.concurrency, 1000))
