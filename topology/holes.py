"""Reading the records of a hole in a stream partition straight from the broker (see `topology.continuity`)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from backbone.settings import KafkaSettings

HOLE_READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HoleMessage:
    """The parts of a faust `Message` the stages read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: float


@dataclass(frozen=True)
class HoleEvent:
    """A record read past faust, shaped like the faust `Event` a stage handles."""

    message: HoleMessage

    @property
    def key(self) -> bytes | None:
        return self.message.key

    @property
    def value(self) -> bytes | None:
        return self.message.value


class HoleReader:
    """A consumer that reads offset ranges on demand and the group's committed offsets.

    It names the topology's group but never joins it (it only assigns partitions) and never commits.
    Every stage shares it, from executor threads: one call at a time.
    """

    def __init__(self, kafka: KafkaSettings, group_id: str) -> None:
        self._lock = threading.Lock()
        self._config = kafka.client_config() | {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # faust's consumer (aiokafka) reads uncommitted records too: read what it would have read
            "isolation.level": "read_uncommitted",
        }
        self._consumer: Consumer | None = None

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        return self._consumer

    def start_offset(self, topic: str, partition: int) -> int:
        """The group's committed offset of the partition, else its first offset."""
        with self._lock:
            consumer = self._client()
            [committed] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
            if committed.offset >= 0:
                return int(committed.offset)
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            return int(low)

    def read(self, topic: str, partition: int, start: int, end: int) -> list[HoleEvent]:
        """The records at offsets `start` ≤ offset < `end` (none when the hole is natural: markers, compaction)."""
        with self._lock:
            return self._read(topic, partition, start, end)

    def first_to_end(self, topic: str, partition: int, start: int) -> tuple[int | None, int]:
        """The offset of the first record at or after `start` before the partition's end, and that end."""
        with self._lock:
            _, end = self._client().get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if start >= end:
                return None, int(end)
            found = self._read(topic, partition, start, end, first_only=True)
            return (found[0].message.offset if found else None), int(end)

    def _read(self, topic: str, partition: int, start: int, end: int, first_only: bool = False) -> list[HoleEvent]:
        """Read until a record at `end` or beyond arrives, or the position passes `end` (markers at the end)."""
        consumer = self._client()
        where = TopicPartition(topic, partition, start)
        consumer.assign([where])
        found: list[HoleEvent] = []
        deadline = time.monotonic() + HOLE_READ_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                for message in consumer.consume(500, timeout=0.2):
                    if message.error() is not None:
                        raise KafkaException(message.error())
                    offset = message.offset()
                    assert offset is not None
                    if offset >= end:
                        return found
                    found.append(_event(message))
                    if first_only:
                        return found
                [position] = consumer.position([where])
                if position.offset >= end:
                    return found
            raise TimeoutError(f"{topic}/{partition}: offsets {start}..{end - 1} not read in {HOLE_READ_TIMEOUT_S} s")
        finally:
            consumer.unassign()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _event(message: Any) -> HoleEvent:
    _, millis = message.timestamp()
    return HoleEvent(
        HoleMessage(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            value=message.value(),
            headers=list(message.headers() or []),
            timestamp=millis / 1000.0,
        )
    )
