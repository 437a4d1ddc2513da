"""W3C trace context on every task, and a span per execution when OpenTelemetry is installed.

A task carries ``traceparent`` (and ``tracestate`` when there is one) in its envelope
headers, so the context travels with the task through retry levels, dead-letter queues and
replays untouched. :func:`outgoing` gives a task being sent the current OpenTelemetry span's
context, or starts a new trace. A child task keeps its parent's trace id and names the span
of the execution that produced it as its parent span; a retry is the same record again, so
each attempt's span is a sibling under the same sender span.

Without the ``opentelemetry-api`` package nothing of it is imported: the worker only writes a
fresh span id into each child's ``traceparent``. With it, and a tracer provider configured
before the worker is created, the worker records one CONSUMER
span per execution (stage, attempt, partition, outcome), created after the handler returned
with its measured start and end times, on the worker loop's thread; spans the handler opens
itself are not nested under it.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping
from functools import cache
from random import getrandbits

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_LENGTH = 55
"""``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``"""


def new_span_id() -> str:
    """64 random bits (never all zero, which W3C forbids) as 16 hex digits."""
    return f"{getrandbits(64) | 1:016x}"


def new_traceparent() -> str:
    """A new sampled trace whose root span is the sender's."""
    return f"00-{getrandbits(128) | 1:032x}-{new_span_id()}-01"


def trace_id(traceparent: str) -> str:
    return traceparent[3:35]


def span_id(traceparent: str) -> str:
    return traceparent[36:52]


def child_traceparent(parent: str | None, span: str) -> str:
    """The same trace and flags with ``span`` as parent span (a new trace if ``parent`` is
    missing or malformed)."""
    if parent is None or len(parent) != _LENGTH or parent[2] != "-" or parent[35] != "-":
        return new_traceparent()
    return f"{parent[:36]}{span}{parent[52:]}"


@cache
def otel_installed() -> bool:
    """Whether ``opentelemetry-api`` can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("opentelemetry") is not None


def outgoing(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers for a task being sent: the caller's own ``traceparent`` if it gave one, else
    the current OpenTelemetry span's context (when installed and a span is active), else a
    new trace."""
    out = dict(headers) if headers else {}
    if TRACEPARENT not in out:
        if otel_installed():
            from opentelemetry import propagate

            propagate.inject(out)
        if TRACEPARENT not in out:
            out[TRACEPARENT] = new_traceparent()
    return out


class ExecutionSpans:
    """One OpenTelemetry span per execution (only built when OpenTelemetry is installed)."""

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._tracer = trace.get_tracer("streamtask")
        self._propagator = TraceContextTextMapPropagator()

    def executed(self, headers: Mapping[str, str], stage: str, attempt: int, where: str,
                 seconds: float, error: BaseException | None) -> str:
        """Record the execution's span; returns its span id (for the children's parent)."""
        end = time.time_ns()
        parent = self._propagator.extract(dict(headers))
        span = self._tracer.start_span(
            f"{stage} process", context=parent, kind=self._trace.SpanKind.CONSUMER,
            start_time=end - int(seconds * 1e9),
            attributes={"streamtask.stage": stage, "streamtask.attempt": attempt,
                        "streamtask.partition": where,
                        "streamtask.outcome": _outcome(error)})
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)[:200]))
        span.end(end_time=end)
        context = span.get_span_context()
        own = f"{context.span_id:016x}"
        if not context.is_valid or own == span_id(headers.get(TRACEPARENT, "")):
            return new_span_id()  # no SDK configured: the no-op span echoes its parent
        return own


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "succeeded"
    return "timed_out" if type(error).__name__ == "TaskTimeout" else "failed"


def execution_spans() -> ExecutionSpans | None:
    """Span recording for a worker, or None when OpenTelemetry is not installed or no tracer
    provider is configured yet (spans would go nowhere, and cost about 10 µs each)."""
    if not otel_installed():
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return ExecutionSpans()

