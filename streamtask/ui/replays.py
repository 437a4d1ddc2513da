"""Replays started from the console: ``dlq replay``'s own machinery, run in the background.

A replay can take long (a rate limit, thousands of dead letters), so the page does not wait
for it: each request starts a :class:`~streamtask.ops.deadletters.Replay` on a thread of its own and
the page polls its progress and result. A replay is exactly what ``streamtask dlq replay``
does with the same filters: same loop guard (``max_replays``, then parked), same rate
limit, same resumable consumer group. Two replays with the same group never run at once,
since both would read and commit the same positions.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

from streamtask.errors import ConfigurationError, StreamtaskError
from streamtask.model.app import App
from streamtask.ops import deadletters as dlq

log = logging.getLogger("streamtask.ui")
KEEP_FINISHED = 100
"""Finished replays remembered for their pages; older ones are forgotten (they are logged)."""


@dataclass
class ReplayJob:
    """One replay: what it was asked, how far it got, and how it ended."""

    id: int
    stage: str
    group: str
    asked: str
    started: float = field(default_factory=time.time)
    done: int = 0
    total: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    stopped_at_limit: bool = False
    parked_topic: str = ""
    error: str | None = None
    finished: bool = False

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "stage": self.stage, "group": self.group, "asked": self.asked,
                "started": self.started, "done": self.done, "total": self.total,
                "counts": self.counts,
                "stopped_at_limit": self.stopped_at_limit, "parked_topic": self.parked_topic,
                "error": self.error, "finished": self.finished}


class ReplayJobs:
    """The console's replays, by id; at most one running per replay group."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._jobs: dict[int, ReplayJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, stage: str, options: dlq.ReplayOptions, asked: str) -> ReplayJob:
        """Start replaying; raises ConfigurationError when the same replay is running."""
        target = self.app.get_stage(stage)
        group = dlq.replay_group(target, options)
        with self._lock:
            if any(job.group == group and not job.finished for job in self._jobs.values()):
                raise ConfigurationError(f"a replay with these filters is already running "
                                         f"(consumer group {group}); wait for it to finish")
            job = ReplayJob(next(self._ids), stage, group, asked)
            self._jobs[job.id] = job
            finished = [old for old in self._jobs.values() if old.finished]
            for old in finished[:max(0, len(finished) - KEEP_FINISHED)]:
                del self._jobs[old.id]
        threading.Thread(target=self._run, args=(job, options), daemon=True,
                         name=f"streamtask-ui-replay-{job.id}").start()
        return job

    def get(self, job_id: int) -> ReplayJob | None:
        return self._jobs.get(job_id)

    def _run(self, job: ReplayJob, options: dlq.ReplayOptions) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        replay = dlq.Replay(self.app, self.app.get_stage(job.stage), options,
                            on_progress=progress)
        try:
            summary = replay.run()
        except StreamtaskError as exc:
            job.error = str(exc)
        except Exception as exc:  # shown on the page; the console itself carries on
            log.exception("replay %d failed", job.id)
            job.error = f"{type(exc).__name__}: {exc}"
        else:
            job.counts = {str(outcome): n for outcome, n in summary.counts.items()}
            job.stopped_at_limit = summary.stopped_at_limit
            job.parked_topic = summary.parked_topic
        finally:
            job.finished = True
        log.info("replay %d of stage %s finished: %s", job.id, job.stage,
                 job.error or ", ".join(f"{k} {v}" for k, v in job.counts.items()))
