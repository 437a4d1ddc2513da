"""Tasks of one key never overlap and run in offset order; other keys run in parallel,
beyond the partition count."""

from __future__ import annotations

import threading
import time

from streamtask import Task
from tests.inprocess import new_app, run_worker, send_all


def test_same_key_serial_in_order_other_keys_parallel(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    lock = threading.Lock()
    active: dict[str, int] = {}
    seen: dict[str, list[int]] = {}
    overlap_same_key = []
    peak = [0]

    @app.stage("ordered", partitions=2, concurrency=8)
    def ordered(task: Task) -> None:
        key = task.payload["key"]
        with lock:
            active[key] = active.get(key, 0) + 1
            if active[key] > 1:
                overlap_same_key.append(key)
            peak[0] = max(peak[0], sum(active.values()))
        time.sleep(0.01)
        with lock:
            seen.setdefault(key, []).append(task.payload["seq"])
            active[key] -= 1

    keys = [f"k{i}" for i in range(8)]
    payloads = [{"key": key, "seq": seq} for seq in range(25) for key in keys]
    send_all(app, "ordered", payloads, key=lambda p: p["key"])
    stats = run_worker(app, max_tasks=len(payloads))

    assert stats.counts["task.succeeded"] == len(payloads)
    assert overlap_same_key == []
    assert all(seen[key] == list(range(25)) for key in keys), seen
    assert peak[0] > 2, "different keys should run in parallel beyond the 2 partitions"
