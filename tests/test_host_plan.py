"""Which Workers a process runs for a set of stages: one per (consumer group, delivery
mode), in declaration order; repeated names count once; an unknown name is refused."""

from __future__ import annotations

import pytest

from streamtask import App, ConfigurationError, KafkaSettings, Stage
from streamtask.worker.host import StageHost, plan


def app() -> App:
    app = App("plan", kafka=KafkaSettings("127.0.0.1:9"))
    for name in ("a", "b"):
        app.stage(name)(lambda task: None)
    app.stage("c", group="plan.shared")(lambda task: None)
    app.stage("d", group="plan.shared")(lambda task: None)
    app.stage("e", group="plan.shared", exactly_once=True)(lambda task: None)
    return app


def names(groups: list[list[Stage]]) -> list[list[str]]:
    return [[stage.name for stage in group] for group in groups]


def test_one_worker_per_group_and_mode() -> None:
    assert names(plan(app())) == [["a"], ["b"], ["c", "d"], ["e"]]
    host = StageHost(app())
    assert [[s.name for s in w.stages] for w in host.workers] == [["a"], ["b"], ["c", "d"],
                                                                  ["e"]]


def test_chosen_stages_repeated_names_count_once() -> None:
    assert names(plan(app(), ["d", "a", "d", "c"])) == [["d", "c"], ["a"]]


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"has no stage 'x' \(stages: a, b, c, d, e\)"):
        plan(app(), ["a", "x"])


def test_an_app_without_stages_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="declares no stages"):
        plan(App("empty", kafka=KafkaSettings("127.0.0.1:9")))
