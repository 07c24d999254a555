"""Confluent wire format for catalog topics: Avro values through the schema registry, UTF-8 keys.

Values are the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body) under the
subject `<topic>-value` (TopicNameStrategy), so any Confluent client reads what backbone writes
(`tests/integration/test_foreign_consumer.py` holds us to it). Schema ids come from confluent-kafka's
`SchemaRegistryClient` (which caches them), or, where only the id of what is written is needed (the
emitter), from `backbone.kafka.schema_ids.PlainRegistry`, one HTTP request without the client's imports
(the client is loaded only when used: its imports cost more than a short emit's lines); the Avro body is
written by `wire.body_writer` (fastavro's bytes, from the model's values) and read by fastavro's
`schemaless_reader` into the plain dicts of `backbone.kafka.wire`, the one seam between models and
records. confluent-kafka's `AvroSerializer`/`AvroDeserializer` frame the same bytes but run their
data-contract rule engine and re-expand the reader schema on every record, which backbone does not use and
which cost more than the Avro itself (`benchmarks/emit_bench.py` prints both). Keys are the catalog key
as a plain UTF-8 string, so compaction and partitioning work without the registry.

`TopicSerde` holds one topic's schema id and its readers per writer schema id, built once and cached
by `SerdeCache`. A record written with another (older or newer) schema is resolved to the working
tree's schema, as Avro schema resolution says. Decoding failures raise `DecodeError`, which keeps the
raw message so callers can dead-letter it. `decode_values` reads a record's field values without a dict
or a model, through a reader compiled per writer schema (`backbone.kafka.compiled`), for consumers that
need only the values; what it cannot vouch for is left to `decode`. `row_decoder` reads a record straight
into the row a consumer stores (the PostgreSQL sink), by the same compiled lines.
`register_all` and `check_compatibility` serve `backbone up` and `backbone schemas`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import fastavro
from pydantic import ValidationError

from backbone.domain.models import Event
from backbone.errors import BackboneError, InvalidInputError, ServiceUnavailableError
from backbone.kafka import wire
from backbone.kafka.compiled import (
    RowReader,
    Values,
    ValuesReader,
    compile_reader,
    compile_row_reader,
    event_builder,
)
from backbone.kafka.schema_ids import CREDENTIALS_HINT, REGISTRY_HINT, PlainRegistry
from backbone.kafka.topics import EVENT_TOPICS, Topic

if TYPE_CHECKING:
    from confluent_kafka import Message
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

T = TypeVar("T")
SUBJECT_NOT_FOUND = 40401
MAGIC_BYTE = 0
HEADER_BYTES = 5


class DecodeError(BackboneError):
    """A record that could not be turned into a canonical event. `raw` is the untouched message."""

    def __init__(self, reason: str, *, raw: Message, cause: BaseException | None = None) -> None:
        super().__init__(f"{raw.topic()}/{raw.partition()}@{raw.offset()}: {reason}")
        self.reason = reason
        self.raw = raw
        self.error_class = type(cause).__name__ if cause is not None else "DecodeError"


def registry_client(config: dict[str, Any]) -> SchemaRegistryClient:
    """A registry client from `Settings.registry.client_config()`."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient(config)


def value_schema(topic: Topic) -> Schema:
    """The working tree's value schema of a catalog topic."""
    from confluent_kafka.schema_registry import Schema

    return Schema(wire.schema_str(_event_of(topic)), "AVRO")


def _registry_errors() -> tuple[type[SchemaRegistryError], tuple[type[BaseException], ...]]:
    """The client's error class and the transport errors that mean "unreachable", imported only once a
    client is in use (`registry_client`): its vendored httpx's `TransportError`, and `OSError`."""
    from confluent_kafka.schema_registry import SchemaRegistryError

    try:
        from confluent_kafka.schema_registry.common._httpx_compat import httpx as _http

        return SchemaRegistryError, (_http.TransportError, OSError)
    except ImportError:  # pragma: no cover - a later client may move it
        return SchemaRegistryError, (OSError,)


class TopicSerde:
    """Encodes events for one topic and decodes its records; build once per topic (see `SerdeCache`)."""

    def __init__(
        self, topic: Topic, registry: SchemaRegistryClient | PlainRegistry, *, auto_register: bool = True
    ) -> None:
        """`registry` is confluent-kafka's client, or a `PlainRegistry` where only the schema id of what
        is written is needed (such a serde cannot decode records written with another schema)."""
        self.topic = topic
        self.event_cls = _event_of(topic)
        self.registry = registry
        self._auto_register = auto_register
        self._schema_str = wire.schema_str(self.event_cls)
        self._parsed = wire.parsed_schema(self.event_cls)
        self._write_body = wire.body_writer(self.event_cls)
        self._header: bytes | None = None
        """Magic byte and schema id of what this process writes (known after the first encode)."""
        self._readers: dict[int, tuple[Any, Any]] = {}
        """Writer schema id -> (writer schema, reader schema or None when they are the same)."""
        self._writer_schemas: dict[int, dict[str, Any]] = {}
        """Writer schema id -> the writer schema as the registry gave it (parsed JSON)."""
        self._value_readers: dict[int, ValuesReader | None] = {}
        """Writer schema id -> its compiled reader, or None when its records go through the model."""
        self._compiled: dict[bytes, ValuesReader] = {}
        """A record's first bytes (magic byte and writer schema id) -> its compiled reader, where it has one:
        `decode`'s one lookup per record."""
        self._build: Callable[[Values], Event] | None = None
        """Builds the event from a compiled reader's values (made with the first compiled reader)."""

    def encode_key(self, event: Event) -> bytes:
        return event.key.encode("utf-8")

    def encode_value(self, event: Event) -> bytes:
        """Confluent-framed Avro; registers the schema on first use when `auto_register` is on."""
        body = self.encode_body(event)  # first, so that an event refused never reaches the registry
        return (self._header or self.header()) + body  # `frame` without its two calls (per output of the topology)

    def encode_body(self, event: Event, updates: dict[str, Any] | None = None) -> bytes:
        """The Avro body alone (no framing): needs no registry, so a whole input can be encoded, and
        refused, before the first record is produced. `updates` replace fields of the record (the
        emitter's envelope defaults, already valid), sparing a copy of the model."""
        if not isinstance(event, self.event_cls):
            raise InvalidInputError(
                f"topic {self.topic.name} carries {self.event_cls.__name__}, not {type(event).__name__}"
            )
        values = {**event.__dict__, **updates} if updates else event.__dict__
        try:
            return self._write_body(values)
        except (ValueError, TypeError, ArithmeticError) as error:
            raise InvalidInputError(f"cannot encode {event.event_type} {event.key!r:.80}: {error}") from error

    def frame(self, body: bytes) -> bytes:
        """Magic byte and schema id before an Avro body; registers the schema on first use."""
        return self.header() + body

    @property
    def header_known(self) -> bool:
        """Whether `header` answers without asking the registry."""
        return self._header is not None

    def header(self) -> bytes:
        """Magic byte and the schema id this process writes with (looked up, or registered, once)."""
        if self._header is None:
            schema_id = self._schema_id()
            self._header = bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")
        return self._header

    def _schema_id(self) -> int:
        subject = self.topic.value_subject
        if isinstance(self.registry, PlainRegistry):
            return self.registry.schema_id(subject, self._schema_str, register=self._auto_register)
        from confluent_kafka.schema_registry import Schema

        client, schema = self.registry, Schema(self._schema_str, "AVRO")
        if self._auto_register:
            return _registry_call(lambda: client.register_schema(subject, schema), subject)
        return _registry_call(lambda: client.lookup_schema(subject, schema).schema_id, subject)  # type: ignore[return-value]

    def decode(self, message: Message) -> Event:
        """The event a consumed record carries; `DecodeError` (with the raw message) when it has none.

        A record its writer schema's compiled reader vouches for is built from the values it read
        (`backbone.kafka.compiled`: a quarter of fastavro + the model's cost); any other record is read
        by fastavro and validated by the model, which accepts it or says why not."""
        data = message.value()
        if data is not None and (read := self._compiled.get(data[:HEADER_BYTES])) is not None:
            values = read(data)
        else:
            values = self.decode_values(message)
        if values is not None and self._build is not None:
            return self._build(values)
        return self.decode_by_model(message)

    def decode_by_model(self, message: Message) -> Event:
        """`decode` through fastavro's dict and the model's validation, for every record."""
        data = message.value()
        if data is None:
            raise DecodeError("record has no value (a tombstone)", raw=message)
        if len(data) < HEADER_BYTES:
            raise DecodeError(
                f"{len(data)} bytes are too short for the Confluent framing (magic byte + 4-byte schema id)",
                raw=message,
            )
        if data[0] != MAGIC_BYTE:
            raise DecodeError(f"unexpected magic byte {data[0]}: not Confluent-framed Avro", raw=message)
        schema_id = int.from_bytes(data[1:HEADER_BYTES], "big")
        writer, reader = self._readers.get(schema_id) or self._reader_for(schema_id, message)
        body = io.BytesIO(data)
        body.seek(HEADER_BYTES)
        try:
            record = fastavro.schemaless_reader(body, writer, reader)
            return wire.from_record(self.event_cls, record)  # type: ignore[arg-type]
        except Exception as error:
            raise DecodeError(_describe(error), raw=message, cause=error) from error

    def decode_values(self, message: Message) -> Values | None:
        """The field values of the event a record carries, read without a dict or a model by the
        compiled reader of its writer schema (`backbone.kafka.compiled`); None when only `decode` can
        say what the record holds (or that it holds nothing valid). Registry failures raise as in `decode`."""
        data = message.value()
        if data is None or len(data) < HEADER_BYTES or data[0] != MAGIC_BYTE:
            return None
        schema_id = int.from_bytes(data[1:HEADER_BYTES], "big")
        try:
            read = self._value_readers[schema_id]
        except KeyError:
            read = self._compiled_reader(schema_id, message)
        return read(data) if read is not None else None

    def row_decoder(
        self, fields: tuple[str, ...], *, complete: tuple[str, ...] = ()
    ) -> Callable[[Message], tuple[Any, ...] | None]:
        """A function reading a record straight into a row: `fields` of the event it carries, then the
        record's topic, partition and offset, as `compiled.compile_row_reader` reads them, with one
        call per record; for consumers that only store what they read (the PostgreSQL sink). It returns
        None where `decode_values` would (the record is left to `decode`), when a field of `complete` is
        null, and for a writer schema `decode_values` or `decode` has not fetched yet: those two ask
        the registry and say what a record of an unknown schema is, so the first record of each writer
        schema goes their way."""
        readers: dict[bytes, RowReader | None] = {}

        def decode_row(message: Message) -> tuple[Any, ...] | None:
            data = message.value()
            if data is None:
                return None
            header = data[:HEADER_BYTES]
            try:
                read = readers[header]
            except KeyError:
                read = self._row_reader(header, fields, complete, readers)
            if read is None:
                return None
            return read(data, message.topic(), message.partition(), message.offset())

        return decode_row

    def _row_reader(
        self,
        header: bytes,
        fields: tuple[str, ...],
        complete: tuple[str, ...],
        readers: dict[bytes, RowReader | None],
    ) -> RowReader | None:
        """The row reader of the writer schema `header` names, compiled once it is known (kept in `readers`)."""
        schema_id = int.from_bytes(header[1:], "big")
        if len(header) < HEADER_BYTES or header[0] != MAGIC_BYTE or schema_id not in self._writer_schemas:
            return None
        try:
            read: RowReader | None = compile_row_reader(
                self._writer_schemas[schema_id], wire.schema_for(self.event_cls), self.event_cls, fields,
                extra=("topic", "partition", "offset"), complete=complete, start=HEADER_BYTES,
            )  # fmt: skip
        except Exception as reason:  # as in _compiled_reader: decode_values and decode read them
            _log().debug("records of this writer schema are not read into rows", schema_id=schema_id,
                         topic=self.topic.name, reason=str(reason))  # fmt: skip
            read = None
        readers[header] = read
        return read

    def _compiled_reader(self, schema_id: int, message: Message) -> ValuesReader | None:
        if schema_id not in self._writer_schemas:
            self._reader_for(schema_id, message)
        try:
            read: ValuesReader | None = compile_reader(
                self._writer_schemas[schema_id], wire.schema_for(self.event_cls), self.event_cls, start=HEADER_BYTES
            )
        except Exception as reason:  # CannotCompile, or a schema shape it did not foresee: the model reads them
            _log().debug("records of this writer schema are read through the model", schema_id=schema_id,
                     topic=self.topic.name, reason=str(reason))  # fmt: skip
            read = None
        if read is not None:
            self._build = self._build or event_builder(self.event_cls)
            self._compiled[bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")] = read
        self._value_readers[schema_id] = read
        return read

    def _reader_for(self, schema_id: int, message: Message) -> tuple[Any, Any]:
        """Fetch and parse a writer schema once; resolve it to ours only when it differs."""
        if isinstance(self.registry, PlainRegistry):
            raise BackboneError(f"{self.topic.name}: this serde writes only (it has no registry client to read with)")
        schema_registry_error, transport_errors = _registry_errors()
        try:
            registered = self.registry.get_schema(schema_id)
        except transport_errors as error:
            # Not the record's fault: the caller must not dead-letter it.
            raise ServiceUnavailableError(f"schema registry unreachable: {error}", hint=REGISTRY_HINT) from error
        except schema_registry_error as error:
            if error.http_status_code >= 500 or error.http_status_code in _ACCESS_REFUSED:
                raise _unavailable(error, "") from error  # the registry's fault or ours, never the record's
            raise DecodeError(f"unknown writer schema: {error.error_message}", raw=message, cause=error) from error
        try:
            # each schema parsed on its own: a writer's and our reader's record share a name
            writer = fastavro.parse_schema(json.loads(registered.schema_str or ""), named_schemas={})
        except Exception as error:
            raise DecodeError(f"writer schema {schema_id} is not Avro: {error}", raw=message, cause=error) from error
        self._writer_schemas[schema_id] = json.loads(registered.schema_str or "")
        same = self._writer_schemas[schema_id] == wire.schema_for(self.event_cls)
        self._readers[schema_id] = (writer, None if same else self._parsed)
        return self._readers[schema_id]


class SerdeCache:
    """One `TopicSerde` per topic name, sharing one registry client."""

    def __init__(self, registry: SchemaRegistryClient | PlainRegistry, *, auto_register: bool = True) -> None:
        self.registry = registry
        self._auto_register = auto_register
        self._serdes: dict[str, TopicSerde] = {}

    def for_topic(self, topic: Topic) -> TopicSerde:
        serde = self._serdes.get(topic.name)
        if serde is None:
            serde = self._serdes[topic.name] = TopicSerde(topic, self.registry, auto_register=self._auto_register)
        return serde


def register_all(registry: SchemaRegistryClient, topics: Iterable[Topic] = EVENT_TOPICS) -> dict[str, int]:
    """Register every event topic's value schema; returns subject -> schema id. Idempotent."""
    ids: dict[str, int] = {}
    for topic in topics:
        if topic.event is None:
            continue
        ids[topic.value_subject] = _register(registry, topic)
    return ids


def _register(registry: SchemaRegistryClient, topic: Topic) -> int:
    schema = value_schema(topic)
    return _registry_call(lambda: registry.register_schema(topic.value_subject, schema), topic.value_subject)


def check_compatibility(registry: SchemaRegistryClient, topics: Iterable[Topic] = EVENT_TOPICS) -> list[str]:
    """Problems registering the working tree's schemas would meet (empty when all are compatible).

    A subject that is not registered yet is no problem: its first registration always succeeds.
    """
    problems: list[str] = []
    for topic in topics:
        if topic.event is None:
            continue
        problem = _compatibility_problem(registry, topic)
        if problem:
            problems.append(problem)
    return problems


def _compatibility_problem(registry: SchemaRegistryClient, topic: Topic) -> str | None:
    subject = topic.value_subject
    schema_registry_error, _ = _registry_errors()
    try:
        compatible = _registry_call(lambda: registry.test_compatibility(subject, value_schema(topic)), subject)
    except schema_registry_error as error:
        if error.error_code == SUBJECT_NOT_FOUND:
            return None
        raise BackboneError(f"checking {subject} failed: {error.error_message}") from error
    if compatible:
        return None
    registered = registry.get_latest_version(subject)
    old = json.loads(registered.schema.schema_str or "{}")
    differences = describe_differences(old, wire.schema_for(_event_of(topic)))
    return (
        f"{subject}: schemas/avro/{topic.event_type}.avsc is incompatible with "
        f"registered version {registered.version} ({differences})"
    )


def describe_differences(registered: dict[str, Any], local: dict[str, Any]) -> str:
    """A short human account of how two record schemas' top-level fields differ."""
    old = {f["name"]: f for f in registered.get("fields", [])}
    new = {f["name"]: f for f in local.get("fields", [])}
    notes = [f"removed {n}" for n in old if n not in new]
    notes += [f"added {n} without a default" for n, f in new.items() if n not in old and "default" not in f]
    notes += [f"changed type of {n}" for n in old.keys() & new.keys() if old[n]["type"] != new[n]["type"]]
    return "; ".join(sorted(notes)) or "see the registry's compatibility rules"


def _registry_call(call: Callable[[], T], subject: str) -> T:
    """Run a registry request; an unreachable registry becomes `ServiceUnavailableError`."""
    schema_registry_error, transport_errors = _registry_errors()
    try:
        return call()
    except transport_errors as error:
        raise ServiceUnavailableError(
            f"schema registry unreachable ({subject}): {error}", hint=REGISTRY_HINT
        ) from error
    except schema_registry_error as error:
        if error.http_status_code >= 500 or error.http_status_code in _ACCESS_REFUSED:
            raise _unavailable(error, f" ({subject})") from error
        if error.http_status_code == 409:
            raise BackboneError(
                f"{subject}: the registry refused the schema as incompatible: {error.error_message}",
                hint="run `backbone schemas check` to see what changed; only add optional fields",
            ) from error
        raise


_ACCESS_REFUSED = (401, 403)


def _unavailable(error: SchemaRegistryError, where: str) -> ServiceUnavailableError:
    """A registry that failed (5xx) or refused our credentials (401/403): retry later, or fix the settings."""
    if error.http_status_code in _ACCESS_REFUSED:
        return ServiceUnavailableError(
            f"schema registry refused this client{where}: {error.error_message}", hint=CREDENTIALS_HINT
        )
    return ServiceUnavailableError(f"schema registry failed{where}: {error.error_message}")


def _event_of(topic: Topic) -> type[Event]:
    if topic.event is None:
        raise BackboneError(f"topic {topic.name} carries no canonical event (is it a dead-letter topic?)")
    return topic.event


def _describe(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        # Valid Avro that breaks a model rule: say which fields, not pydantic's whole report.
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_url=False))
        return f"invalid {error.title}: {fields}"
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else 'no details'}"


def _log() -> Any:
    import structlog  # loaded when something is logged: `backbone emit`'s start-up need not pay for it

    return structlog.get_logger(__name__)
