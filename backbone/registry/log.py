"""The registry's Kafka log: a compacted one-partition topic, read by every instance, written by the leader.

Every instance tails the topic with a `read_committed` consumer and folds each record into its state
(`SchemaStore`), so an instance's state is always a prefix of the log. Only the leader writes, through a
transactional producer whose `transactional.id` is the same for every instance of a topic
(`backbone-registry.<topic>`): `claim()` (Kafka's InitProducerId) bumps the producer epoch, which aborts
whatever transaction a previous leader left open and makes each of its later commits fail with
`_FENCED`. That is how a zombie leader (paused, partitioned away, or slow to notice that it was
deposed) is kept from writing a schema id decided on a stale state. See docs/schema-registry.md.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from backbone.errors import BackboneError, ServiceUnavailableError
from backbone.registry.replica import FencedError
from backbone.registry.store import Record
from backbone.settings import KafkaSettings
from backbone.streams.clients import NOT_READY_YET


class KafkaLog:
    """Create, tail and (as leader) append to the registry's topic."""

    def __init__(self, kafka: KafkaSettings, topic: str, *, timeout: float = 15.0) -> None:
        self._kafka = kafka
        self.topic = topic
        self._timeout = timeout
        self._partition = TopicPartition(topic, 0)
        self._reader: Consumer | None = None
        self._offsets: Consumer | None = None
        self._producer: Producer | None = None

    @property
    def transactional_id(self) -> str:
        return f"backbone-registry.{self.topic}"

    def ensure_topic(self) -> None:
        """Create the topic (1 partition, compacted) unless it exists; fail clearly without Kafka."""
        admin = AdminClient(self._kafka.client_config())
        try:
            metadata = admin.list_topics(timeout=self._timeout)
        except KafkaException as e:
            raise _unreachable(self._kafka, e) from e
        if self.topic in metadata.topics:
            return
        topic = NewTopic(
            self.topic,
            num_partitions=1,
            replication_factor=self._kafka.replication_factor,
            config={"cleanup.policy": "compact"},
        )
        try:
            admin.create_topics([topic], operation_timeout=self._timeout)[self.topic].result(self._timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise _unreachable(self._kafka, e) from e

    # -- reading (every instance) -----------------------------------------------------------------

    def read(self, timeout: float) -> tuple[list[tuple[int, Record]], int | None]:
        """Committed records fetched within `timeout`, with their offsets, and the position reached.

        The position also moves past transaction markers and aborted records, which are never
        returned; it is None when nothing was fetched.
        """
        reader = self._open_reader()
        records: list[tuple[int, Record]] = []
        position: int | None = None
        # Wait for one message only: consume(n, timeout) would wait out the timeout for n of them, and
        # every write waits until the leader has read it back.
        first = reader.poll(timeout)
        batch = [] if first is None else [first, *reader.consume(500, 0)]
        for message in batch:
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                position = message.offset()
                continue
            if error is not None:
                raise BackboneError(f"Error reading registry topic '{self.topic}': {error}")
            offset = message.offset() or 0
            value = message.value()
            key = json.loads(message.key() or b"{}")
            records.append((offset, (key, json.loads(value) if value is not None else None)))
            position = offset + 1
        return records, position

    def _open_reader(self) -> Consumer:
        if self._reader is None:
            self._reader = Consumer(
                {
                    **self._kafka.client_config(),
                    "group.id": f"backbone-registry-reader-{uuid.uuid4().hex}",  # never joins: assign only
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 20,  # an idle tail asks 50 times a second; a write is read back sooner
                }
            )
            self._reader.assign([TopicPartition(self.topic, 0, 0)])
        return self._reader

    def end_offset(self) -> int:
        """The topic's end (high watermark) now, once its partition answers.

        A topic created a moment ago may not be in the metadata yet, and a broker that just started names
        a leader a moment before it has loaded the partition's log (NOT_LEADER_FOR_PARTITION until then).
        """
        # A consumer of its own: asked while the tailing one blocks in consume(), the query never returns.
        if self._offsets is None:
            self._offsets = Consumer(
                {**self._kafka.client_config(), "group.id": f"backbone-registry-offsets-{uuid.uuid4().hex}"}
            )
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                _low, high = self._offsets.get_watermark_offsets(self._partition, timeout=self._timeout, cached=False)
                return int(high)
            except KafkaException as e:
                if e.args[0].code() not in NOT_READY_YET or time.monotonic() > deadline:
                    raise _unreachable(self._kafka, e) from e
                time.sleep(0.1)  # the partition is being loaded: ask again shortly

    # -- writing (the leader) ---------------------------------------------------------------------

    def claim(self) -> None:
        """Become the log's only writer: fence every earlier producer of this topic's transactional id."""
        self.release()
        producer = Producer(
            {
                **self._kafka.client_config(),
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": 10_000,  # an open transaction of a dead leader holds readers this long
                "linger.ms": 0,
            }
        )
        try:
            producer.init_transactions(self._timeout)
        except KafkaException as e:
            raise ServiceUnavailableError(f"could not claim registry topic '{self.topic}': {e}") from e
        self._producer = producer

    def append(self, records: list[Record]) -> int:
        """Write `records` in one transaction; the offset after the last one once committed.

        `FencedError` when another instance has claimed the log since; `ServiceUnavailableError` when
        Kafka did not take the transaction (it was aborted: nothing of it is ever read).
        """
        producer = self._producer
        if producer is None:
            raise FencedError(f"this instance does not hold registry topic '{self.topic}'")
        last: list[int] = []

        def on_delivery(error: KafkaError | None, message: Any) -> None:
            if error is None:
                last.append(message.offset())

        try:
            producer.begin_transaction()
            for key, value in records:
                producer.produce(
                    self.topic,
                    key=json.dumps(key, sort_keys=True).encode(),
                    value=None if value is None else json.dumps(value).encode(),
                    partition=0,
                    on_delivery=on_delivery,
                )
            producer.commit_transaction(self._timeout)
        except KafkaException as e:
            raise self._failed(producer, e.args[0]) from e
        return max(last) + 1

    def _failed(self, producer: Producer, error: KafkaError) -> BackboneError:
        if error.fatal() or error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):
            self._producer = None
            return FencedError(f"registry topic '{self.topic}' was claimed by another instance: {error}")
        try:
            producer.abort_transaction(self._timeout)
        except KafkaException:
            self._producer = None  # unusable: the next write fails and the election decides again
        return ServiceUnavailableError(
            f"Could not persist registry change to '{self.topic}': {error}",
            hint="Check that the Kafka broker is reachable and healthy; the change was not applied.",
        )

    def release(self) -> None:
        """Stop writing (a deposed leader). A transaction still open is aborted by the next claim."""
        self._producer = None

    def close(self) -> None:
        self.release()
        for consumer in (self._reader, self._offsets):
            if consumer is not None:
                consumer.close()
        self._reader = self._offsets = None


def _unreachable(kafka: KafkaSettings, error: Exception) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"Kafka at {kafka.servers} is not reachable for the schema registry: {error}",
        hint="Start it with `backbone up` or set BACKBONE_KAFKA_BOOTSTRAP_SERVERS to a running cluster.",
    )
