"""The pipeline page's live colours: one ``streamtask status`` loop shared by every viewer.

One thread keeps a :class:`~streamtask.ops.status.Inspector` and takes a sample of every stage
each ``interval`` seconds; each new sample is judged against the one before it, exactly as
``streamtask status --window <interval>`` judges its two looks (healthy, backlog growing,
stuck, no workers). Viewers only read the latest verdicts, so a hundred open pages cost the
broker what one does.
"""

from __future__ import annotations

import logging
from typing import Any

from streamtask.errors import StreamtaskError
from streamtask.model.app import App
from streamtask.ops.status import Inspector, Sample, StageStatus, stage_status
from streamtask.ui.background import Background

log = logging.getLogger("streamtask.ui")


class StatusFeed(Background):
    """The latest status of every stage, refreshed by one background thread."""

    def __init__(self, app: App, interval: float = 5.0) -> None:
        super().__init__("streamtask-ui-status")
        self.app = app
        self.interval = interval
        self.statuses: dict[str, StageStatus] = {}
        self.version = 0
        """Goes up with every new set of verdicts: the live page's cue to push."""
        self.problem: str | None = None

    def _run(self) -> None:
        """Sample until stopped; a failed look is reported and retried, never fatal."""
        inspector: Inspector | None = None
        before: dict[str, Sample] | None = None
        while not self._stop.is_set():
            try:
                inspector = inspector or Inspector(self.app, list(self.app.stages.values()))
                after = inspector.sample()
                if before is not None:
                    self._publish(before, after)
                before = after
                self.problem = None
            except StreamtaskError as exc:
                before = None  # a gap is no window: judge only consecutive looks
                self._failed(str(exc))
            except Exception as exc:  # an unexpected client error: logged, shown, retried
                log.exception("reading the stages' status failed")
                before = None
                self._failed(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)
        if inspector is not None:
            inspector.close()

    def _failed(self, why: str) -> None:
        """Report a failed look (on every page, until a look succeeds again)."""
        self.problem = f"reading the stages' status: {why}"
        log.warning("%s", self.problem)

    def _publish(self, before: dict[str, Sample], after: dict[str, Sample]) -> None:
        self.statuses = {stage.name: stage_status(stage, before[stage.name], after[stage.name])
                         for stage in self.app.stages.values()}
        self.version += 1

    def as_json(self) -> dict[str, dict[str, Any]]:
        """Per stage: the verdict and the figures the pipeline page shows."""
        return {name: {"verdict": s.verdict.value, "reason": s.reason, "lag": s.lag,
                       "due": sum(level.due_now for level in s.retry),
                       "waiting": sum(level.waiting for level in s.retry),
                       "dead": s.dlq_size, "dead_last_hour": s.dlq_last_hour,
                       "workers": len({m.member_id for m in s.members}),
                       "rate": s.committed_per_second}
                for name, s in self.statuses.items()}
