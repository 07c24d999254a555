"""Master data in every topology worker, whatever partitions the group hands it.

Each worker follows every partition of the compacted `ref.*` topics itself
(`backbone.streams.broadcast.BroadcastTable`) and keeps the latest event per key here. Reference events
also reach the project books inside the transaction, as book commands carrying their payload, so a
book never re-prices with master data older than the event that asked it to. A key lives in one
partition, so its offsets order its versions: an older event never overwrites a newer one, whichever
way it arrives (the broadcast table or a book command).
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

    def apply(self, event: ReferenceEvent, position: Position) -> bool:
        """Apply `event` unless a newer one for its key is already applied; True when applied."""
        offsets = self._offsets.get(position.topic)
        if offsets is None:
            offsets = self._offsets[position.topic] = {}
        if offsets.get(event.key, -1) >= position.offset:
            return False
        offsets[self.data.apply(event)] = position.offset
        return True


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
