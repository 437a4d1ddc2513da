"""Test your stages and pipelines without a broker.

``run(app)`` runs the app's real workers (routing, the retry ladder, dead letters, joins,
compensation, exactly-once: the same code as in production) over an in-memory log, with a
clock that moves only when the test calls ``advance``::

    with streamtask.testing.run(app) as t:
        t.send("resize", {"photo": "p1.jpg"}, key="p1")
        t.advance(seconds=10)                  # retries due within 10 s run
        assert t.results("scan") == [...]      # settles first
        assert t.dead_letters("scan")[0].reason == "exhausted"

``run(app, real=True)`` runs the same test against the app's Kafka cluster.
"""

from streamtask.testing.clients import MemoryTransport
from streamtask.testing.harness import DeadLetter, NotSettled, TestRun, run
from streamtask.testing.log import MemoryLog

__all__ = ["DeadLetter", "MemoryLog", "MemoryTransport", "NotSettled", "TestRun", "run"]
