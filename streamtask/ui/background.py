"""One daemon thread per console reader, started with the server and stopped with it."""

from __future__ import annotations

import threading


class Background:
    """Runs the subclass's ``_run`` on a daemon thread named ``name`` until :meth:`stop`.

    ``_run`` loops while ``self._stop`` is not set and waits on it (``self._stop.wait``)
    between rounds, so that :meth:`stop` ends it at once rather than after a sleep."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end and wait for it (at most 30 s: a Kafka call may be in flight)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        raise NotImplementedError
