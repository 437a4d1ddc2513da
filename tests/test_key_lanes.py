"""Tasks of one key run one at a time in arrival order; other keys do not wait."""

from streamtask.worker.lanes import KeyLanes


def test_same_key_waits_other_keys_start() -> None:
    lanes: KeyLanes[str] = KeyLanes()
    assert lanes.admit("a", "a1")
    assert not lanes.admit("a", "a2")
    assert not lanes.admit("a", "a3")
    assert lanes.admit("b", "b1")
    assert lanes.release("a") == "a2"
    assert lanes.release("a") == "a3"
    assert lanes.release("a") is None
    assert lanes.release("b") is None
    assert len(lanes) == 0


def test_discard_waiting_keeps_the_active_head() -> None:
    lanes: KeyLanes[str] = KeyLanes()
    for item in ("x-old-1", "x-old-2", "x-new-3"):
        lanes.admit("x", item)
    removed = lanes.discard_waiting(lambda item: "new" in item)
    assert removed == ["x-old-2"]
    assert lanes.release("x") == "x-new-3"
