"""Chaos: a 3-stage pipeline, two workers per stage, ten ``kill -9``s at random and a broker
stop/start in the middle. No result is lost, and the duplicates stay within the bound the
settings give (``ChaosPlan.duplicate_bound``): tight settings (prefetch 100, commit every
100 tasks) keep that bound well below the number of tasks, so it can be exceeded.

The longer variants (``-m soak``, ``make soak``) run 100,000 tasks with 20 kills, in
at-least-once and exactly-once mode; their figures are in benchmarks/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import Chaos, ChaosPlan

pytestmark = pytest.mark.serial  # takes its broker down: run alone (`make test`)

CI = ChaosPlan(tasks=6_000, kills=10, exactly_once=False)
SOAK = [
    # The default settings (prefetch 1000, commit every 2000), as a user runs them.
    ChaosPlan(tasks=100_000, kills=20, exactly_once=False, outage=12.0, kill_every=(2, 5),
              sleep=0.003, concurrency=8, prefetch=0, commit_every=2000),
    ChaosPlan(tasks=100_000, kills=20, exactly_once=True, outage=12.0, kill_every=(2, 5),
              sleep=0.003, concurrency=8, prefetch=0, commit_every=2000),
]


def check(kafka, unique: str, tmp_path: Path, plan: ChaosPlan) -> None:
    if kafka.local is None:
        pytest.skip("the broker is external: the chaos suite must stop and start it")
    result = Chaos(kafka, f"t{unique}", tmp_path, plan).run()
    report = result.describe(plan)
    print(report)
    assert result.done_at_last_kill < plan.tasks, f"the last kill came after the end: {report}"
    assert not result.lost(plan.tasks), report
    bound, formula = plan.duplicate_bound()
    assert bound < plan.tasks, f"a bound that cannot be exceeded: {formula}"
    assert result.duplicates <= bound, report


@pytest.mark.long
@pytest.mark.timeout(300)
def test_chaos_pipeline_loses_nothing_and_bounds_duplicates(
        kafka, unique: str, tmp_path: Path) -> None:
    check(kafka, unique, tmp_path, CI)


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("plan", SOAK, ids=["at-least-once", "exactly-once"])
def test_chaos_soak(kafka, unique: str, tmp_path: Path, plan: ChaosPlan) -> None:
    check(kafka, unique, tmp_path, plan)
