"""Helpers for tests that run one ``streamtask worker`` process over many stages of
``tests.apps.stages_app`` (see that module for its stages and log)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from streamtask.kafka.topics import ensure
from tests.helpers import REPO_ROOT, WorkerProcess, load_app, wait_until

STAGES_SOURCE = REPO_ROOT / "tests" / "apps" / "stages_app.py"
STAGES_REF = "tests.apps.stages_app:app"


@dataclass(frozen=True)
class Ran:
    """One line of the app's log: ``stage`` ran task ``n`` in process ``pid``."""

    stage: str
    n: int
    pid: int


class StagesRun:
    """One test's stages app: its topics, tasks, worker processes (killed on exit) and log."""

    def __init__(self, bootstrap: str, name: str, tmp_path: Path, **env: str) -> None:
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.log = tmp_path / "ran.log"
        self.gate = tmp_path / "gate"
        self.env = {**os.environ, "STAGES_APP": name, "STAGES_LOG": str(self.log),
                    "STAGES_GATE": str(self.gate), "STREAMTASK_BOOTSTRAP": bootstrap,
                    "PYTHONUNBUFFERED": "1", **env}
        self.workers: list[WorkerProcess] = []
        self.app = load_app(STAGES_SOURCE, f"stages_{id(self)}", self.env, "STAGES_")
        ensure(self.app)

    def send(self, stage: str, count: int, start: int = 0) -> None:
        with self.app.producer() as producer:
            producer.send_many(stage, ({"n": i} for i in range(start, start + count)))

    def start_worker(self, *options: str, env: dict[str, str] | None = None) -> WorkerProcess:
        """Start ``streamtask worker tests.apps.stages_app:app OPTIONS``."""
        args = [sys.executable, "-m", "streamtask", "worker", STAGES_REF,
                "--bootstrap", self.bootstrap, *options]
        worker = WorkerProcess(args, {**self.env, **(env or {})},
                               self.tmp_path / f"worker-{len(self.workers)}.out")
        self.workers.append(worker)
        return worker

    def ran(self) -> list[Ran]:
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines(keepends=True):
            fields = line.split()
            if line.endswith("\n") and len(fields) == 3:
                out.append(Ran(fields[0], int(fields[1]), int(fields[2])))
        return out

    def count(self, stage: str) -> int:
        """Distinct tasks ``stage`` ran."""
        return len({r.n for r in self.ran() if r.stage == stage})

    def wait_for(self, stage: str, count: int, timeout: float = 90.0,
                 watch: list[WorkerProcess] | None = None) -> None:
        """Wait until ``stage`` ran ``count`` distinct tasks; fail at once if a watched
        worker exits meanwhile."""
        def done() -> bool:
            for worker in watch or ():
                if not worker.running():
                    raise AssertionError(f"worker pid {worker.pid} exited\n{worker.describe()}")
            return self.count(stage) >= count

        wait_until(done, timeout, f"{stage} ran {count} tasks",
                   lambda: f"{self.summary()}\n{self.describe_workers()}", interval=0.05)

    def summary(self) -> str:
        by_stage = Counter(r.stage for r in self.ran())
        return f"executions per stage: {dict(sorted(by_stage.items()))}"

    def describe_workers(self) -> str:
        return "\n".join(worker.describe() for worker in self.workers)

    def __enter__(self) -> StagesRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for worker in self.workers:
            worker.kill_group()
