"""A 3-stage exactly-once pipeline for the kill -9 test: double -> add_one -> publish ->
the ``results`` topic. Workers import ``app``, named by ``EOS_APP`` (unique per test)."""

from __future__ import annotations

import os
import time

from streamtask import App, KafkaSettings, Task


def build(name: str, bootstrap: str) -> App:
    app = App(name, kafka=KafkaSettings(bootstrap))

    @app.stage("double", partitions=4, exactly_once=True, then="add_one")
    def double(task: Task) -> dict[str, int]:
        time.sleep(0.005)
        return {"n": task.payload["n"], "value": task.payload["n"] * 2}

    @app.stage("add_one", partitions=4, exactly_once=True, then="publish")
    def add_one(task: Task) -> dict[str, int]:
        time.sleep(0.005)
        return {**task.payload, "value": task.payload["value"] + 1}

    @app.stage("publish", partitions=4, exactly_once=True, then="results")
    def publish(task: Task) -> dict[str, int]:
        return dict(task.payload)

    @app.stage("results", partitions=2)
    def results(task: Task) -> None:
        """Not run by the test: its topic is the pipeline's output, read directly."""

    return app


app = build(os.environ.get("EOS_APP", "eos"),
            os.environ.get("STREAMTASK_BOOTSTRAP", "127.0.0.1:9092"))
