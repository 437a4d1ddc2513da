"""Where results go, as a pure function: chains, fan-out, forks, switches and Send."""

from __future__ import annotations

import pytest

from streamtask.errors import RoutingError
from streamtask.model.pipeline import NextTask, Send, Switch, next_tasks, targets_of

SWITCH = Switch("kind", {"photo": "resize", "video": "transcode"}, default="store")


@pytest.mark.parametrize(("then", "result", "expected"), [
    ("b", None, []),
    ("b", {"x": 1}, [NextTask("b", {"x": 1})]),
    ("b", [1, 2, 3], [NextTask("b", 1), NextTask("b", 2), NextTask("b", 3)]),
    (None, {"x": 1}, []),
    (("email", "sms"), {"o": 1}, [NextTask("email", {"o": 1}), NextTask("sms", {"o": 1})]),
    (SWITCH, {"kind": "video"}, [NextTask("transcode", {"kind": "video"})]),
    (SWITCH, {"kind": "pdf"}, [NextTask("store", {"kind": "pdf"})]),
    (None, Send("audit", {"a": 1}, key="k"), [NextTask("audit", {"a": 1}, "k")]),
    ("b", [Send("c", 1), 2], [NextTask("c", 1), NextTask("b", 2)]),
])
def test_next_tasks(then, result, expected) -> None:
    assert next_tasks(then, result) == expected


def test_switch_without_match_or_default_is_a_routing_error() -> None:
    with pytest.raises(RoutingError, match="no case for kind='pdf'"):
        next_tasks(Switch("kind", {"photo": "resize"}), {"kind": "pdf"})


def test_targets_of() -> None:
    assert targets_of(SWITCH) == ["resize", "transcode", "store"]
    assert targets_of(("a", "b")) == ["a", "b"]
    assert targets_of(None) == []


def test_switch_matches_text_cases_like_conductor() -> None:
    assert next_tasks(Switch("tier", {"1": "gold"}, default="basic"), {"tier": 1}) == [
        NextTask("gold", {"tier": 1})]
