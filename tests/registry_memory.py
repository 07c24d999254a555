"""The registry's log as a list in memory, for unit tests of the HTTP app and leadership without Kafka.

`MemoryTopic` is the topic (records, and the writer epoch Kafka's transaction coordinator keeps); each
instance gets a `MemoryLog` on it, with a read position and a claim of its own. It keeps `KafkaLog`'s
contract (backbone/registry/log.py): records are read back in order with their offsets, `claim()`
fences the previous claimant, and a fenced claimant's `append` fails.
"""

from __future__ import annotations

import threading

from backbone.registry.replica import FencedError, SchemaStore
from backbone.registry.store import Record


class MemoryTopic:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.changed = threading.Condition()
        self.epoch = 0


class MemoryLog:
    def __init__(self, topic: MemoryTopic | None = None) -> None:
        self.topic = topic or MemoryTopic()
        self._cursor = 0
        self._claimed: int | None = None

    @property
    def records(self) -> list[Record]:
        return self.topic.records

    def on_same_topic(self) -> MemoryLog:
        """Another instance's handle on this topic."""
        return MemoryLog(self.topic)

    def ensure_topic(self) -> None:
        pass

    def read(self, timeout: float) -> tuple[list[tuple[int, Record]], int | None]:
        topic = self.topic
        with topic.changed:
            topic.changed.wait_for(lambda: len(topic.records) > self._cursor, timeout)
            fresh = [(self._cursor + i, r) for i, r in enumerate(topic.records[self._cursor :])]
            self._cursor = len(topic.records)
            return fresh, self._cursor

    def end_offset(self) -> int:
        with self.topic.changed:
            return len(self.topic.records)

    def claim(self) -> None:
        with self.topic.changed:
            self.topic.epoch += 1
            self._claimed = self.topic.epoch

    def append(self, records: list[Record]) -> int:
        topic = self.topic
        with topic.changed:
            if self._claimed != topic.epoch:
                raise FencedError("fenced by a newer claim")
            topic.records += records
            topic.changed.notify_all()
            return len(topic.records)

    def release(self) -> None:
        self._claimed = None

    def close(self) -> None:
        pass


def leading_store(log: MemoryLog | None = None, url: str = "http://127.0.0.1:1") -> SchemaStore:
    """A started store over a memory log that has claimed the lead (as a single instance would)."""
    store = SchemaStore(log or MemoryLog(), url=url)
    store.start(timeout=5)
    assert store.claim_leadership()
    return store
