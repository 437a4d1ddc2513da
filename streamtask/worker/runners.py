"""Where handlers run: a thread pool for plain functions, an event loop for coroutines.

The worker loop owns all Kafka state and never runs user code itself; runners execute
handlers and report each outcome on a queue the loop drains. Python cannot kill a thread, so a
task past its deadline is *abandoned*: the loop records a timeout, and the runner starts a
replacement thread so capacity stays constant while the stuck one finishes on its own. At
most ``size`` abandoned threads get a replacement at a time: beyond that, capacity shrinks
until one of them returns, so hung handlers cannot pile up threads without bound. An
abandoned handler still reports its outcome when it ends, which tells the loop that its key
is free again (the loop ignores the outcome itself).

The thread pool takes every task the loop may start at once and its threads pull them one by
one: the thread count is the concurrency limit. Handing tasks over one at a time, each only
when a thread is free, would wake a thread (and move the interpreter lock) per task, which
cost about as much CPU as the rest of the loop's work on a task together (measured with
no-op handlers).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol

log = logging.getLogger("streamtask.worker")
Completion = tuple[object, Any, BaseException | None, float]
"""(token, result, error, seconds the handler ran) as reported by a runner."""

_NOT_ITERATORS = frozenset({type(None), dict, list, tuple, str, bytes, int, float, bool})
"""Common results, answered without the (slower) ``Iterator`` ABC check."""


class Runner(Protocol):
    """Where handlers execute; outcomes come back as :data:`Completion` on the loop's queue."""

    def submit(self, token: object, handler: Callable[[Any], Any], task: Any) -> None:
        """Run ``handler(task)``; its completion carries ``token``."""

    def withdraw(self, drop: Callable[[Any], bool]) -> list[Any]:
        """Take back tokens not started yet for which ``drop`` is true."""

    def executing(self) -> list[tuple[Any, float]]:
        """(token, monotonic start time) of every handler running now."""

    def abandon(self, token: object) -> None:
        """Give up on ``token``'s handler (past its deadline); it still reports when it ends."""

    def shutdown(self) -> None:
        """Stop taking work; handlers still running are not waited for."""


class ThreadRunner:
    """``size`` threads executing plain handlers, taking queued tasks in submission order."""

    def __init__(self, size: int, completions: queue.SimpleQueue[Completion]) -> None:
        self._completions = completions
        self._jobs: queue.SimpleQueue[tuple[object, Callable[[Any], Any], Any] | None] = \
            queue.SimpleQueue()
        self._queued: dict[object, None] = {}
        """Submitted tokens no thread has taken yet; taking one and withdrawing it are both a
        single ``dict.pop``, so exactly one of them wins."""
        self._current: dict[threading.Thread, tuple[object, float]] = {}
        self._retiring: set[threading.Thread] = set()
        self._owed = 0
        """Replacements not started because too many abandoned threads are still running."""
        self._lock = threading.Lock()
        self._size = size
        for _ in range(size):
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name="streamtask-handler", daemon=True)
        thread.start()

    def submit(self, token: object, handler: Callable[[Any], Any], task: Any) -> None:
        """Queue a task; it starts as soon as a thread is free."""
        self._queued[token] = None
        self._jobs.put((token, handler, task))

    def withdraw(self, drop: Callable[[Any], bool]) -> list[Any]:
        """Take back queued tasks (not started yet) for which ``drop`` is true."""
        queued = self._queued
        return [token for token in list(queued)
                if drop(token) and queued.pop(token, 0) is None]

    def executing(self) -> list[tuple[Any, float]]:
        """(token, monotonic start time) of every task a thread is running now."""
        return list(self._current.values())

    def _work(self) -> None:
        me = threading.current_thread()
        jobs, queued, current = self._jobs, self._queued, self._current
        completions, monotonic = self._completions, time.monotonic
        while True:
            item = jobs.get()
            if item is None:
                return
            token, handler, task = item
            if queued.pop(token, 0) is not None:
                continue  # withdrawn before it started
            current[me] = (token, started := monotonic())
            try:
                result = handler(task)
                if type(result) not in _NOT_ITERATORS and isinstance(result, Iterator):
                    result = list(result)  # run generator handlers here, not in the loop
                completions.put((token, result, None, monotonic() - started))
            except BaseException as error:  # user code must never kill the worker
                completions.put((token, None, error, monotonic() - started))
            current.pop(me, None)
            if me in self._retiring and self._retired(me):
                return

    def _retired(self, thread: threading.Thread) -> bool:
        """An abandoned thread returned: it exits, or stays as the replacement still owed."""
        with self._lock:
            self._retiring.discard(thread)
            if self._owed > 0:
                self._owed -= 1
                return False
            return True

    def abandon(self, token: object) -> None:
        """Give up on ``token``'s handler: its thread retires when it returns; replace it
        (unless ``size`` abandoned threads already run: then once one of them returns)."""
        for thread, (running, _started) in list(self._current.items()):
            if running is token:
                with self._lock:
                    self._retiring.add(thread)
                    replace = len(self._retiring) <= self._size
                    if not replace:
                        self._owed += 1
                self._current.pop(thread, None)
                if replace:
                    self._start_thread()
                else:
                    log.warning("%d timed-out handlers are still running; the thread pool "
                                "shrinks to %d until one returns", len(self._retiring),
                                self._size - self._owed)
                return

    def shutdown(self) -> None:
        """Let idle threads exit; threads still inside a handler are daemons and die with us."""
        for _ in range(self._size + len(self._retiring)):
            self._jobs.put(None)


class AsyncRunner:
    """One event loop thread running coroutine handlers concurrently."""

    def __init__(self, completions: queue.SimpleQueue[Completion]) -> None:
        self._completions = completions
        self._loop = asyncio.new_event_loop()
        self._futures: dict[object, Future[None]] = {}
        self._started: dict[object, float] = {}
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="streamtask-asyncio", daemon=True)
        self._thread.start()

    def submit(self, token: object, handler: Callable[[Any], Any], task: Any) -> None:
        """Schedule the coroutine ``handler(task)`` on the event loop."""
        self._started[token] = time.monotonic()  # before the coroutine can finish and pop it
        future = asyncio.run_coroutine_threadsafe(self._run(token, handler, task), self._loop)
        self._futures[token] = future
        # The coroutine may have finished (and its cleanup run) before the line above; the
        # callback runs at once then, so a finished coroutine's future is never kept.
        future.add_done_callback(lambda _done: self._futures.pop(token, None))

    def withdraw(self, _drop: Callable[[Any], bool]) -> list[Any]:
        """Nothing waits here: the loop hands over coroutines only up to the limit."""
        return []

    def executing(self) -> list[tuple[Any, float]]:
        """(token, monotonic submit time) of every coroutine in flight."""
        return list(self._started.items())

    async def _run(self, token: object, handler: Callable[[Any], Awaitable[Any]],
                   task: Any) -> None:
        started = time.monotonic()
        try:
            result = await handler(task)
        except BaseException as error:
            # CancelledError included: the handler cancelled itself, or was abandoned past its
            # deadline; either way the loop hears that it ended (it ignores an abandoned one).
            self._completions.put((token, None, error, time.monotonic() - started))
        else:
            self._completions.put((token, result, None, time.monotonic() - started))
        finally:
            self._futures.pop(token, None)
            self._started.pop(token, None)

    def abandon(self, token: object) -> None:
        future = self._futures.pop(token, None)
        self._started.pop(token, None)
        if future is not None:
            future.cancel()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the event loop and close it (an unclosed loop warns when it is collected,
        wherever that happens to be). Coroutines still in flight are dropped with it."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._loop.is_running():
            self._loop.close()
