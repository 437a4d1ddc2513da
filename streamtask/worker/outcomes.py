"""Building the records a failed task turns into: its next retry level, or a dead letter.

The worker decides *when* (after the handler's outcome, with :func:`streamtask.retry.decide`)
and produces; this module decides *what* goes on the wire, so the format lives in one place.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamtask import deadletter as dl
from streamtask.app import App, Stage
from streamtask.envelope import Task
from streamtask.pipeline import next_tasks
from streamtask.retry import RetryLater
from streamtask.tracing import TRACEPARENT, child_traceparent, new_span_id
from streamtask.worker import joins
from streamtask.worker.job import Outgoing

MAX_HISTORY = 10


class Rewritten:
    """A received record standing for another value: a completed join's merged task.

    A join runs its handler on the merged branch results, but the record it received is
    only the last branch's. Its retry record and dead letter must carry the merged task
    (the changelog entry that held the other branches is deleted with them), so the worker
    routes the outcome of a joined task from this record: the merged task's envelope, keyed
    by the fork, at the last branch's coordinates, marked as already joined.
    """

    def __init__(self, message: Any, value: bytes, key: str) -> None:
        self._message = message
        self._value = value
        self._key = key
        self._headers = [*((k, v) for k, v in message.headers() or ()
                           if k != joins.FROM_STAGE), (joins.MERGED, b"1")]

    def value(self) -> bytes:
        return self._value

    def key(self) -> str:
        return self._key

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self._headers

    def topic(self) -> str:
        return str(self._message.topic())

    def partition(self) -> int:
        return int(self._message.partition())

    def offset(self) -> int:
        return int(self._message.offset())

    def timestamp(self) -> tuple[int, int]:
        kind, at = self._message.timestamp()
        return int(kind), int(at)


def error_history(headers: Any, attempt: int, error: BaseException | str, now_ms: int) -> str:
    """The task's error history (JSON, newest last, bounded) with this failure appended."""
    raw = dl.find(headers, dl.ERRORS)
    try:
        history = orjson.loads(raw) if raw else []
    except orjson.JSONDecodeError:
        history = []
    if not isinstance(history, list):  # valid JSON of another shape: not ours, start afresh
        history = []
    kind = type(error).__name__ if isinstance(error, BaseException) else "poison"
    history.append({"attempt": attempt, "error": kind, "message": dl.safe_str(error)[:500],
                    "at": now_ms})
    return orjson.dumps(history[-MAX_HISTORY:]).decode()


def due_time(headers: Any) -> int | None:
    """When a record on a retry level may run (epoch ms), from its header."""
    return dl.read_int(dl.find(headers, dl.RETRY_DUE))


def retry_record(stage: Stage, task: Task, message: Any, decision: RetryLater,
                 error: BaseException, now_ms: int) -> Outgoing:
    """The task's record, unchanged, for its retry level: one attempt later and due at
    ``decision.due``, which travel in Spring's retry headers (as Spring does it) rather than
    in a re-encoded envelope. Re-encoding cost about a third of a retry's CPU (measured);
    readers take the attempt and due time from these headers (:func:`retry_overrides`)."""
    headers = message.headers()
    original_ts = dl.read_int(dl.find(headers, dl.RETRY_ORIGINAL_TIMESTAMP)) or \
        message.timestamp()[1]
    out = [
        *dl.carried(headers),
        (dl.RETRY_ATTEMPTS, dl.int32(decision.attempt)),
        (dl.RETRY_DUE, dl.int64(decision.due)),
        (dl.RETRY_ORIGINAL_TIMESTAMP, dl.int64(original_ts)),
        (dl.ERRORS, error_history(headers, task.attempt, error, now_ms).encode()),
    ]
    return Outgoing(stage.retry_topic(decision.level), message.value(), message.key(), out)


def retry_overrides(headers: Any) -> dict[str, int | None]:
    """The attempt and due time a retry record's headers give its task (nothing if none)."""
    return {"attempt": dl.read_int(dl.find(headers, dl.RETRY_ATTEMPTS)),
            "not_before": dl.read_int(dl.find(headers, dl.RETRY_DUE))}


def dead_letter_record(stage: Stage, message: Any, failure: dl.Failure, *, group: str,
                       worker: str, attempts: int, now_ms: int, limit: int) -> Outgoing:
    """The original record, untouched, with headers saying where it failed and why; what
    would take it past ``limit`` bytes is dropped, as the headers say (:func:`dl.fitted`)."""
    headers = message.headers()
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    origin = dl.Origin(topic, partition, offset, message.timestamp()[1], group)
    history = error_history(headers, attempts, failure.error or failure.message, now_ms)
    out = dl.carried(headers) + dl.dead_letter_headers(
        origin, failure, stage=stage.name, worker=worker, attempts=attempts, now_ms=now_ms,
        errors=history)
    for name in (dl.RETRY_DUE, dl.RETRY_ORIGINAL_TIMESTAMP):  # the last retry's, if any
        value = dl.find(headers, name)
        if value is not None:
            out.append((name, value))
    value, key, out = dl.fitted(message.value(), message.key(), out, limit)
    return Outgoing(stage.dlq_topic, value, key, out)


def child_records(app: App, stage: Stage, parent: Task, result: Any,
                  span: str | None = None) -> list[Outgoing]:
    """The next tasks of ``parent``'s run, built (and schema-checked) before any is sent.

    Children carry the run id, the pipeline version and the headers of their parent, whose
    id becomes their parent id. They keep the parent's key, so a key's tasks stay in order
    down the pipeline. A traced parent's children keep its trace, under ``span`` (the
    parent's execution span; a fresh span id if not given).
    """
    out = []
    headers = parent.headers  # Task.new copies it
    if stage.join is not None:
        headers = joins.joined(headers)
    if isinstance(stage.then, tuple):
        headers = joins.forked(headers, parent.id)
    trace = headers.get(TRACEPARENT)
    if trace is not None:
        headers = {**headers, TRACEPARENT: child_traceparent(trace, span or new_span_id())}
    for nxt in next_tasks(stage.then, result):
        target = app.get_stage(nxt.stage)
        key = nxt.key if nxt.key is not None else parent.key
        child = Task.new(target.name, nxt.payload, key=key, run_id=parent.run_id,
                         parent_id=parent.id, headers=headers,
                         pipeline_version=parent.pipeline_version)
        value = app.codec.encode(child)
        if target.join is not None:  # every branch of a fork meets on one join partition
            fork_id = joins.fork_of(child.headers, child.run_id)
            out.append(Outgoing(target.topic, value, fork_id, [(joins.FROM_STAGE, stage.name)]))
        else:
            out.append(Outgoing(target.topic, value, child.key or child.id, []))
    return out


def compensation_record(app: App, stage: Stage, task: Task, failure: dl.Failure) -> Outgoing:
    """The dead-lettered task, handed to the stage's compensating stage (saga style).

    The compensating stage receives the same payload; why it is compensating travels in the
    task's headers (``compensates``, ``reason``, ``error``).
    """
    target = app.get_stage(stage.compensate or "")
    headers = {**task.headers, "compensates": stage.name, "reason": failure.reason,
               "error": failure.message[:1000]}
    child = Task.new(target.name, task.payload, key=task.key, run_id=task.run_id,
                     parent_id=task.id, headers=headers, pipeline_version=task.pipeline_version)
    return Outgoing(target.topic, app.codec.encode(child), child.key or child.id, [])
