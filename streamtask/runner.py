"""Where handlers run: a thread pool for plain functions, an event loop for coroutines.

The worker loop owns all Kafka state and never runs user code itself; runners execute
handlers and report each outcome on a queue the loop drains. Python cannot kill a thread, so a
task past its deadline is *abandoned*: the loop records a timeout, and the runner starts a
replacement thread so capacity stays constant while the stuck one finishes on its own.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any

Completion = tuple[object, Any, BaseException | None]
"""(token, result, error) as reported by a runner."""


class ThreadRunner:
    """``size`` threads executing plain handlers."""

    def __init__(self, size: int, completions: queue.SimpleQueue[Completion]) -> None:
        self._completions = completions
        self._jobs: queue.SimpleQueue[tuple[object, Callable[[Any], Any], Any] | None] = \
            queue.SimpleQueue()
        self._current: dict[threading.Thread, object] = {}
        self._retiring: set[threading.Thread] = set()
        self._size = size
        for _ in range(size):
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name="streamtask-handler", daemon=True)
        thread.start()

    def submit(self, token: object, handler: Callable[[Any], Any], task: Any) -> None:
        self._jobs.put((token, handler, task))

    def _work(self) -> None:
        me = threading.current_thread()
        jobs, current, completions = self._jobs, self._current, self._completions
        while True:
            item = jobs.get()
            if item is None:
                return
            token, handler, task = item
            current[me] = token
            try:
                result = handler(task)
                if isinstance(result, Iterator):  # run generator handlers here, not in the loop
                    result = list(result)
                completions.put((token, result, None))
            except BaseException as error:  # user code must never kill the worker
                completions.put((token, None, error))
            current.pop(me, None)
            if me in self._retiring:
                self._retiring.discard(me)
                return

    def abandon(self, token: object) -> None:
        """Give up on ``token``'s handler: its thread retires when it returns; replace it."""
        for thread, running in list(self._current.items()):
            if running is token:
                self._retiring.add(thread)
                self._current.pop(thread, None)
                self._start_thread()
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
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="streamtask-asyncio", daemon=True)
        self._thread.start()

    def submit(self, token: object, handler: Callable[[Any], Awaitable[Any]], task: Any) -> None:
        future = asyncio.run_coroutine_threadsafe(self._run(token, handler, task), self._loop)
        self._futures[token] = future

    async def _run(self, token: object, handler: Callable[[Any], Awaitable[Any]],
                   task: Any) -> None:
        try:
            result = await handler(task)
        except asyncio.CancelledError:
            return  # abandoned after its deadline; the loop already recorded the timeout
        except BaseException as error:
            self._completions.put((token, None, error))
        else:
            self._completions.put((token, result, None))
        finally:
            self._futures.pop(token, None)

    def abandon(self, token: object) -> None:
        future = self._futures.pop(token, None)
        if future is not None:
            future.cancel()

    def shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
