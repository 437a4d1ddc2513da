"""Dead-letter headers read back: Spring's binary integers, and streamtask's text ones."""

from __future__ import annotations

from streamtask.kafka import headers as dl


def test_text_counters_are_not_mistaken_for_binary_integers() -> None:
    headers = [(dl.REPLAYS, b"1000"), (dl.DEAD_AT, b"12345678"),
               (dl.RETRY_ATTEMPTS, dl.int32(3)), (dl.ORIGINAL_OFFSET, dl.int64(2**40))]
    record = dl.DeadLetterRecord.from_message("t.dlq", 0, 5, None, b"x", headers)
    assert record.replays == 1000
    assert record.dead_at == 12345678
    assert record.attempts == 3
    assert record.origin.offset == 2**40


def test_a_text_number_past_64_bits_reads_as_absent() -> None:
    """Found by the fuzz test: such a retry header made routing the retry fail (int64)."""
    assert dl.read_int(str(2**63).encode()) is None
    assert dl.read_int(str(-2**63 - 1).encode()) is None
    assert dl.read_int(str(2**63 - 1).encode()) == 2**63 - 1


def test_carried_headers_drop_what_a_retry_or_dead_letter_step_writes() -> None:
    headers = [("traceparent", b"00-abc"), (dl.REASON, b"fatal"), (dl.REPLAYS, b"2")]
    assert dl.carried(headers) == [("traceparent", b"00-abc"), (dl.REPLAYS, b"2")]
