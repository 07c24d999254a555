"""Following a catalog topic and decoding its records into canonical events, for `backbone tail`.

Without a group, `Tail` assigns itself every partition directly: no group coordination (so the first
record shows at once), nothing committed, nothing left behind on the broker. With a group it
subscribes as that group and commits the offset of every record it hands out, so the next run resumes
where this one stopped. Records that do not decode come out as `DecodeError`s (with the raw message)
instead of stopping the tail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from backbone.domain.models import Event
from backbone.errors import BackboneError, ServiceUnavailableError
from backbone.kafka.serde import DecodeError, SerdeCache, registry_client
from backbone.kafka.topics import Topic
from backbone.settings import Settings

BATCH = 500
POLL_SECONDS = 0.5
ASSIGNMENT_GRACE_S = 30.0
"""With a group, how long joining may take before the idle clock starts anyway."""


@dataclass(frozen=True)
class TailOptions:
    from_beginning: bool = False
    idle_timeout: float | None = None
    max_records: int | None = None
    group: str | None = None


@dataclass(frozen=True)
class Decoded:
    """A record and the event it carries."""

    message: Message
    event: Event


def consumer_config(settings: Settings, options: TailOptions) -> dict[str, Any]:
    durable = options.group is not None
    return {
        **settings.kafka.client_config(),
        "group.id": options.group or f"backbone-tail-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": durable,
        # Offsets are stored per record handed out, so `--max` never commits past what was printed.
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest" if options.from_beginning else "latest",
        "enable.partition.eof": False,
    }


class Tail:
    """Iterate decoded records of one topic until `--max` or `--idle-timeout` says stop."""

    def __init__(
        self, settings: Settings, topic: Topic, options: TailOptions, serdes: SerdeCache | None = None
    ) -> None:
        self.topic = topic
        self.options = options
        self._serde = (serdes or SerdeCache(registry_client(settings.registry.client_config()))).for_topic(topic)
        self._consumer = Consumer(consumer_config(settings, options))
        self._servers = settings.kafka.servers
        self._assigned_at: float | None = None

    def __enter__(self) -> Tail:
        self._attach()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._consumer.close()

    def records(self) -> Iterator[Decoded | DecodeError]:
        """Decoded records and decode failures, in partition order, until a stop condition holds."""
        handed_out = 0
        last_activity = time.monotonic()
        while not self._reached_max(handed_out):
            messages = self._consumer.consume(BATCH, timeout=POLL_SECONDS)
            if messages:
                last_activity = time.monotonic()
            elif self._idle_for(last_activity):
                return
            for message in messages:
                if self._reached_max(handed_out):
                    return
                item = self._decode(message)
                if item is None:
                    continue
                handed_out += isinstance(item, Decoded)
                yield item
                self._mark_done(message)

    def _attach(self) -> None:
        partitions = self._partitions()
        if self.options.group is None:
            start = OFFSET_BEGINNING if self.options.from_beginning else OFFSET_END
            self._consumer.assign([TopicPartition(self.topic.name, p, start) for p in partitions])
            self._assigned_at = time.monotonic()
        else:
            self._consumer.subscribe([self.topic.name], on_assign=self._on_assign)

    def _partitions(self) -> list[int]:
        try:
            # Asking for all topics: a metadata request naming one makes brokers auto-create it.
            metadata = self._consumer.list_topics(timeout=10)
        except KafkaException as error:
            raise ServiceUnavailableError(
                f"Kafka at {self._servers} is not reachable: {error}",
                hint="start it with `backbone up`, or set BACKBONE_KAFKA_BOOTSTRAP_SERVERS",
            ) from error
        found = metadata.topics.get(self.topic.name)
        if found is None or found.error is not None or not found.partitions:
            raise BackboneError(f"topic {self.topic.name} does not exist", hint="create it with `backbone up`")
        return sorted(found.partitions)

    def _on_assign(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self._assigned_at = self._assigned_at or time.monotonic()

    def _idle_for(self, last_activity: float) -> bool:
        if self.options.idle_timeout is None:
            return False
        # The clock starts once partitions are ours: joining a group can take seconds by itself.
        assigned = self._assigned_at
        if assigned is None and time.monotonic() - last_activity < ASSIGNMENT_GRACE_S:
            return False
        since = max(last_activity, assigned or last_activity)
        return time.monotonic() - since >= self.options.idle_timeout

    def _reached_max(self, handed_out: int) -> bool:
        return self.options.max_records is not None and handed_out >= self.options.max_records

    def _decode(self, message: Message) -> Decoded | DecodeError | None:
        error = message.error()
        if error is not None:
            if error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise BackboneError(f"consuming {self.topic.name} failed: {error.str()}")
            return None  # transient: librdkafka retries by itself
        try:
            return Decoded(message, self._serde.decode(message))
        except DecodeError as failure:
            return failure

    def _mark_done(self, message: Message) -> None:
        if self.options.group is not None:
            self._consumer.store_offsets(message)
