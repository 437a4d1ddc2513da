"""``streamtask worker --processes 2 --instance-id ID`` on an exactly-once stage: each child
gets its own transactional id (``ID-0``, ``ID-1``), so the children do not fence each other
(with one shared id each start fenced the other: a restart loop) and every result is
committed once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import EosPipeline
from tests.topic_reader import read_to_end

TASKS = 400


@pytest.mark.timeout(180)
def test_supervised_exactly_once_children_get_one_transactional_id_each(
        kafka, unique: str, tmp_path: Path) -> None:
    pipeline = EosPipeline(f"t{unique}", kafka.bootstrap, TASKS, tmp_path)
    app = pipeline.app
    output_topic = app.stages["add_one"].topic
    supervisor = pipeline.start_worker("double", "supervisor.out", "--processes", "2")
    try:
        deadline = time.monotonic() + 90
        results: Counter[int] = Counter()
        while sum(results.values()) < TASKS and time.monotonic() < deadline:
            assert supervisor.running(), supervisor.describe()
            time.sleep(1)
            results = Counter(app.codec.decode(m.value()).payload["n"]
                              for m in read_to_end(kafka.bootstrap, output_topic))
        time.sleep(2)  # a child fenced late would show in its exit (and restart) by now
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0, supervisor.describe()
    finally:
        supervisor.kill_group()
    output = supervisor.output()
    assert "restarting" not in output, supervisor.describe()
    assert output.count(" worker.started worker=") == 2, supervisor.describe()
    results = Counter(app.codec.decode(m.value()).payload["n"]
                      for m in read_to_end(kafka.bootstrap, output_topic))
    assert results == Counter(range(TASKS)), supervisor.describe()
