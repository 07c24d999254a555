"""The registry's log as a list in memory, for unit tests of the HTTP app without Kafka.

It keeps `KafkaLog`'s contract (backbone/registry/log.py): records are read back in order with their
offsets, `claim()` fences the previous claimant, and a fenced claimant's `append` fails.
"""

from __future__ import annotations

import threading

from backbone.registry.replica import FencedError, SchemaStore
from backbone.registry.store import Record


class MemoryLog:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self._changed = threading.Condition()
        self._epoch = 0
        self._claimed_epoch: int | None = None
        self._cursor = 0

    def ensure_topic(self) -> None:
        pass

    def read(self, timeout: float) -> tuple[list[tuple[int, Record]], int | None]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.records) > self._cursor, timeout)
            fresh = [(self._cursor + i, r) for i, r in enumerate(self.records[self._cursor :])]
            self._cursor = len(self.records)
            return fresh, self._cursor

    def end_offset(self) -> int:
        with self._changed:
            return len(self.records)

    def claim(self) -> None:
        with self._changed:
            self._epoch += 1
            self._claimed_epoch = self._epoch

    def append(self, records: list[Record]) -> int:
        with self._changed:
            if self._claimed_epoch != self._epoch:
                raise FencedError("fenced")
            self.records += records
            self._changed.notify_all()
            return len(self.records)

    def release(self) -> None:
        self._claimed_epoch = None

    def close(self) -> None:
        pass


def leading_store(log: MemoryLog | None = None, url: str = "http://127.0.0.1:1") -> SchemaStore:
    """A started store over a memory log that has claimed the lead (as a single instance would)."""
    store = SchemaStore(log or MemoryLog(), url=url)
    store.start(timeout=5)
    assert store.claim_leadership()
    return store
