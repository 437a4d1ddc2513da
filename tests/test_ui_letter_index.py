"""The console's in-memory dead-letter index, without Kafka: newest first whatever order the
partitions deliver in, never more than ``keep`` per stage, counts by error type and lookups
that forget what was dropped, and pages that add up to what matched."""

from __future__ import annotations

import random

from streamtask.kafka.headers import DeadLetterRecord, Origin
from streamtask.model.app import App
from streamtask.ui.letters import LetterIndex


def record(offset: int, partition: int, dead_at: int, error: str) -> DeadLetterRecord:
    return DeadLetterRecord("a.s.dlq", partition, offset, f"k{offset % 7}".encode(), b"",
                            Origin("a.s", partition, offset, 0, "g"), error, "boom", "",
                            "exhausted", "s", "w", dead_at, 1, 0, "[]")


def index(keep: int) -> LetterIndex:
    app = App("a")
    app.stage("s")(lambda task: None)
    return LetterIndex(app, keep=keep)


def fill(letters: LetterIndex, records: list[DeadLetterRecord], batch: int) -> None:
    """As the reader thread adds them: a batch at a time, then trimmed."""
    held = letters._held["s"]
    for start in range(0, len(records), batch):
        for item in records[start:start + batch]:
            held.add(item)
        held.trim()
        assert len(held.records) <= letters.keep


def test_newest_first_bounded_and_counted() -> None:
    rng = random.Random(7)
    # two partitions whose records interleave in time, delivered partition by partition
    records = [record(n, n % 2, 1000 + n * 10 + rng.randint(-15, 15), ("A", "B", "C")[n % 3])
               for n in range(500)]
    delivered = sorted(records, key=lambda r: (r.dlq_partition, r.dlq_offset))
    letters = index(keep=120)
    fill(letters, delivered, batch=37)
    everything = letters.find("s", None, 1, 1000)
    # 120 are kept (the oldest by dead-at time go first), shown newest first
    survivors = {(r.dlq_partition, r.dlq_offset) for r in letters._held["s"].records}
    assert everything.matched == 120 and len(survivors) == 120
    assert [r.dead_at for r in everything.letters] == sorted(
        (r.dead_at for r in everything.letters), reverse=True)
    assert letters.error_types("s") == {
        error: sum(1 for r in records if (r.dlq_partition, r.dlq_offset) in survivors
                   and r.error_type == error) for error in "ABC"}
    dropped = next(r for r in records if (r.dlq_partition, r.dlq_offset) not in survivors)
    assert letters.get("s", dropped.dlq_partition, dropped.dlq_offset) is None
    alive = everything.letters[5]
    assert letters.get("s", alive.dlq_partition, alive.dlq_offset) is alive


def test_pages_of_a_filter_add_up_to_what_matched() -> None:
    letters = index(keep=1000)
    fill(letters, [record(n, 0, 1000 + n, "A" if n % 4 else "B") for n in range(300)], 50)
    wanted = [r for r in letters.find("s", None, 1, 1000).letters if r.error_type == "B"]
    pages = [letters.find("s", lambda r: r.error_type == "B", n, 20) for n in (1, 2, 3, 4)]
    assert [p.matched for p in pages] == [75] * 4 and pages[0].pages == 4
    assert [r for p in pages for r in p.letters] == wanted
    unfiltered = [letters.find("s", None, n, 64).letters for n in range(1, 6)]
    assert [r for page in unfiltered for r in page] == letters.find("s", None, 1, 300).letters
    assert letters.find("s", None, 9, 64).letters == []
