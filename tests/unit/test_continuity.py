"""Every offset of a partition processed once and in order, whatever the fetcher drops (`topology.continuity`)."""

from __future__ import annotations

from mode.utils.queues import FlowControlEvent

from topology.continuity import Continuity, Verdict
from topology.guard import NeverFullQueue

TP = ("entry-inputs", 4)


def test_the_committed_offset_is_where_processing_starts() -> None:
    continuity = Continuity()
    continuity.start(TP, 83)
    assert continuity.verdict(TP, 83) is Verdict.PROCESS
    assert continuity.committable(TP, committed=83) is None  # nothing processed yet: no commit


def test_a_dropped_record_is_a_hole_and_nothing_past_it_is_committed() -> None:
    """faust dropped offset 84 and handed over 85: 84 must be read before 85, and never committed past."""
    continuity = Continuity()
    continuity.start(TP, 83)
    continuity.done(TP, 83)
    assert continuity.verdict(TP, 85) is Verdict.HOLE
    assert continuity.next_offset(TP) == 84
    assert continuity.committable(TP, committed=83) == 84


def test_records_below_the_next_offset_are_redeliveries() -> None:
    continuity = Continuity()
    continuity.start(TP, 10)
    for offset in (10, 11, 12):
        assert continuity.verdict(TP, offset) is Verdict.PROCESS
        continuity.done(TP, offset)
    assert continuity.verdict(TP, 11) is Verdict.REDELIVERED
    assert continuity.committable(TP, committed=10) == 13
    assert continuity.committable(TP, committed=13) is None


def test_after_a_hole_is_filled_processing_goes_on_from_the_held_record() -> None:
    continuity = Continuity()
    continuity.start(TP, 0)
    assert continuity.verdict(TP, 3) is Verdict.HOLE
    for missed in (0, 2):  # offset 1 was a transaction marker: a natural hole
        continuity.done(TP, missed)
    continuity.done(TP, 3)
    assert continuity.verdict(TP, 4) is Verdict.PROCESS
    assert continuity.committable(TP, committed=None) == 4


def test_a_rebalance_forgets_every_partition() -> None:
    continuity = Continuity()
    continuity.start(TP, 5)
    continuity.done(TP, 5)
    continuity.forget()
    assert continuity.next_offset(TP) is None
    continuity.start(TP, 2)  # the committed offset the new assignment seeks to
    assert continuity.verdict(TP, 2) is Verdict.PROCESS


def test_a_stream_queue_never_refuses_a_record_but_still_throttles_the_partition() -> None:
    """faust's conductor drops a record handed to a full queue: ours takes it and signals pressure instead."""
    throttled: list[str] = []

    def throttle() -> None:
        throttled.append("tp")

    def release() -> None:
        throttled.append("released")

    queue = NeverFullQueue(maxsize=10, flow_control=FlowControlEvent(), clear_on_resume=False)
    for record in range(15):
        assert not queue.full()
        queue.put_nowait_enhanced(record, on_pressure_high=throttle, on_pressure_drop=release)
    assert queue.qsize() == 15
    assert throttled == ["tp"]  # once past 80 % of maxsize: faust stops fetching the partition
    while queue.qsize() > 1:
        queue.get_nowait()
    assert queue.get_nowait() == 14  # every record delivered
    assert throttled == ["tp", "released"]
