"""Master data in every topology worker, whatever partitions the group hands it.

Each worker follows every partition of the compacted `ref.*` topics itself
(`backbone.streams.broadcast.BroadcastTable`) and keeps the latest event per key here. Reference events
also reach the project books inside the transaction, as book commands carrying their payload, so a
book never re-prices with master data older than the event that asked it to. A key lives in one
partition, so its offsets order its versions: an older event never overwrites a newer one, whichever
way it arrives (the broadcast table or a book command).

The store also counts its changes (`generation`), so the books stage can tell that a master-data book
command asks for nothing new: once a partition's books are watched (`watch`), the store notes the
generation at which each key's current event was applied (`applied_at`).
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from confluent_kafka import Message

from backbone.domain.reference import ReferenceData, ReferenceEvent
from backbone.kafka.serde import DecodeError, SerdeCache
from backbone.kafka.topics import Topic
from backbone.streams.loop import where
from topology.messages import Position

log = structlog.get_logger(__name__)


class ReferenceStore:
    """`ReferenceData` plus the position of each key's latest event (newer positions win)."""

    def __init__(self) -> None:
        self.data = ReferenceData()
        self._offsets: dict[str, dict[str, int]] = {}
        """Topic -> key -> offset of its latest event: one dict per topic, keyed by the very key string
        `ReferenceData` files the event under (a tuple key per event cost ~110 bytes more)."""
        self.generation = 0
        """How many events have been applied: every apply makes the table one generation newer."""
        self._applied_at: dict[tuple[str, str], int] | None = None
        """(topic, key) -> the generation its current event was applied at, for events applied once
        watched; every other key's event was applied before anything watched (generation 0)."""

    def apply(self, event: ReferenceEvent, position: Position) -> bool:
        """Apply `event` unless a newer one for its key is already applied; True when applied."""
        offsets = self._offsets.get(position.topic)
        if offsets is None:
            offsets = self._offsets[position.topic] = {}
        if offsets.get(event.key, -1) >= position.offset:
            return False
        key = self.data.apply(event)
        offsets[key] = position.offset
        self.generation += 1
        if self._applied_at is not None:
            self._applied_at[(position.topic, key)] = self.generation
        return True

    def holds(self, topic: str, key: str, offset: int) -> bool:
        """Whether the event of `key` read at `offset` of `topic`, or a newer one, is applied (so `apply`
        of that event would change nothing)."""
        offsets = self._offsets.get(topic)
        return offsets is not None and offsets.get(key, -1) >= offset

    def watch(self) -> int:
        """The current generation, noting from now on the generation at which each key changes.

        Nothing is noted before the first call, so a worker's initial load of master data costs no
        memory for it; after it, one entry per key that changes."""
        if self._applied_at is None:
            self._applied_at = {}
        return self.generation

    def applied_at(self, topic: str, key: str) -> int:
        """The generation at which `key`'s current event (from `topic`) was applied; 0 when before `watch`."""
        return 0 if self._applied_at is None else self._applied_at.get((topic, key), 0)


class ReferenceFollower:
    """Applies each broadcast reference record to a `ReferenceStore` (the `BroadcastTable`'s `apply`)."""

    def __init__(self, store: ReferenceStore, serdes: SerdeCache, topics: Mapping[str, Topic]) -> None:
        self.store = store
        self.serdes = serdes
        self.topics = topics

    def __call__(self, message: Message) -> None:
        if message.value() is None:
            return  # a tombstone: compaction's business; the key's last event stays known
        try:
            event = self.serdes.for_topic(self.topics[where(message)[0]]).decode(message)
        except DecodeError as error:
            # the group's reference stage dead-letters it; every worker need not
            log.warning("undecodable reference record skipped", error=str(error))
            return
        self.store.apply(event, position_of(message))  # type: ignore[arg-type]


def position_of(message: Message) -> Position:
    topic, partition, offset = where(message)
    return Position(topic=topic, partition=partition, offset=offset)
