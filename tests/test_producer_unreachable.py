"""A service whose broker does not answer learns it from ``send`` within the connect
timeout (``BrokerUnavailable``), not from a ``flush`` that waits librdkafka's five-minute
message timeout; and a service module's ``App`` follows ``STREAMTASK_BOOTSTRAP`` as the
worker does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamtask import App, BrokerUnavailable, KafkaSettings
from streamtask.dev.broker import free_port
from streamtask.kafka.clients import TopicPartition, consumer
from streamtask.kafka.topics import ensure
from tests import conftest
from tests.helpers import REPO_ROOT

SERVICE = """
from streamtask import App

app = App("{name}")   # no settings: the deployment's, like `streamtask worker`

@app.stage("upload", partitions=1)
def upload(task):
    pass

print(app.kafka.bootstrap, flush=True)
app.send("upload", {{"photo": 1}})
app.flush(30)
print("delivered", flush=True)
"""


@pytest.mark.timeout(120)
def test_send_without_a_broker_fails_within_the_connect_timeout() -> None:
    app = App("nobroker", kafka=KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}"))

    @app.stage("upload", partitions=1)
    def upload(_task: object) -> None:
        pass

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="no Kafka broker answered"):
        app.send("upload", {"photo": 1})
    # The default connect timeout is 15 s; librdkafka alone waits 300 s.
    assert time.monotonic() - started < 60


def test_a_service_module_sends_where_the_environment_says(
        kafka: conftest.TestBroker, unique: str, tmp_path: Path) -> None:
    name = f"svc{unique}"
    (tmp_path / "service.py").write_text(SERVICE.format(name=name))
    app = App(name, kafka=kafka.settings)

    @app.stage("upload", partitions=1)
    def upload(_task: object) -> None:
        pass

    ensure(app)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTASK_")}
    env.update(STREAMTASK_BOOTSTRAP=kafka.bootstrap,
               PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, "service.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [kafka.bootstrap, "delivered"]
    reader = consumer(kafka.settings, f"check-{name}")
    low, high = reader.get_watermark_offsets(TopicPartition(f"{name}.upload", 0), timeout=10)
    reader.close()
    assert high - low == 1
