"""A broadcast table: every partition of some topics, read by every worker outside the consumer group.

Master data (`ref.*`) must be complete in every worker whatever partitions the group hands it, so each
worker reads all of it from the beginning before it processes anything (`load`), keeps following it
between batches (`follow`), and reads to the current end again when it is handed new partitions
(`catch_up`: their previous owner may have priced with master data this worker has not read yet).
The table itself is the caller's: each record is handed to `apply`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from backbone.streams.clients import take, watermarks

log = structlog.get_logger(__name__)


class BroadcastTable:
    """Follows every partition of `topics` with its own group-less reader."""

    def __init__(self, reader: Consumer, topics: Iterable[str], apply: Callable[[Message], None]) -> None:
        self.reader = reader
        self.topics = tuple(topics)
        self.apply = apply
        self._partitions: list[TopicPartition] = []

    def load(self, timeout: float = 300.0) -> int:
        """Read every partition from the beginning to its current end; the number of records applied."""
        started = time.monotonic()
        self._partitions = [TopicPartition(t, p) for t in self.topics for p in self._partition_ids(t)]
        self.reader.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in self._partitions])
        records = self.catch_up(timeout, warn=False)
        log.info(
            "broadcast table loaded",
            topics=list(self.topics),
            records=records,
            seconds=round(time.monotonic() - started, 3),
        )
        return records

    def follow(self, max_records: int = 5_000) -> int:
        """Apply what has arrived since the last call, without waiting."""
        return self._apply_all(self.reader.consume(max_records, 0), pending=None)

    def catch_up(self, timeout: float = 30.0, *, warn: bool = True) -> int:
        """Apply everything up to each partition's current end (its end when this is called)."""
        pending = self._behind()
        deadline = time.monotonic() + timeout
        records = 0
        while pending:
            if time.monotonic() > deadline:
                if warn:
                    log.warning("broadcast table not caught up", partitions=sorted(pending), seconds=timeout)
                    return records
                raise TimeoutError(f"broadcast topics not read to their end within {timeout}s: {sorted(pending)}")
            records += self._apply_all(take(self.reader, 5_000, 0.2), pending)
            pending = {tp for tp in pending if self._position(tp) < self._ends[tp]}
        return records

    def _behind(self) -> set[tuple[str, int]]:
        self._ends: dict[tuple[str, int], int] = {}
        for tp in self._partitions:
            _, high = watermarks(self.reader, tp)
            self._ends[(tp.topic, tp.partition)] = high
        return {key for key, high in self._ends.items() if self._position(key) < high}

    def _position(self, key: tuple[str, int]) -> int:
        [position] = self.reader.position([TopicPartition(*key)])
        return position.offset if position.offset >= 0 else 0

    def _apply_all(self, messages: list[Message], pending: set[tuple[str, int]] | None) -> int:
        applied = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and pending is not None:
                    # only transaction markers (or nothing) are left before the end
                    pending.discard((message.topic(), message.partition()))
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("broadcast read error", topic=message.topic(), error=str(error))
                continue
            self.apply(message)
            applied += 1
        return applied

    def _partition_ids(self, topic: str) -> list[int]:
        metadata = self.reader.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise RuntimeError(f"broadcast topic {topic}: {metadata.error}")
        return sorted(metadata.partitions)
