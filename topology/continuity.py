"""Every offset of a source partition processed, in order, whatever faust's fetcher drops.

faust-streaming 0.15.3 can lose records. Its conductor drops a fetched record when the stream's queue
is full (it only counts it in a sensor; `topology.guard.NeverFullQueue` stops that), its fetcher moves its read
position past a record whose hand-over it abandoned when the flow was suspended, and its streams skip
records fetched in an earlier generation. Nothing fetches those records again until a rebalance seeks
back, and faust's commit steps over a one-record hole at the head of its acknowledged offsets. Seen here as a
revision or an approval never billed after `kill -9` and a restart (`test_kill_9_and_restart_bills_the_same`).

`Continuity` keeps, per source partition, the next offset a stage has not yet processed. A record
below it was already processed (a re-delivery) and is skipped. A record above it leaves a hole. The
stage reads the hole's records itself (`HoleReader`) and processes them first. A hole can also be
natural: transaction markers and compaction leave offsets without records. The worker commits
`next_offset` instead of faust's own guess, so a restart never starts past an unprocessed record.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable


class Verdict(enum.Enum):
    PROCESS = "process"
    REDELIVERED = "redelivered"
    HOLE = "hole"


class Continuity:
    """The next unprocessed offset of each source partition of this worker (pure bookkeeping)."""

    def __init__(self) -> None:
        self._next: dict[Hashable, int] = {}

    def partitions(self) -> list[Hashable]:
        return list(self._next)

    def next_offset(self, tp: Hashable) -> int | None:
        return self._next.get(tp)

    def start(self, tp: Hashable, offset: int) -> None:
        """Where the partition's processing starts: the committed offset after an assignment."""
        self._next.setdefault(tp, offset)

    def verdict(self, tp: Hashable, offset: int) -> Verdict:
        """What to do with the record at `offset` (`start` must have been called for `tp`)."""
        expected = self._next[tp]
        if offset < expected:
            return Verdict.REDELIVERED
        return Verdict.PROCESS if offset == expected else Verdict.HOLE

    def done(self, tp: Hashable, offset: int) -> None:
        """The record at `offset` (and every offset before it) is processed and durable."""
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def committable(self, tp: Hashable, committed: int | None) -> int | None:
        """The offset to commit for `tp`, if it moved past `committed`."""
        offset = self._next.get(tp)
        if offset is None or (committed is not None and offset <= committed):
            return None
        return offset

    def forget(self) -> None:
        """After a rebalance: faust seeks every partition back to its committed offset."""
        self._next.clear()
