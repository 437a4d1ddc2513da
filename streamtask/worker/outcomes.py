"""Outcomes as data: what a job's result, error or poison turns into.

Pure functions of (job, result or error, now) and the worker's fixed facts (:class:`Context`)
to an :class:`Outcome`: the records that must become durable before the job's offset may
move (children, the next retry level, a dead letter and its compensation task) and the
events that report it. The retry decision itself is :func:`streamtask.retry.decide`. Nothing
here produces, commits or touches the worker's state: the loop emits the events and hands
the records to its delivery, so the wire format and the routing rules live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streamtask import clock
from streamtask.errors import RoutingError, StreamtaskError
from streamtask.events import Event
from streamtask.kafka import headers as dl
from streamtask.model.app import App, Stage
from streamtask.model.envelope import Task, child_task
from streamtask.model.pipeline import Send, next_tasks
from streamtask.ops.tracing import TRACEPARENT, child_traceparent, new_span_id
from streamtask.retry import DeadLettered, RetryLater, decide
from streamtask.worker import joins
from streamtask.worker.job import Job, Outgoing

MAX_HISTORY = 10
Emitted = tuple[Event, dict[str, Any] | None]
"""An event to emit, with its fields; ``None`` for fields no subscriber reads (only counted)."""


class TaskTimeout(StreamtaskError):
    """A task ran past its stage's per-task timeout."""


@dataclass(frozen=True, slots=True)
class Context:
    """What routing an outcome needs to know of the worker; fixed while it runs."""

    app: App
    group: str
    """The consumer group of the stages' inputs (a retry level's is ``<group>.retry``)."""
    retry_topics: frozenset[str]
    worker_id: str
    max_record: int
    """The producer's ``message.max.bytes``: no record above it is ever handed over."""
    chains: dict[str, Stage] = field(default_factory=dict)
    """Stage name -> the one stage its every result goes to, for the plain ``then=``
    chains (see :func:`chains`): resolved once, not per task."""


def chains(app: App) -> dict[str, Stage]:
    """The plain chains of ``app``: stages whose ``then`` names one stage, neither end a
    join (so no fork or join headers), to which each single result goes with the parent's
    key. The worker routes their results without :func:`~streamtask.model.pipeline.next_tasks`."""
    plain = {}
    for stage in app.stages.values():
        if isinstance(stage.then, str) and stage.join is None:
            target = app.get_stage(stage.then)
            if target.join is None:
                plain[stage.name] = target
    return plain


@dataclass(slots=True)
class Outcome:
    """Records to make durable before the job's offset moves, and the events saying so."""

    records: list[Outgoing] = field(default_factory=list)
    events: list[Emitted] = field(default_factory=list)

    def then(self, more: Outcome) -> Outcome:
        return Outcome([*self.records, *more.records], [*self.events, *more.events])


def succeeded(ctx: Context, job: Job, task: Task, result: Any, span: str | None,
              seconds: float, now_ms: int, report: bool = True) -> Outcome:
    """The handler returned ``result`` after ``seconds``: its children, or, when they
    cannot be built or sent, the failure that this is. Without ``report`` (no subscriber
    reads a success's fields) the ``task.succeeded`` event carries none: it is only
    counted, and the hot path builds no dict per task."""
    try:
        target = ctx.chains.get(job.stage.name)
        if target is not None and result is not None and not isinstance(result, _MANY):
            children = [chained_record(ctx.app, target, task, result, span)]
        else:
            children = child_records(ctx.app, job.stage, task, result, span)
    except StreamtaskError as bad_result:  # e.g. a result that fits no schema or route
        return failed(ctx, job, task, bad_result, seconds, now_ms)
    except BaseException as broken:  # a result whose own code fails as it is routed
        unroutable = RoutingError(f"the handler's result cannot be routed: "
                                  f"{dl.describe(broken)}")
        unroutable.__cause__ = broken
        return failed(ctx, job, task, unroutable, seconds, now_ms)
    too_large = oversize(children, ctx.max_record)
    if too_large is not None:  # the producer would refuse it: nothing of it is sent
        reported = Outcome(events=[execution_failed(job, task, RoutingError(too_large),
                                                    seconds, now_ms)])
        return reported.then(unproducible(ctx, job, too_large, now_ms))
    if not report:
        return Outcome(children, [(Event.TASK_SUCCEEDED, None)])
    return Outcome(children, [(Event.TASK_SUCCEEDED, {
        "task_id": task.id, "stage": job.stage.name, "children": len(children),
        "seconds": seconds, "attempt": task.attempt, "run_id": task.run_id,
        "parent_id": task.parent_id, "at": now_ms})])


def failed(ctx: Context, job: Job, task: Task, error: BaseException, seconds: float,
           now_ms: int) -> Outcome:
    """The handler raised ``error`` (or its result cannot go out): the next retry level,
    or the dead-letter queue."""
    reported = Outcome(events=[execution_failed(job, task, error, seconds, now_ms)])
    decision = decide(task.attempt, error, job.stage.retry, now_ms)
    message = dl.describe(error)
    if isinstance(decision, RetryLater):
        out = retry_record(job.stage, task, job.message, decision, error, now_ms)
        if out.size() <= ctx.max_record:
            reported.events.append((Event.TASK_RETRIED, {
                "task_id": task.id, "stage": job.stage.name, "attempt": decision.attempt,
                "topic": out.topic, "due": decision.due, "run_id": task.run_id,
                "parent_id": task.parent_id, "at": now_ms}))
            reported.records.append(out)
            return reported
        decision = DeadLettered("unproducible", f"its retry record of {out.size()} "
                                f"bytes exceeds message.max.bytes={ctx.max_record}")
    if decision.detail:
        message = f"{message} ({decision.detail})"
    return reported.then(dead_letter(ctx, job, dl.Failure(decision.reason, message, error),
                                     task.attempt, now_ms))


def execution_failed(job: Job, task: Task, error: BaseException, seconds: float,
                     now_ms: int) -> Emitted:
    """The event of a failed execution (the handler raised, or its result cannot go out)."""
    event = Event.TASK_TIMED_OUT if isinstance(error, TaskTimeout) else Event.TASK_FAILED
    return event, {"task_id": task.id, "stage": job.stage.name, "attempt": task.attempt,
                   "where": job.where, "error": dl.describe(error), "seconds": seconds,
                   "run_id": task.run_id, "parent_id": task.parent_id, "at": now_ms}


def poisoned(ctx: Context, job: Job, now_ms: int) -> Outcome:
    """A record no handler can run (``job.poison`` says why) goes to the dead-letter queue."""
    assert job.poison is not None
    event, reason, detail = job.poison
    reported = Outcome(events=[(event, {"where": job.where, "error": detail})])
    return reported.then(dead_letter(ctx, job, dl.Failure(f"poison:{reason}", detail), 0,
                                     now_ms))


def unproducible(ctx: Context, job: Job, detail: str, now_ms: int) -> Outcome:
    """The job's records cannot be produced (``detail`` says why): dead-letter it."""
    attempts = job.task.attempt if job.task is not None else 0
    return dead_letter(ctx, job, dl.Failure("unproducible", detail), attempts, now_ms)


def dead_letter(ctx: Context, job: Job, failure: dl.Failure, attempts: int,
                now_ms: int) -> Outcome:
    """The dead letter of ``job`` (and its compensation task, if the stage has one)."""
    group = ctx.group + (".retry" if job.tp[0] in ctx.retry_topics else "")
    out = dead_letter_record(job.stage, job.message, failure, group=group,
                             worker=ctx.worker_id, attempts=attempts, now_ms=now_ms,
                             limit=ctx.max_record)
    task = job.task
    outcome = Outcome([out], [(Event.TASK_DEAD_LETTERED, {
        "stage": job.stage.name, "reason": failure.reason,
        "task_id": task.id if task else None, "where": job.where, "error": failure.message,
        "attempt": attempts, "run_id": task.run_id if task else None,
        "parent_id": task.parent_id if task else None, "at": now_ms})])
    if task is None or job.stage.compensate is None:
        return outcome
    compensation = compensation_record(ctx.app, job.stage, task, failure)
    if compensation.size() > ctx.max_record:
        outcome.events.append((Event.RECORD_UNPRODUCIBLE, {
            "stage": job.stage.name, "task_id": task.id, "topic": compensation.topic,
            "error": f"compensation task of {compensation.size()} bytes exceeds "
                     f"message.max.bytes={ctx.max_record}"}))
        return outcome
    outcome.records.append(compensation)
    return outcome


def oversize(records: list[Outgoing], limit: int) -> str | None:
    """What is wrong with the first of ``records`` the producer would refuse."""
    for out in records:
        size = out.size()
        if size > limit:
            return (f"a record of {size} bytes for {out.topic} exceeds "
                    f"message.max.bytes={limit}")
    return None


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
        if nxt.delay is not None:
            out.append(delayed_record(target, child, value, nxt.delay))
        elif target.join is not None:  # every branch of a fork meets on one join partition
            fork_id = joins.fork_of(child.headers, child.run_id)
            out.append(Outgoing(target.topic, value, fork_id, [(joins.FROM_STAGE, stage.name)]))
        else:
            out.append(Outgoing(target.topic, value, child.key or child.id, []))
    return out


def delayed_record(target: Stage, child: Task, value: bytes, delay: float) -> Outgoing:
    """A child held back ``delay`` seconds (:attr:`Send.delay`): on ``target``'s shortest
    retry level at least that long, with the retry headers saying when it is due, as
    :meth:`~streamtask.kafka.producer.TaskProducer.send_later` sends one."""
    level = next((d for d in target.retry.ladder() if d >= delay), None)
    if level is None or target.join is not None:
        raise RoutingError(f"stage {target.name!r} cannot hold a task back {delay:g}s: it "
                           "needs a retry level at least that long (and no join)")
    due = clock.now_ms() + max(round(delay * 1000), 0)
    return Outgoing(target.retry_topic(level), value, child.key or child.id,
                    [(dl.RETRY_ATTEMPTS, dl.int32(child.attempt)), (dl.RETRY_DUE, dl.int64(due))])


_MANY = (list, tuple, Send)
"""Results that are not one payload for a plain chain's next stage (see next_tasks)."""


def chained_record(app: App, target: Stage, parent: Task, result: Any,
                   span: str | None = None) -> Outgoing:
    """The child of a plain chain (``target`` from :func:`chains`): what
    :func:`child_records` builds for one result there, without resolving the route again."""
    headers = parent.headers
    trace = headers.get(TRACEPARENT)
    if trace is not None:
        headers = {**headers, TRACEPARENT: child_traceparent(trace, span or new_span_id())}
    child = child_task(target.name, result, parent, headers)
    return Outgoing(target.topic, app.codec.encode(child), child.key or child.id, [])


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
