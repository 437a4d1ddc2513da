"""One configuration for the CLI and the library: defaults, then streamtask.toml, then
``STREAMTASK_*`` variables, then explicit values; secrets never show themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtask import App
from streamtask.config import KafkaSettings, Secret, load_kafka_settings
from streamtask.errors import ConfigurationError

FILE = """[kafka]
bootstrap = "file:9092"
sasl_username = "from-file"
sasl_password = "file-secret"
connect_timeout = 7

[kafka.librdkafka]
"socket.keepalive.enable" = true
"""


def test_layers_apply_in_order_and_explicit_values_win(tmp_path: Path) -> None:
    config = tmp_path / "streamtask.toml"
    config.write_text(FILE)
    assert load_kafka_settings({}, config_file=config).bootstrap == "file:9092"
    env = {"STREAMTASK_CONFIG": str(config), "STREAMTASK_BOOTSTRAP": "env:9092"}
    from_env = load_kafka_settings(env)
    assert from_env.bootstrap == "env:9092"
    assert from_env.sasl_username == "from-file" and from_env.connect_timeout == 7
    assert from_env.extra == {"socket.keepalive.enable": True}
    assert load_kafka_settings(env, bootstrap="flag:9092").bootstrap == "flag:9092"
    assert load_kafka_settings(env, bootstrap=None).bootstrap == "env:9092"


def test_a_base_keeps_what_no_layer_sets() -> None:
    base = KafkaSettings(bootstrap="code:9092", extra={"linger.ms": 1}, connect_timeout=3)
    merged = load_kafka_settings({"STREAMTASK_SASL_USERNAME": "svc",
                                  "STREAMTASK_SASL_PASSWORD": "pw"}, base=base)
    assert merged.bootstrap == "code:9092" and merged.extra == {"linger.ms": 1}
    assert merged.connect_timeout == 3
    assert merged.security_protocol == "SASL_PLAINTEXT"
    assert merged.sasl_mechanism == "SCRAM-SHA-512"


def test_an_app_without_settings_follows_the_deployment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert App("plain").kafka.bootstrap == "127.0.0.1:9092"
    (tmp_path / "streamtask.toml").write_text('[kafka]\nbootstrap = "toml:9092"\n')
    assert App("filed").kafka.bootstrap == "toml:9092"
    monkeypatch.setenv("STREAMTASK_BOOTSTRAP", "broker.internal:9092")
    assert App("photos").kafka.bootstrap == "broker.internal:9092"
    explicit = KafkaSettings(bootstrap="explicit:9092")
    assert App("photos", kafka=explicit).kafka is explicit


def test_the_password_comes_from_a_file_without_its_newline(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    settings = load_kafka_settings({"STREAMTASK_SASL_USERNAME": "worker",
                                    "STREAMTASK_SASL_PASSWORD_FILE": str(secret)})
    assert settings.client_config()["sasl.password"] == "s3cret"
    assert settings.client_config()["security.protocol"] == "sasl_plaintext"
    with pytest.raises(ConfigurationError, match="not both"):
        load_kafka_settings({"STREAMTASK_SASL_USERNAME": "worker",
                             "STREAMTASK_SASL_PASSWORD": "x",
                             "STREAMTASK_SASL_PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigurationError, match="cannot read the SASL password file") as err:
        load_kafka_settings({"STREAMTASK_SASL_USERNAME": "worker",
                             "STREAMTASK_SASL_PASSWORD_FILE": str(tmp_path / "missing")})
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize(("env", "message"), [
    ({"STREAMTASK_SECURITY_PROTOCOL": "SASL_SSL"}, "needs a SASL user name and password"),
    ({"STREAMTASK_SASL_PASSWORD": "x"}, "no user name"),
    ({"STREAMTASK_SECURITY_PROTOCOL": "TLS"}, "is not one of"),
    ({"STREAMTASK_SASL_USERNAME": "u", "STREAMTASK_SASL_PASSWORD": "p",
      "STREAMTASK_SASL_MECHANISM": "GSSAPI"}, "is not one of"),
    ({"STREAMTASK_CONNECT_TIMEOUT": "soon"}, "number of seconds"),
])
def test_invalid_settings_say_how_to_fix_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_kafka_settings(env)


def test_unknown_keys_in_the_file_are_named(tmp_path: Path) -> None:
    config = tmp_path / "streamtask.toml"
    config.write_text('[kafka]\nbootstrap_servers = "x:1"\n')
    with pytest.raises(ConfigurationError, match="bootstrap_servers"):
        load_kafka_settings({}, config_file=config)
    config.write_text("[kafka\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_kafka_settings({}, config_file=config)


def test_secrets_never_show_themselves() -> None:
    settings = KafkaSettings(bootstrap="b:9092", sasl_username="svc", sasl_password="hunter2",
                             ssl_key_password="keypass",
                             extra={"sasl.oauthbearer.client.secret": "oauth-secret",
                                    "linger.ms": 5})
    assert isinstance(settings.sasl_password, Secret)
    shown = " ".join([repr(settings), str(settings), f"{settings}", settings.describe(),
                      repr(settings.sasl_password), str(settings.sasl_password)])
    for secret in ("hunter2", "keypass", "oauth-secret"):
        assert secret not in shown
    assert "linger.ms" in shown and "svc" in shown
    assert settings.client_config()["sasl.password"] == "hunter2"
