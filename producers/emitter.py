"""The emitter: the one way programs publish canonical events to their catalog topics.

An idempotent confluent-kafka producer (`enable.idempotence`, `acks=all`) writes each event to the
topic the catalog names for its type, keyed by the catalog key, Avro-encoded through `backbone.kafka.serde`,
with the headers routing, tracing and dead-lettering rely on (`event_type`, `correlation_id`,
`source_system`, `traceparent` when given). Before sending, an event gets the envelope defaults the
contract promises: a time entry's or approval's `correlation_id` defaults to its `time_entry_id`, and a
missing `event_id` is derived from the payload, so emitting the same input twice changes nothing.

`send` returns a future the delivery report resolves (the HTTP gateway answers 202 only after it);
`publish` sends many and returns only when the broker has all of them, raising otherwise. To publish
a batch all or nothing, `prepare` encodes every event first (an invalid one raises `InvalidInputError`
before anything was produced) and `send_prepared` (or `send_reported`, one report callable for the
batch) then produces them.
With a `transactional_id`, `transaction()` makes everything published inside it (and any
`produce_bytes` record, e.g. a poller's cursor) visible to read-committed consumers all or nothing.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from backbone.domain.ids import event_id_from_payload
from backbone.domain.models import ApprovalDecision, ContractVersion, Event, TimeEntry
from backbone.errors import BackboneError, InvalidInputError, ServiceUnavailableError
from backbone.kafka.compiled import CannotCompile
from backbone.kafka.compiled_writer import IdentifiedWriter, LineWriter, compile_identified_writer, compile_writer
from backbone.kafka.schema_ids import PlainRegistry
from backbone.kafka.serde import SerdeCache, TopicSerde
from backbone.kafka.topics import BY_EVENT_TYPE, Topic
from backbone.settings import KafkaSettings, Settings, load_settings

Headers = Mapping[str, str | bytes]
Progress = Callable[[int, int], None]
"""progress(sent, delivered), called every `PROGRESS_EVERY` records while publishing."""

PROGRESS_EVERY = 10_000
POLL_EVERY = 100
"""`publish` and `publish_encoded` serve delivery reports every this many records (each poll costs a
system call); a full local queue is served at once (`_produce_bytes`)."""
KAFKA_HINT = "start it with `backbone up`, or set BACKBONE_KAFKA_BOOTSTRAP_SERVERS to a running cluster"
_CORRELATED_BY_ENTRY = (TimeEntry, ApprovalDecision)
_NO_WRITER: Any = object()
"""`Emitter.prepare_values` has not looked for an event class's compiled writer yet."""


class DeliveryError(BackboneError):
    """The broker did not take a record (after librdkafka's own retries)."""


@dataclass(frozen=True)
class Delivery:
    """Where the broker stored a record."""

    topic: str
    partition: int
    offset: int
    key: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """One event encoded for the wire (its Avro body, key and headers), not produced yet."""

    event: Event
    serde: TopicSerde
    key: bytes
    body: bytes
    headers: list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class PreparedValues:
    """One event written from its canonical values by its compiled writer (no model), not produced yet:
    what `Prepared` holds, with the event's type and id in place of the model."""

    event_type: str
    event_id: str
    serde: TopicSerde
    key: bytes
    body: bytes
    headers: list[tuple[str, str | bytes | None]]


Encoded = tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]
"""(key, Avro body without framing, headers): an event ready for `publish_encoded`."""


def encode_for_spool(event: Event, serde: TopicSerde) -> Encoded:
    """An event as `publish_encoded` takes it, envelope defaults applied; needs no broker or registry.

    `InvalidInputError` when it cannot be encoded (so callers refuse it before publishing anything)."""
    updates = envelope_updates(event)
    try:
        key = serde.encode_key(event)
    except UnicodeEncodeError as error:
        raise InvalidInputError(f"{event.event_type} key {event.key!r:.80} is not valid text: {error}") from None
    # The record gets the defaults directly: no copy of the model just to encode it.
    body = serde.encode_body(event, updates)
    correlation = updates.get("correlation_id", event.correlation_id)
    headers: list[tuple[str, str | bytes | None]] = [
        ("event_type", event.event_type.encode()),
        ("source_system", event.source_system.encode("utf-8")),
    ]
    if correlation is not None:
        headers.append(("correlation_id", correlation.encode("utf-8")))
    return key, body, headers


def line_writer(event_cls: type[Event]) -> LineWriter | None:
    """The compiled writer of `event_cls` lines with this emitter's envelope defaults (what
    `encode_for_spool` gives for the model the line validates into), or None for a class it cannot
    write (`backbone.kafka.compiled_writer`)."""
    correlate_with = "time_entry_id" if issubclass(event_cls, _CORRELATED_BY_ENTRY) else None
    try:
        return compile_writer(event_cls, correlate_with=correlate_with)
    except CannotCompile as reason:
        _log().info("lines of this event type are validated through the model", event_type=event_cls.event_type,
                 reason=str(reason))  # fmt: skip
        return None


def identified_writer(event_cls: type[Event]) -> IdentifiedWriter | None:
    """`line_writer`'s writer that also gives the event id it wrote (`Emitter.prepare_values`)."""
    correlate_with = "time_entry_id" if issubclass(event_cls, _CORRELATED_BY_ENTRY) else None
    try:
        return compile_identified_writer(event_cls, correlate_with=correlate_with)
    except CannotCompile:
        return None


@dataclass
class EmitReport:
    """What `publish` did."""

    published: int
    seconds: float
    by_topic: dict[str, int] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


def producer_config(kafka: KafkaSettings, *, delivery_timeout_s: float) -> dict[str, Any]:
    """librdkafka settings of the emitter: idempotent, fully acknowledged, batched."""
    return {
        **kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        # A little lingering fills batches for bulk emits and costs a single send only milliseconds.
        "linger.ms": 10,
        # Kafka's Java clients' partitioner (and backbone.streams.partitioner's), so a key lands on the same
        # partition whichever client wrote it; the topology moves a record found elsewhere to its key's partition.
        "partitioner": "murmur2_random",
        # After this long a record fails instead of waiting forever for an unreachable broker.
        "delivery.timeout.ms": int(delivery_timeout_s * 1000),
    }


def with_envelope_defaults(event: Event) -> Event:
    """The event as published: correlation id defaulted, then the event id derived when absent."""
    updates = envelope_updates(event)
    return event.model_copy(update=updates) if updates else event


def envelope_updates(event: Event) -> dict[str, str]:
    """The envelope fields `with_envelope_defaults` fills in (none when the event has them all)."""
    updates: dict[str, str] = {}
    if event.correlation_id is None and isinstance(event, _CORRELATED_BY_ENTRY):
        updates["correlation_id"] = event.time_entry_id
    if event.event_id is None:
        # The id covers the defaulted correlation id too: it is derived from the event as published.
        payload = _payload(event)
        payload.update(updates)
        updates["event_id"] = event_id_from_payload(event.event_type, payload)
    return updates


def _payload(event: Event) -> dict[str, Any]:
    """The python-mode dump without `event_id`: for a flat event that is its field dict (serializers only
    act in JSON mode; backbone.domain.ids relies on the same), copied at C speed instead of dumped."""
    if isinstance(event, ContractVersion):  # holds models (the rate card): those must become dicts
        return event.model_dump(exclude={"event_id"})
    payload = dict(event.__dict__)
    del payload["event_id"]
    return payload


class Emitter:
    """Publishes canonical events to their catalog topics. Use as a context manager; thread-safe."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        topics: Mapping[str, Topic] | None = None,
        delivery_timeout_s: float = 120.0,
        serdes: SerdeCache | None = None,
        transactional_id: str | None = None,
        bulk: bool = False,
        linger_ms: int | None = None,
        poll_thread: bool = True,
        logger: Any = None,
    ) -> None:
        """`topics` overrides the catalog topic of some event types (e.g. a test's own topic).

        `linger_ms` replaces the producer's 10 ms of lingering (`producer_config`) where a caller waits
        for each acknowledgement (the gateway answers 202 only after it), so the wait is not added to
        every request.

        `transactional_id` makes the producer transactional: a restarted process with the same id
        fences the old one and aborts whatever it left open.

        `bulk` asks librdkafka for the delivery reports of failures only (`delivery.report.only.error`),
        so `publish` and `publish_encoded` produce with no Python callback per record (a call and a
        message object each, docs/benchmarks.md); `send` and `send_prepared`, whose futures need every
        report, are refused then.

        `poll_thread=False`: `send`, `send_prepared` and `send_reported` start no thread serving the
        delivery reports; the caller serves them with `poll` (the gateway's event loop does, so its
        callbacks run on the loop's own thread).

        `logger` (anything with `log(level, message, *args)`) gets librdkafka's log lines instead of
        standard error, when this emitter serves its queue (`poll`, `flush`): `emit` connects while it
        validates and shows them only if it goes on to publish (`backbone.cli.connecting`).
        """
        settings = settings or load_settings()
        self._topics = {**BY_EVENT_TYPE, **(topics or {})}
        # Producing needs only the schema ids: a plain HTTP request, not the registry client's imports.
        self._serdes = serdes or SerdeCache(PlainRegistry(settings.registry.client_config()))
        self._delivery_timeout_s = delivery_timeout_s
        config = producer_config(settings.kafka, delivery_timeout_s=delivery_timeout_s)
        if linger_ms is not None:
            config["linger.ms"] = linger_ms
        if transactional_id is not None:
            # librdkafka requires the delivery timeout to fit in the transaction timeout. A transaction a
            # killed process left open holds back read-committed readers until this passes or a
            # successor with the same id starts.
            config.update(
                {"transactional.id": transactional_id, "transaction.timeout.ms": config["delivery.timeout.ms"]}
            )
        self._bulk = bulk
        self._failures = _Tally()
        if bulk:
            config.update({"delivery.report.only.error": True, "on_delivery": self._on_failure})
        if logger is not None:
            config["logger"] = logger
        self._producer = Producer(config)
        if transactional_id is not None:
            self._init_transactions()
        self._servers = settings.kafka.servers
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None
        self._poller_lock = threading.Lock()
        self._poll_thread = poll_thread
        self._writers: dict[type[Event], IdentifiedWriter | None] = {}

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def topic_for(self, event_type: str) -> Topic:
        return self._topics[event_type]

    def ensure_topic(self, topic: Topic, timeout: float = 10.0) -> None:
        """Fail fast, with a hint, when the broker is unreachable or `topic` does not exist."""
        self.ensure_topics([topic], timeout)

    def ensure_topics(self, topics: Iterable[Topic], timeout: float = 10.0) -> None:
        """Fail fast, with a hint, when the broker is unreachable or any of `topics` does not exist."""
        try:
            # Asking for all topics: a metadata request naming one makes brokers auto-create it.
            metadata = self._producer.list_topics(timeout=timeout)
        except KafkaException as error:
            raise ServiceUnavailableError(
                f"Kafka at {self._servers} is not reachable: {error}", hint=KAFKA_HINT
            ) from error
        missing = sorted(
            {t.name for t in topics if (found := metadata.topics.get(t.name)) is None or found.error is not None}
        )
        if missing:
            raise BackboneError(
                f"topic{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"do{'' if len(missing) > 1 else 'es'} not exist",
                hint="create the catalog topics with `backbone up` (or `backbone topics apply`)",
            )

    def frame_header(self, topic: Topic) -> bytes:
        """The Confluent wire-format header of `topic`'s values: its schema id, asked of the registry once."""
        return self._serdes.for_topic(topic).header()

    def send(self, event: Event, headers: Headers | None = None) -> Future[Delivery]:
        """Start sending one event; the future resolves with its `Delivery` once the broker has it.

        Encoding problems (and an unreachable registry) raise here, before anything is sent.
        """
        return self.send_prepared([self.prepare(event, headers)])[0]

    def prepare(self, event: Event, headers: Headers | None = None) -> Prepared:
        """The event with its envelope defaults, encoded; `InvalidInputError` when it cannot be.

        Needs neither the broker nor the registry, so a caller can encode a whole batch, and refuse it,
        before producing any of it.
        """
        event = with_envelope_defaults(event)
        serde = self._serdes.for_topic(self._topics[event.event_type])
        key, body, spooled = encode_for_spool(event, serde)
        # The spool's headers are those of `_headers` without extra ones: not built twice.
        return Prepared(event, serde, key, body, spooled if not headers else _headers(event, headers))

    def prepare_values(self, event_cls: type[Event], values: Any) -> PreparedValues | None:
        """`values` (a JSON object's dict, or a mapper's canonical values) written by `event_cls`'s
        compiled writer: the key, body and headers `prepare` gives for the model they validate into,
        without building it. None when the writer cannot vouch for them (or there is none): the caller
        then builds the model, which accepts them or says exactly why not, and `prepare`s it."""
        writer = self._writers.get(event_cls, _NO_WRITER)
        if writer is _NO_WRITER:
            writer = self._writers[event_cls] = identified_writer(event_cls)
        written = writer(values) if writer is not None else None
        if written is None:
            return None
        key, body, source, correlation, event_id = written
        headers: list[tuple[str, str | bytes | None]] = [
            ("event_type", event_cls.event_type.encode()),
            ("source_system", source),
        ]
        if correlation:
            headers.append(("correlation_id", correlation))
        serde = self._serdes.for_topic(self._topics[event_cls.event_type])
        return PreparedValues(event_cls.event_type, event_id, serde, key, body, headers)

    def frames_known(self, records: Sequence[Prepared | PreparedValues]) -> bool:
        """Whether `send_prepared` needs no registry call for these (their schema ids are known)."""
        return all(record.serde.header_known for record in records)

    def send_prepared(self, records: Sequence[Prepared]) -> list[Future[Delivery]]:
        """Produce encoded events; each future resolves with its `Delivery` once the broker has it.

        The schema ids are looked up first, so an unreachable registry raises before any is produced.
        """
        self._refuse_in_bulk("send_prepared")
        values = [record.serde.frame(record.body) for record in records]
        self._start_poller()
        futures: list[Future[Delivery]] = []
        for record, value in zip(records, values, strict=True):
            future: Future[Delivery] = Future()
            self._produce_bytes(record.serde.topic.name, record.key, value, record.headers, _resolver(future, record))
            futures.append(future)
        # No poll here: the polling thread serves the delivery reports (a poll per call was a system call
        # per gateway request, and the reports it found came back on the caller's thread, not a batch).
        return futures

    def send_reported(
        self, records: Sequence[Prepared | PreparedValues], report: Callable[[KafkaError | None, Message], None]
    ) -> None:
        """Produce encoded events; librdkafka calls `report(error, message)` once for each, on the polling
        thread, once the broker has it (`error` None) or refused it.

        For a caller that waits for a whole batch (the HTTP gateway): one callable for all of them, where
        `send_prepared` makes a `Future` (with its `Condition`), a closure and a `Delivery` per record.
        The schema ids are looked up first, so an unreachable registry raises before any is produced.
        """
        self._refuse_in_bulk("send_reported")
        values = [record.serde.frame(record.body) for record in records]
        self._start_poller()
        for record, value in zip(records, values, strict=True):
            self._produce_bytes(record.serde.topic.name, record.key, value, record.headers, report)

    def publish(self, events: Iterable[Event], progress: Progress | None = None) -> EmitReport:
        """Send every event and wait until the broker has them all; `DeliveryError` if any failed.

        A `bulk` emitter produces them without a callback per record (only failures are reported)."""
        started = time.monotonic()
        tally = _Tally()
        if self._bulk:
            self._failures = tally
        on_delivery = None if self._bulk else tally.on_delivery
        sent_to: dict[str, int] = {}
        sent = 0
        for sent, event in enumerate(events, start=1):
            topic = self._topics[event.event_type]
            if topic.name not in sent_to:  # else the broker may auto-create it with its default partitions
                self.ensure_topic(topic)
                sent_to[topic.name] = 0
            serde = self._serdes.for_topic(topic)
            # The envelope defaults go into the record, not into a copy of the model (as `emit` does).
            key, body, headers = encode_for_spool(event, serde)
            self._produce_bytes(topic.name, key, serde.frame(body), headers, on_delivery)
            sent_to[topic.name] += 1
            if sent % POLL_EVERY == 0:  # a poll per record was a system call per record
                self._producer.poll(0)
                if progress is not None and sent % PROGRESS_EVERY == 0:
                    progress(sent, self._delivered(sent, tally))
        self._wait_for(sent, tally)
        if self._bulk:  # everything sent, flushed and not reported failed was delivered
            return EmitReport(published=sent, seconds=time.monotonic() - started, by_topic=sent_to)
        return EmitReport(published=tally.delivered, seconds=time.monotonic() - started, by_topic=tally.by_topic)

    def _delivered(self, sent: int, tally: _Tally) -> int:
        return sent - len(self._producer) - tally.failed if self._bulk else tally.delivered

    def publish_encoded(self, topic: Topic, records: Iterable[Encoded], progress: Progress | None = None) -> EmitReport:
        """Produce records encoded earlier (`encode_for_spool`): framed with the topic's schema id, not
        re-encoded; returns once the broker has them all, `DeliveryError` if any failed."""
        started = time.monotonic()
        header = self._serdes.for_topic(topic).header()
        if self._bulk:
            return self._publish_bulk(topic.name, header, records, progress, started)
        tally = _Tally()
        produce, poll = self._producer.produce, self._producer.poll
        sent = 0
        for sent, (key, body, headers) in enumerate(records, start=1):
            try:
                produce(topic.name, header + body, key, headers=headers, on_delivery=tally.on_delivery)
            except BufferError:
                self._produce_bytes(topic.name, key, header + body, headers, tally.on_delivery)
            if sent % POLL_EVERY == 0:
                poll(0)
                if progress is not None and sent % PROGRESS_EVERY == 0:
                    progress(sent, tally.delivered)
        self._wait_for(sent, tally)
        return EmitReport(published=tally.delivered, seconds=time.monotonic() - started, by_topic=tally.by_topic)

    def _publish_bulk(
        self, topic: str, header: bytes, records: Iterable[Encoded], progress: Progress | None, started: float
    ) -> EmitReport:
        """`publish_encoded` without a callback per record: only failures are reported (`bulk`), so
        what was sent, flushed and not reported failed is what the broker has."""
        self._failures = failures = _Tally()
        produce, poll = self._producer.produce, self._producer.poll
        sent = 0
        for sent, (key, body, headers) in enumerate(records, start=1):
            try:
                produce(topic, header + body, key, headers=headers)
            except BufferError:
                self._produce_bytes(topic, key, header + body, headers, None)
            if sent % POLL_EVERY == 0:
                poll(0)
                if progress is not None and sent % PROGRESS_EVERY == 0:
                    progress(sent, self._delivered(sent, failures))
        self._wait_for(sent, failures)
        return EmitReport(published=sent, seconds=time.monotonic() - started, by_topic={topic: sent} if sent else {})

    def _on_failure(self, error: KafkaError | None, message: Message) -> None:
        self._failures.on_delivery(error, message)

    def _refuse_in_bulk(self, method: str) -> None:
        if self._bulk:
            raise BackboneError(f"Emitter.{method} needs every delivery report; this emitter was made with bulk=True")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit what is published inside the block at its end; abort it when the block raises."""
        self._producer.begin_transaction()
        try:
            yield
            self._producer.commit_transaction(self._delivery_timeout_s)
        except BaseException:
            self._abort()
            raise

    def produce_bytes(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        """Queue one already-encoded record (a checkpoint, not an event); delivered by flush/commit."""
        if partition is None:
            self._producer.produce(topic, value, key)
        else:
            self._producer.produce(topic, value, key, partition=partition)
        self._producer.poll(0)

    def _init_transactions(self) -> None:
        try:
            self._producer.init_transactions(self._delivery_timeout_s)
        except KafkaException as error:
            raise ServiceUnavailableError(
                f"Kafka at {self._servers} did not initialise transactions: {error}", hint=KAFKA_HINT
            ) from error

    def _abort(self) -> None:
        try:
            self._producer.abort_transaction(self._delivery_timeout_s)
        except KafkaException as error:
            # A fenced or fatal producer cannot abort; the broker aborts on the next init or timeout.
            _log().warning("transaction abort failed", error=str(error))

    def poll(self, timeout: float = 0.0) -> int:
        """Serve the delivery reports librdkafka holds, on this thread (waiting up to `timeout` for one);
        returns how many were served. For an emitter made with `poll_thread=False`."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float | None = None) -> int:
        """Wait for outstanding deliveries; returns how many are still outstanding."""
        return int(self._producer.flush(self._delivery_timeout_s if timeout is None else timeout))

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is outstanding, stop the background poller and release the client.

        Releasing it at once matters to long-lived processes (the gateway, a test session): a producer
        left to the garbage collector keeps its threads and broker connections until then.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        if self._poller is not None:
            self._poller.join()
        self.flush(timeout)
        with suppress(KafkaException, RuntimeError), warnings.catch_warnings():
            # a fenced transactional producer cannot abort on close (its successor or the broker's timeout
            # does); the caller has already been told why it failed, so no second warning here
            warnings.simplefilter("ignore", RuntimeWarning)
            self._producer.close()

    def _produce_bytes(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[..., None] | None,
    ) -> None:
        while True:
            try:
                if on_delivery is None:  # a bulk emitter's producer reports failures to `_on_failure`
                    self._producer.produce(topic, value, key, headers=headers)
                else:
                    self._producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room again.
                self._producer.poll(0.05)

    def _wait_for(self, sent: int, tally: _Tally) -> None:
        remaining = self._producer.flush(self._delivery_timeout_s + 5)
        if remaining:
            raise DeliveryError(
                f"{remaining} of {sent} records were still undelivered after {self._delivery_timeout_s}s"
            )
        if tally.failed:
            raise DeliveryError(
                f"{tally.failed} of {sent} records were not delivered (first error: {tally.first_error})",
                hint="delivered records are safe to send again: ids are derived from the payload",
            )

    def _start_poller(self) -> None:
        # Futures from `send` resolve only when someone serves delivery reports; a daemon thread does.
        if self._poller is not None or not self._poll_thread:  # the common cases, without taking the lock
            return
        with self._poller_lock:
            if self._poller is None and not self._closed.is_set():
                self._poller = threading.Thread(target=self._poll_until_closed, name="emitter-poll", daemon=True)
                self._poller.start()

    def _poll_until_closed(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)


class _Tally:
    """Delivery reports of a `publish` call (served on whichever thread polls)."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error: str | None = None
        self.by_topic: dict[str, int] = {}
        # Reentrant: confluent-kafka may call back with a fatal error (e.g. a fenced transactional producer)
        # already raised, so the call that took the lock fails before `with` can release it; the next
        # report on the same thread must not wait for it forever.
        self._lock = threading.RLock()

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        with self._lock:
            if error is None:
                self.delivered += 1
                topic = message.topic() or "?"
                self.by_topic[topic] = self.by_topic.get(topic, 0) + 1
            else:
                self.failed += 1
                self.first_error = self.first_error or error.str()


def _headers(event: Event, extra: Headers | None) -> list[tuple[str, str | bytes | None]]:
    headers = {"event_type": event.event_type, "source_system": event.source_system}
    if event.correlation_id is not None:
        headers["correlation_id"] = event.correlation_id
    merged: dict[str, str | bytes] = {**headers, **(extra or {})}
    return [(name, value if isinstance(value, bytes) else value.encode("utf-8")) for name, value in merged.items()]


def _resolver(future: Future[Delivery], record: Prepared) -> Callable[[KafkaError | None, Message], None]:
    def on_delivery(error: KafkaError | None, message: Message) -> None:
        event = record.event
        if error is not None:
            future.set_exception(DeliveryError(f"{event.event_type} {event.key} not delivered: {error.str()}"))
        else:
            future.set_result(_delivery(message, event))

    return on_delivery


def _delivery(message: Message, event: Event) -> Delivery:
    return Delivery(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=event.key,
        event_id=event.event_id or "",
    )


def _log() -> Any:
    import structlog  # loaded when something is logged: `backbone emit`'s start-up need not pay for it

    return structlog.get_logger("emitter")
