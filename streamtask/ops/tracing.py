"""W3C trace context on every task, and a span per execution when OpenTelemetry is installed.

A task carries ``traceparent`` (and ``tracestate`` when there is one) in its envelope
headers, so the context travels with the task through retry levels, dead-letter queues and
replays untouched. :func:`outgoing` gives a task being sent the current OpenTelemetry span's
context, or starts a new trace. A child task keeps its parent's trace id and names the span
of the execution that produced it as its parent span; a retry is the same record again, so
each attempt's span is a sibling under the same sender span.

streamtask never imports OpenTelemetry: without it, the worker only writes a fresh span id
into each child's ``traceparent``. Where the application uses it (``opentelemetry-api``
imported, a tracer provider configured before the worker is created), the worker records
one CONSUMER span per execution (stage, attempt, partition, outcome), created after the
handler returned with its measured start and end times, on the worker loop's thread; spans
the handler opens itself are not nested under it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from random import getrandbits
from typing import Any

from streamtask.kafka.headers import describe

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


def otel_trace() -> Any:
    """The ``opentelemetry.trace`` module if the application imported it, else None.

    streamtask never imports OpenTelemetry itself: a current span or a configured tracer
    provider can only exist where the application imported it already. (Importing it lazily
    from a send also raced with librdkafka's threads inside CPython's import locks.)
    """
    return sys.modules.get("opentelemetry.trace")


def outgoing(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers for a task being sent: the caller's own ``traceparent`` if it gave one, else
    the current OpenTelemetry span's context (when there is one), else a new trace."""
    out = dict(headers) if headers else {}
    if TRACEPARENT not in out:
        otel = otel_trace()
        context = otel.get_current_span().get_span_context() if otel is not None else None
        if context is not None and context.is_valid:
            out[TRACEPARENT] = (f"00-{context.trace_id:032x}-{context.span_id:016x}-"
                                f"{int(context.trace_flags):02x}")
            if context.trace_state:
                out[TRACESTATE] = context.trace_state.to_header()
        else:
            out[TRACEPARENT] = new_traceparent()
    return out


class ExecutionSpans:
    """One OpenTelemetry span per execution (built only where OpenTelemetry is in use)."""

    def __init__(self, otel: Any) -> None:
        self._trace = otel
        self._tracer = otel.get_tracer("streamtask")

    def _parent(self, headers: Mapping[str, str]) -> Any:
        """The context naming the task's ``traceparent`` span as the remote parent."""
        traceparent = headers.get(TRACEPARENT, "")
        if len(traceparent) != _LENGTH:
            return None
        try:
            context = self._trace.SpanContext(
                trace_id=int(trace_id(traceparent), 16), span_id=int(span_id(traceparent), 16),
                is_remote=True, trace_flags=self._trace.TraceFlags(int(traceparent[53:], 16)))
        except ValueError:
            return None
        return self._trace.set_span_in_context(self._trace.NonRecordingSpan(context))

    def executed(self, headers: Mapping[str, str], stage: str, attempt: int, where: str,
                 seconds: float, error: BaseException | None) -> str:
        """Record the execution's span; returns its span id (for the children's parent)."""
        end = time.time_ns()
        span = self._tracer.start_span(
            f"{stage} process", context=self._parent(headers),
            kind=self._trace.SpanKind.CONSUMER, start_time=end - int(seconds * 1e9),
            attributes={"streamtask.stage": stage, "streamtask.attempt": attempt,
                        "streamtask.partition": where,
                        "streamtask.outcome": _outcome(error)})
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR,
                                               describe(error)[:200]))
        span.end(end_time=end)
        context = span.get_span_context()
        own = f"{context.span_id:016x}"
        if not context.is_valid or own == span_id(headers.get(TRACEPARENT, "")):
            return new_span_id()  # a no-op span echoes its parent
        return own


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "succeeded"
    return "timed_out" if type(error).__name__ == "TaskTimeout" else "failed"


def execution_spans() -> ExecutionSpans | None:
    """Span recording for a worker, or None when the application does not use OpenTelemetry
    or configured no tracer provider yet (spans would go nowhere, at ~10 µs each)."""
    otel = otel_trace()
    if otel is None:
        return None
    provider = otel.get_tracer_provider()
    if isinstance(provider, otel.ProxyTracerProvider | otel.NoOpTracerProvider):
        return None
    return ExecutionSpans(otel)
