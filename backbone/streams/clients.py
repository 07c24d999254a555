"""The one place librdkafka clients of the processor runtime are configured.

Every consumer, producer and admin client of a processor is built here from `KafkaSettings` (which
carries SASL/TLS) and `StreamsSettings` (which carries the runtime's tuning), so a setting reaches all
of them or none. The values follow the transactional consume-transform-produce pattern (KIP-447):
read_committed consumers without auto-commit, one idempotent transactional producer per worker slot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from backbone.settings import KafkaSettings, StreamsSettings

ASSIGNMENT_STRATEGY = "range"
"""Partition assignment of processor groups.

A stage's input topics are co-partitioned (an entry's time records and approvals share a partition
number), and its state for partition p must see partition p of every input. Of librdkafka's assignors
only `range` gives one member the same partition numbers of every topic with the same partition count;
`cooperative-sticky` spreads them independently (Kafka Streams brings its own assignor for this reason).
"""


def group_consumer(
    kafka: KafkaSettings, streams: StreamsSettings, group_id: str, *, instance_id: str | None = None
) -> Consumer:
    """The consumer of a processor group: read_committed, offsets committed only in transactions.

    `instance_id` makes the member static (KIP-345): a worker restarted in the same slot takes its
    predecessor's place and partitions without waiting for the session timeout or a rebalance.
    """
    config: dict[str, Any] = kafka.client_config() | {
        "group.id": group_id,
        "partition.assignment.strategy": ASSIGNMENT_STRATEGY,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": streams.session_timeout_ms,
        "heartbeat.interval.ms": max(1000, streams.session_timeout_ms // 5),
        "fetch.wait.max.ms": 20,
        # a fetch answers once this much is there or after fetch.wait.max.ms: without it, records trickling in
        # at 2,000/s were fetched a few at a time, the handlers ran many tiny batches and the broker answered
        # hundreds of fetches a second (topology_latency.py at 1,000 entries/s: p99 6.4-10.6 s → 0.5-1.0 s)
        "fetch.min.bytes": 262_144,
        # records fetched ahead of the handlers: a few batches' worth, not librdkafka's 64 MiB, which a
        # replay kept full (and which a worker's memory target has to carry)
        "queued.max.messages.kbytes": 16_384,
    }
    if instance_id is not None:
        config["group.instance.id"] = instance_id
    return Consumer(config)


def reader(kafka: KafkaSettings, purpose: str, *, eof: bool = True) -> Consumer:
    """A consumer outside any group (assigned partitions by hand), reading committed records only.

    Used to restore state from changelogs and to follow broadcast tables; it never commits offsets.
    """
    config: dict[str, Any] = kafka.client_config() | {
        "group.id": f"backbone-{purpose}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": eof,
        "fetch.wait.max.ms": 20,
    }
    return Consumer(config)


def transactional_producer(kafka: KafkaSettings, streams: StreamsSettings, transactional_id: str) -> Producer:
    """The worker slot's producer; `init_transactions()` on it fences the slot's previous holder."""
    config: dict[str, Any] = kafka.client_config() | {
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        "transaction.timeout.ms": streams.transaction_timeout_ms,
        # send_offsets_to_transaction waits out retry.backoff.ms between back-to-back transactions
        # (confluent-kafka-python#967): librdkafka's default of 100 ms would cap a worker at ~10 commits/s.
        "retry.backoff.ms": 10,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
    }
    return Producer(config)


def admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_config())


NOT_READY_YET = (
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
)
"""Errors of a partition that is being created or loaded: a broker names a leader a moment before it has
loaded the partition's log, so a topic created a moment ago answers these for a while."""


def watermarks(consumer: Consumer, partition: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """(low, high) offsets of `partition`, asked again while the partition is still being created or loaded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=min(10.0, timeout))
            return low, high
        except KafkaException as error:
            if error.args[0].code() not in NOT_READY_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # a partition being loaded: ask again shortly


def take(consumer: Consumer, max_records: int, timeout: float) -> list[Message]:
    """Up to `max_records` records (and events), returned as soon as one is there.

    `consume(n, timeout)` waits out its whole timeout unless n records arrive; this waits for the first
    (at most `timeout`) and then takes what is already fetched without waiting.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]


def check_consumed(error: KafkaError, **context: Any) -> None:
    """A consumer's error event: end of partition is news, not an error; fatal ones stop the worker."""
    if error.code() == KafkaError._PARTITION_EOF:
        return
    if error.fatal():
        raise KafkaException(error)
    structlog.get_logger(__name__).warning("consumer error", error=str(error), **context)


def lag(consumer: Consumer) -> Iterator[tuple[str, int, int]]:
    """(topic, partition, records behind the end) of each assigned partition that has a position yet."""
    try:
        for tp in consumer.position(consumer.assignment()):
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                yield tp.topic, tp.partition, high - tp.offset
    except KafkaException as error:
        structlog.get_logger(__name__).debug("consumer lag not known", error=str(error))
