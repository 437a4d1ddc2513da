"""Runs P worker processes, restarts any that crash, and stops them all cleanly.

Children are plain ``streamtask worker`` processes (one each), so a child behaves exactly as a
worker started by hand, and runs every stage the command names (:mod:`streamtask.worker.host`); the
supervisor only forwards stop signals and restarts the dead. A child whose stage failed exits
non-zero as a whole (its other stages drain first), so it is restarted with all its stages.

Children stay in the supervisor's process group, so whoever kills the group kills them all;
but Ctrl-C in a terminal signals that whole group, and a child that took the terminal's SIGINT
and then the supervisor's SIGTERM would count two signals and exit at once, undrained. So a
supervised child ignores SIGINT (``SUPERVISED_ENV``) and stops on the supervisor's SIGTERM.
Each child gets its own instance id (``<id>-<index>``, kept across its restarts): exactly-once
workers derive their transactional id from it, and two children sharing one would fence each
other in a loop.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("streamtask.supervisor")
SUPERVISED_ENV = "STREAMTASK_SUPERVISED"
"""Set to 1 in a child's environment: it ignores SIGINT and waits for the forwarded SIGTERM."""


class Supervisor:
    def __init__(self, command: Sequence[str], processes: int, *, grace: float = 40.0,
                 restart_delay: float = 1.0,
                 env_for: Callable[[int], dict[str, str]] = lambda _index: {}) -> None:
        """``env_for(i)``: environment variables for child ``i`` (0-based), which keeps
        its index when it is restarted (its own instance id and metrics port)."""
        self.command = list(command)
        self.env_for = env_for
        self.processes = processes
        self.grace = grace
        self.restart_delay = restart_delay
        self.restarts = 0
        self._children: list[subprocess.Popen[bytes]] = []
        self._stopping = False

    def stop(self) -> None:
        """First call: ask children to drain; second call: kill them at once."""
        if self._stopping:
            for child in self._children:
                child.kill()
        self._stopping = True
        for child in self._children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Supervise until stopped; returns the worst exit code of the final children."""
        self._children = [self._spawn(index) for index in range(self.processes)]
        while not self._stopping:
            codes = [child.poll() for child in self._children]
            if all(code == 0 for code in codes):
                break  # every child finished on purpose (--max-tasks, --idle-timeout)
            for index, code in enumerate(codes):
                if code not in (None, 0):
                    self._restart(index, code)
            time.sleep(0.2)
        return self._wait_all()

    def _restart(self, index: int, code: int) -> None:
        log.warning("worker pid %s exited with %s; restarting", self._children[index].pid, code)
        time.sleep(self.restart_delay)
        if not self._stopping:  # a stop may have come in while we waited
            self.restarts += 1
            self._children[index] = self._spawn(index)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, SUPERVISED_ENV: "1", "STREAMTASK_PROCESSES": "1",
               **self.env_for(index)}
        child = subprocess.Popen(self.command, env=env)
        log.info("started worker pid %s", child.pid)
        return child

    def _wait_all(self) -> int:
        deadline = time.monotonic() + self.grace
        for child in self._children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        codes = [child.returncode for child in self._children]
        failed = [code if code > 0 else 128 - code for code in codes if code]
        return max(failed, default=0)
