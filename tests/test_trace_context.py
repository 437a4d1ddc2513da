"""Every task carries W3C trace context: a 3-stage run (with a retry in the middle) keeps the
sender's trace id end to end, each child names a new parent span, a retry is the same record
(same context) again; with OpenTelemetry, one span per execution links the chain."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamtask import Task
from streamtask.ops import tracing
from streamtask.retry import RetryPolicy
from tests.inprocess import new_app, run_stages, send_all
from tests.test_cli_errors import ROOT

GIVEN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_EXPORTER = InMemorySpanExporter()
_PROVIDER_LOCK = threading.Lock()


@dataclass(frozen=True)
class Seen:
    stage: str
    attempt: int
    traceparent: str
    run_id: str


def three_stages(bootstrap: str, unique: str, seen: list[Seen]) -> Any:
    """a -> b -> c; b fails its first attempt of every task."""
    app = new_app(bootstrap, unique)

    def handler(name: str) -> Any:
        def handle(task: Task) -> Any:
            seen.append(Seen(name, task.attempt, task.headers["traceparent"], task.run_id))
            if name == "b" and task.attempt == 1:
                raise ConnectionError("first attempt fails")
            return task.payload
        return handle

    app.stage("a", partitions=2, then="b")(handler("a"))
    app.stage("b", partitions=2, then="c",
              retry=RetryPolicy(max_attempts=2, levels=(0.2,)))(handler("b"))
    app.stage("c", partitions=2)(handler("c"))
    return app


def run(kafka: Any, unique: str) -> tuple[list[Seen], dict[str, str]]:
    seen: list[Seen] = []
    app = three_stages(kafka.bootstrap, unique, seen)
    send_all(app, "a", [])
    sent = {"new": f"new-{unique}", "given": f"given-{unique}"}
    with app.producer() as producer:
        producer.send("a", {"n": 0}, task_id=sent["new"])
        producer.send("a", {"n": 1}, headers={"traceparent": GIVEN}, task_id=sent["given"])
    # Per run: a, b (fails, retried), b, c.
    run_stages(app, {"a": 2, "b": 4, "c": 2}, idle_timeout=30)
    return seen, sent


def check_chain(seen: list[Seen], run_id: str) -> dict[tuple[str, int], str]:
    chain = {(s.stage, s.attempt): s.traceparent for s in seen if s.run_id == run_id}
    assert set(chain) == {("a", 1), ("b", 1), ("b", 2), ("c", 1)}, chain
    assert len({tracing.trace_id(tp) for tp in chain.values()}) == 1
    assert chain[("b", 1)] == chain[("b", 2)]  # the retry is the same record
    spans = [tracing.span_id(chain[key]) for key in (("a", 1), ("b", 1), ("c", 1))]
    assert len(set(spans)) == 3, chain
    return chain


@pytest.mark.timeout(120)
def test_trace_ids_across_a_three_stage_run_without_opentelemetry(kafka, unique,
                                                                  monkeypatch) -> None:
    monkeypatch.setattr(tracing, "otel_trace", lambda: None)
    seen, sent = run(kafka, unique)
    check_chain(seen, sent["new"])
    given = check_chain(seen, sent["given"])
    assert given[("a", 1)] == GIVEN
    assert all(tp.startswith("00-0af7651916cd43dd8448eb211c80319c-") for tp in given.values())


@pytest.mark.timeout(120)
def test_one_span_per_execution_with_opentelemetry(kafka, unique) -> None:
    with _PROVIDER_LOCK:
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
            trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        seen: list[Seen] = []
        app = three_stages(kafka.bootstrap, unique, seen)
        send_all(app, "a", [])
        run_id = f"run-{unique}"
        with app.producer() as producer:
            producer.send("a", {"n": 0}, task_id=run_id)
    run_stages(app, {"a": 1, "b": 2, "c": 1}, idle_timeout=30)
    chain = check_chain(seen, run_id)
    assert tracing.trace_id(chain[("a", 1)]) == f"{request.get_span_context().trace_id:032x}"
    assert tracing.span_id(chain[("a", 1)]) == f"{request.get_span_context().span_id:016x}"

    spans = {(s.attributes["streamtask.stage"], s.attributes["streamtask.attempt"]): s
             for s in _EXPORTER.get_finished_spans() if s.name.endswith(" process")
             and f"{s.context.trace_id:032x}" == tracing.trace_id(chain[("a", 1)])}
    assert set(spans) == {("a", 1), ("b", 1), ("b", 2), ("c", 1)}
    assert spans[("b", 1)].attributes["streamtask.outcome"] == "failed"
    assert spans[("c", 1)].attributes["streamtask.outcome"] == "succeeded"
    # Each execution's parent is the span named in its task; children name their parent's span.
    for (stage, attempt), span in spans.items():
        assert span.parent is not None
        assert f"{span.parent.span_id:016x}" == tracing.span_id(chain[(stage, attempt)])
    assert tracing.span_id(chain[("b", 1)]) == f"{spans[('a', 1)].context.span_id:016x}"
    assert tracing.span_id(chain[("c", 1)]) == f"{spans[('b', 2)].context.span_id:016x}"


def test_streamtask_never_imports_opentelemetry() -> None:
    code = ("import sys, streamtask, streamtask.cli, streamtask.worker, streamtask.ops.metrics; "
            "from streamtask.ops import tracing; tracing.outgoing(None); "
            "assert tracing.execution_spans() is None; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_malformed_parent_context_starts_a_new_trace() -> None:
    child = tracing.child_traceparent("garbage", "1" * 16)
    assert len(child) == 55 and child.startswith("00-") and child.endswith("-01")
    assert tracing.child_traceparent(GIVEN, "1" * 16) == \
        "00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01"
