"""``streamtask ui``: a small web console for an app, served by a process that runs no worker.

Pages: the pipeline (its diagram coloured live by ``streamtask status`` verdicts, with
dead-letter counts), dead letters (browse per stage with filters, decoded payload, headers
and error history; replay one, a selection or a filter through ``dlq replay``'s own
machinery), runs (from the execution trail: a run's tree and timeline) and a designer for
Conductor workflow definitions (JSON beside its live diagram, ``pipeline check`` on every
change, tasks edited by clicking them). Needs the ``ui`` extra:
``pip install 'streamtask[ui]'``.
"""

from __future__ import annotations

from streamtask.ui.server import ConsoleSettings, create_app

__all__ = ["ConsoleSettings", "create_app"]
