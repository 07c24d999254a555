"""Poller cursors kept in Kafka and committed in the same transaction as the events they cover.

A cursor file (`polling.CursorFile`) is saved *after* the broker has the events, so a crash between the
two re-sends the last poll: harmless downstream, but a duplicate on the topic. The long-running poller
does what Kafka Connect's exactly-once source connectors do (KIP-618): its transactional producer
writes a poll's events and the source's new cursor to a compacted checkpoint topic, then commits.
Read-committed consumers see both or neither, whenever the process dies; a restarted poller with the
same transactional id fences its predecessor, aborts what it left open and resumes from the last
committed cursor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from backbone.errors import ServiceUnavailableError
from backbone.settings import KafkaSettings
from producers.emitter import Emitter

CHECKPOINT_CONFIG = {"cleanup.policy": "compact", "retention.ms": "-1"}


def ensure_checkpoint_topic(kafka: KafkaSettings, topic: str) -> None:
    """Create the compacted one-partition checkpoint topic unless it exists."""
    admin = AdminClient(kafka.client_config())
    try:
        if topic in admin.list_topics(timeout=15).topics:
            return
        future = admin.create_topics([NewTopic(topic, 1, kafka.replication_factor, config=CHECKPOINT_CONFIG)])[topic]
        future.result(timeout=30)
    except KafkaException as error:
        if error.args and getattr(error.args[0], "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
            return
        raise ServiceUnavailableError(f"cannot create checkpoint topic {topic}: {error}") from error


def read_checkpoints(kafka: KafkaSettings, topic: str, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """The last committed state per key (read-committed, to the end of the partition)."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": "backbone-poller-checkpoint-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        # With read_committed the high watermark is the last stable offset: everything committed.
        _, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout, cached=False)
        consumer.assign([TopicPartition(topic, 0, 0)])
        return _read_to(consumer, topic, end, timeout)
    finally:
        consumer.close()


def _read_to(consumer: Consumer, topic: str, end: int, timeout: float) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    partition = TopicPartition(topic, 0)
    # Transaction markers take offsets but are never delivered: the position, not the last message, says
    # how far the reader got. An empty topic has no position at all.
    while end > 0 and consumer.position([partition])[0].offset < end:
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(f"checkpoints in {topic} not read to offset {end} within {timeout}s")
        for message in consumer.consume(500, timeout=0.5):
            if message.error() is None:
                value = message.value()
                states[(message.key() or b"").decode()] = json.loads(value) if value else {}
    return states


class CheckpointLog:
    """Cursors of one poller process, saved inside the emitter's current transaction."""

    def __init__(self, emitter: Emitter, topic: str, prefix: str, committed: Mapping[str, dict[str, Any]]) -> None:
        self.emitter, self.topic, self.prefix = emitter, topic, prefix
        self._committed = dict(committed)
        self._pending: dict[str, dict[str, Any]] = {}

    def cursor(self, source: str) -> KafkaCursor:
        return KafkaCursor(self, f"{self.prefix}/{source}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Events published and cursors saved inside become visible together, or not at all."""
        self._pending.clear()
        try:
            with self.emitter.transaction():
                yield
        finally:
            pending, self._pending = self._pending, {}
        self._committed.update(pending)

    def load(self, key: str) -> dict[str, Any]:
        return dict(self._committed.get(key, {}))

    def save(self, key: str, state: Mapping[str, Any]) -> None:
        value = json.dumps(state, sort_keys=True).encode()
        self.emitter.produce_bytes(self.topic, key.encode(), value)
        self._pending[key] = dict(state)


class KafkaCursor:
    """The `CursorStore` a poller sees: load the committed state, save into the open transaction."""

    def __init__(self, log: CheckpointLog, key: str) -> None:
        self.log, self.key = log, key

    def load(self) -> dict[str, Any]:
        return self.log.load(self.key)

    def save(self, state: Mapping[str, Any]) -> None:
        self.log.save(self.key, state)
