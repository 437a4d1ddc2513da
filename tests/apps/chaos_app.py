"""The chaos suite's 3-stage pipeline: first -> second -> third -> the ``out`` topic.

Workers import ``app``; the environment names it (``CHAOS_APP``, unique per run), says
whether its stages are exactly-once (``CHAOS_EOS=1``) and how long each task takes
(``CHAOS_SLEEP`` seconds). Every result carries its task number ``n``, so a reader of ``out``
counts what was lost and what came twice.
"""

from __future__ import annotations

import os
import time

from streamtask import App, KafkaSettings, Task

PARTITIONS = 4


def build(name: str, bootstrap: str, *, exactly_once: bool, sleep: float) -> App:
    app = App(name, kafka=KafkaSettings(bootstrap))

    def step(task: Task) -> dict[str, int]:
        if sleep:
            time.sleep(sleep)
        return {"n": task.payload["n"], "hops": task.payload.get("hops", 0) + 1}

    app.stage("first", partitions=PARTITIONS, exactly_once=exactly_once, then="second")(step)
    app.stage("second", partitions=PARTITIONS, exactly_once=exactly_once, then="third")(step)
    app.stage("third", partitions=PARTITIONS, exactly_once=exactly_once, then="out")(step)

    @app.stage("out", partitions=PARTITIONS)
    def out(task: Task) -> None:
        """Not run: its topic is the pipeline's output, read directly."""

    return app


app = build(os.environ.get("CHAOS_APP", "chaos"),
            os.environ.get("STREAMTASK_BOOTSTRAP", "127.0.0.1:9092"),
            exactly_once=os.environ.get("CHAOS_EOS") == "1",
            sleep=float(os.environ.get("CHAOS_SLEEP", "0")))
