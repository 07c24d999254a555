"""Reference data in every topology worker, whatever the partitioning of the books.

Each worker reads the compacted `ref.*` topics itself, from the beginning, outside any consumer group
(no faust GlobalTable, whose recovery loops with several workers), and keeps the latest event per key.
`preload` reads up to the end offsets before the worker starts processing, so a restarted worker never
prices with half its master data; `ReferenceTail` then follows the topics on a thread and hands the
events to the event loop. When a rebalance hands a worker book partitions, it first catches up to the
reference topics' end offsets (`end_offsets`, `caught_up`): the previous owner may have priced with
master data this worker's tail has not read yet, and nothing would re-price those entries later.
A key lives in one partition, so its offsets order its versions: an older event never overwrites a
newer one, however it arrives (tail, or a book command carrying it).
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterable

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from backbone.domain.reference import ReferenceData, ReferenceEvent
from backbone.serde import DecodeError, SerdeCache
from backbone.settings import KafkaSettings
from topology.catalog import CLIENTS, CONTRACTS, PROJECTS, WORKERS, Topic
from topology.messages import Position

REFERENCE_TOPICS: tuple[Topic, ...] = (CLIENTS, PROJECTS, WORKERS, CONTRACTS)
log = structlog.get_logger(__name__)


class ReferenceStore:
    """`ReferenceData` plus the position of each key's latest event (newer positions win)."""

    def __init__(self) -> None:
        self.data = ReferenceData()
        self._offsets: dict[tuple[str, str], int] = {}

    def apply(self, event: ReferenceEvent, position: Position) -> bool:
        """Apply `event` unless a newer one for its key is already applied; True when applied."""
        key = (position.topic, event.key)
        if self._offsets.get(key, -1) >= position.offset:
            return False
        self._offsets[key] = position.offset
        self.data.apply(event)
        return True


class ReferenceTail:
    """Reads every partition of the reference topics without a group; decoded events go to `events`."""

    def __init__(self, kafka: KafkaSettings, serdes: SerdeCache, topics: Iterable[Topic] = REFERENCE_TOPICS) -> None:
        self.topics = {t.name: t for t in topics}
        self.serdes = serdes
        config = kafka.client_config() | {
            "group.id": f"backbone-reference-{uuid.uuid4().hex[:8]}",  # never joins or commits
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
        self.consumer = Consumer(config)
        self._offsets_config = config | {"group.id": f"backbone-reference-ends-{uuid.uuid4().hex[:8]}"}
        self._offsets_reader: Consumer | None = None
        self.events: queue.SimpleQueue[tuple[ReferenceEvent, Position]] = queue.SimpleQueue()
        self._positions: dict[tuple[str, int], int] = {}
        """Next offset to read per partition; written by the reading thread after it queued the event."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def preload(self, store: ReferenceStore, timeout: float = 120.0) -> int:
        """Assign all partitions from the beginning and apply everything up to today's end offsets."""
        ends = self._assign_all()
        loaded = 0
        while ends:
            message = self.consumer.poll(min(timeout, 1.0))
            if message is None or message.error():
                continue
            decoded = self._decode(message)
            if decoded is not None:
                loaded += store.apply(*decoded)
            tp = (message.topic(), message.partition())
            self._positions[tp] = message.offset() + 1
            if message.offset() + 1 >= ends.get(tp, 0):
                ends.pop(tp, None)
        log.info(
            "reference data loaded",
            events=loaded,
            projects=len(store.data.projects),
            workers=len(store.data.workers),
            contracts=len(store.data.contracts),
        )
        return loaded

    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="reference-tail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.consumer.close()
        if self._offsets_reader is not None:
            self._offsets_reader.close()

    def end_offsets(self) -> dict[tuple[str, int], int]:
        """The current end offset of every reference partition (blocking: call it off the event loop)."""
        if self._offsets_reader is None:
            self._offsets_reader = Consumer(self._offsets_config)
        reader, ends = self._offsets_reader, {}
        metadata = reader.list_topics(timeout=30)
        for name in self.topics:
            for partition in metadata.topics[name].partitions if name in metadata.topics else ():
                ends[(name, partition)] = reader.get_watermark_offsets(
                    TopicPartition(name, partition), timeout=30, cached=False
                )[1]
        return ends

    def caught_up(self, ends: dict[tuple[str, int], int]) -> bool:
        """Whether everything before `ends` has been read and queued."""
        return all(self._positions.get(tp, 0) >= end for tp, end in ends.items() if end > 0)

    def _assign_all(self) -> dict[tuple[str, int], int]:
        partitions, ends = [], {}
        metadata = self.consumer.list_topics(timeout=30)
        for name in self.topics:
            for partition in metadata.topics[name].partitions if name in metadata.topics else ():
                low, high = self.consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=30)
                partitions.append(TopicPartition(name, partition, OFFSET_BEGINNING))
                if high > low:
                    ends[(name, partition)] = high
        self.consumer.assign(partitions)
        return ends

    def _follow(self) -> None:
        while not self._stop.is_set():
            message = self.consumer.poll(0.2)
            if message is None or message.error():
                continue
            decoded = self._decode(message)
            if decoded is not None:
                self.events.put(decoded)
            self._positions[(message.topic(), message.partition())] = message.offset() + 1

    def _decode(self, message) -> tuple[ReferenceEvent, Position] | None:  # type: ignore[no-untyped-def]
        if message.value() is None:
            return None  # a tombstone: compaction's business; the key's last event stays known
        try:
            event = self.serdes.for_topic(self.topics[message.topic()]).decode(message)
        except DecodeError as error:
            # the group-consumed reference agent dead-letters it; every worker need not
            log.warning("undecodable reference record skipped", error=str(error))
            return None
        return event, Position(topic=message.topic(), partition=message.partition(), offset=message.offset())  # type: ignore[return-value]
