"""The committable position of a partition: lowest unfinished offset, never backwards."""

from streamtask.worker.offsets import PartitionOffsets


def test_position_waits_for_the_lowest_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    for n in (10, 11, 12, 13):
        assert offsets.received(n)
    offsets.finished(12)
    offsets.finished(11)
    assert offsets.to_commit() is None
    offsets.finished(10)
    assert offsets.to_commit() == 13
    offsets.finished(13)
    assert offsets.to_commit() == 14
    assert offsets.unfinished == 0


def test_gaps_in_offsets_are_fine() -> None:
    offsets = PartitionOffsets()
    for n in (3, 7, 20):
        offsets.received(n)
    offsets.finished(7)
    offsets.finished(3)
    assert offsets.to_commit() == 8


def test_redelivered_offsets_are_skipped_and_position_never_goes_back() -> None:
    offsets = PartitionOffsets()
    offsets.received(5)
    offsets.finished(5)
    offsets.committed = offsets.to_commit()
    assert offsets.committed == 6
    assert not offsets.received(5)
    assert offsets.to_commit() is None
    assert offsets.received(6)
    offsets.finished(6)
    assert offsets.to_commit() == 7
