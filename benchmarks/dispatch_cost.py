"""CPU per event of handing events to a detached subscriber (its own thread, a bounded queue)
rather than calling it on the loop's thread, measured in process with a subscriber that does
nothing, so only the hand-over counts (both threads' CPU, best of 5).

    python -m benchmarks.dispatch_cost
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.observe_cost import per_call_us
from streamtask.events import Event, EventBus


def _nothing(_event: Event, _fields: dict[str, Any]) -> None:
    return None


def emit_cost(inline: bool, n: int) -> float:
    """µs of CPU per event emitted to one subscriber that does nothing."""
    bus = EventBus()
    bus.subscribe(_nothing, inline=inline, backlog=n + 1)

    def emit(count: int) -> None:
        for _ in range(count):
            bus.emit(Event.TASK_SUCCEEDED, task_id="t", stage="work", seconds=0.0)
        bus.close(60)  # the subscriber's thread took them all: its CPU counts too

    return per_call_us(emit, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    inline, detached = emit_cost(True, args.events), emit_cost(False, args.events)
    print(f"inline: {inline:.2f} µs CPU per event; detached: {detached:.2f} µs "
          f"(+{detached - inline:.2f} µs for the hand-over)")


if __name__ == "__main__":
    main()
