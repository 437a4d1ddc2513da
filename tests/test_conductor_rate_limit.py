"""Conductor's rateLimitPerFrequency / rateLimitFrequencyInSeconds (in taskDefs or an inline
taskDefinition) become the stage's cluster-wide rate limit; 0 means none."""

from __future__ import annotations

from streamtask.model.workflow import load_workflow, passthrough_handlers
from streamtask.worker.ratelimit import RateLimit


def test_a_task_definitions_rate_limit_becomes_its_stages() -> None:
    definition = {"name": "limited", "tasks": [
        {"name": "fetch", "taskReferenceName": "fetch_ref",
         "taskDefinition": {"rateLimitPerFrequency": 30, "rateLimitFrequencyInSeconds": 60}},
        {"name": "store", "taskReferenceName": "store_ref"},
        {"name": "free", "taskReferenceName": "free_ref",
         "taskDefinition": {"rateLimitPerFrequency": 0, "rateLimitFrequencyInSeconds": 5}}]}
    app = load_workflow(definition, passthrough_handlers(definition),
                        task_defs=[{"name": "store", "rateLimitPerFrequency": 4}])
    assert app.stages["fetch"].rate_limit == RateLimit(30, per=60.0)
    assert app.stages["store"].rate_limit == RateLimit(4, per=1.0)
    assert app.stages["free"].rate_limit is None
