"""`backbone run sink`: the PostgreSQL read model of what the backbone produces.

It materialises invoice candidates and posting requests (one row per id), posting acknowledgments,
billing responses and business exceptions (every state as history, and the latest state per id), and
every record of the event topics' dead-letter topics (`<topic>.dlq`, their `backbone.error.*` headers
as columns) into the tables of `consumers/postgres/migrations/` in one schema (default `backbone`).
Rows and consumed offsets commit in one database transaction (`backbone.streams.sink.SinkWorker`), so
the read model holds every record exactly once through crashes and replays; README.md ("The PostgreSQL
sink") lists the tables, views and settings.
"""

from __future__ import annotations

import functools
import gc
import operator
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import Message
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from backbone.domain.ids import derive_event_id, event_id_from_payload
from backbone.domain.models import (
    BillingResponse,
    BusinessException,
    Event,
    InvoiceCandidate,
    PostingAck,
    PostingRequest,
)
from backbone.kafka import topics as catalog
from backbone.kafka.admin import apply_topics
from backbone.kafka.compiled import Values
from backbone.kafka.serde import DecodeError, SerdeCache, TopicSerde, registry_client
from backbone.kafka.topics import Topic
from backbone.migrations import apply_migrations, check_schema_name
from backbone.observability import serve_metrics
from backbone.settings import Settings
from backbone.streams import clients
from backbone.streams.sink import (
    DEAD_LETTER_TABLE,
    SOURCE_COLUMNS,
    Row,
    SinkRoute,
    SinkTable,
    SinkWorker,
    dead_letter_row,
)

log = structlog.get_logger("sink")
MIGRATIONS = Path(__file__).with_name("migrations")
ENVELOPE = ("occurred_at", "source_system", "correlation_id")


class SinkSettings(BaseSettings):
    """`BACKBONE_SINK_*`: where the read model lives and how the sink reads (flags of `backbone run sink` win)."""

    model_config = SettingsConfigDict(env_prefix="BACKBONE_SINK_", frozen=True, extra="ignore")

    db_schema: str = Field(default="backbone", description="PostgreSQL schema of the read model.")
    group_id: str = Field(default="backbone-sink", description="Consumer group; its offsets live in sink_offsets.")
    topic_prefix: str = Field(default="", description="Prefix of every catalog topic name (isolated test topics).")
    batch_size: int = Field(default=5_000, ge=1, description="Records one database transaction holds at most.")
    crash_after_commit: int | None = Field(
        default=None, ge=1, description="Test hook: exit with status 137 right after the Nth database commit."
    )


# --- tables -------------------------------------------------------------------------------------------------


def _table(name: str, fields: tuple[str, ...], key: tuple[str, ...], *, latest: bool = False) -> SinkTable:
    return SinkTable(name, fields + SOURCE_COLUMNS, key, latest=latest)


CANDIDATE_FIELDS = (
    "candidate_id", "kind", "time_entry_id", "revision", "project_id", "client_id", "worker_id", "role", "task_id",
    "work_date", "contract_id", "contract_version", "billable_minutes", "hourly_rate", "discount_percent", "amount",
    "currency", "tax_code", "billing_entity", "replaces_candidate_id", "capped", "event_id", *ENVELOPE,
)  # fmt: skip
POSTING_FIELDS = (
    "posting_id", "posting_type", "time_entry_id", "revision", "project_id", "worker_id", "work_date", "amount",
    "currency", "erp_target", "reverses_posting_id", "event_id", *ENVELOPE,
)  # fmt: skip
ACK_FIELDS = (
    "posting_id", "ack_id", "erp_target", "status", "erp_document_id", "error_code", "error_message", *ENVELOPE,
)  # fmt: skip
RESPONSE_FIELDS = ("candidate_id", "response_id", "status", "invoice_id", "reason_code", "message", *ENVELOPE)
EXCEPTION_FIELDS = (
    "exception_id", "event_id", "kind", "status", "subject_type", "subject_id", "project_id", "owner",
    "amount_at_risk", "currency", "details", "opened_at", "resolved_at", *ENVELOPE,
)  # fmt: skip

INVOICE_CANDIDATES = _table("invoice_candidates", CANDIDATE_FIELDS, ("candidate_id",))
POSTING_REQUESTS = _table("posting_requests", POSTING_FIELDS, ("posting_id",))
POSTING_ACK_HISTORY = _table("posting_ack_history", ACK_FIELDS, ("posting_id", "ack_id"))
POSTING_ACKS = _table("posting_acks", ACK_FIELDS, ("posting_id",), latest=True)
BILLING_RESPONSE_HISTORY = _table("billing_response_history", RESPONSE_FIELDS, ("candidate_id", "response_id"))
BILLING_RESPONSES = _table("billing_responses", RESPONSE_FIELDS, ("candidate_id",), latest=True)
EXCEPTION_HISTORY = _table("exception_history", EXCEPTION_FIELDS, ("exception_id", "event_id"))
EXCEPTIONS = _table("exceptions", EXCEPTION_FIELDS, ("exception_id",), latest=True)


HISTORY_IDS = {"ack_id": "event_id", "response_id": "event_id"}
"""History columns named for what they identify, read from the event's `event_id`."""


@dataclass(frozen=True, eq=False)
class EventRows:
    """How the records of one event type become rows: the row's fields, the tables it goes to (a history
    table and its latest-state table share one row) and the column of the history id, if any.

    A record becomes its row either from its event (`of_event`, the model path) or from the values a
    compiled reader read (`of_values`, backbone.kafka.compiled); both give the same row
    (tests/unit/test_sink_rows.py holds them to it)."""

    event: type[Event]
    fields: tuple[str, ...]
    tables: tuple[SinkTable, ...]
    history_id: str | None = None

    def __post_init__(self) -> None:
        # Looked up for every record: positions in the model's field order found once.
        names = tuple(self.event.model_fields)
        picked = [names.index(f) for f in self.event_fields]
        payload = [i for i, name in enumerate(names) if name != "event_id"]
        object.__setattr__(self, "_pick", operator.itemgetter(*picked))
        object.__setattr__(self, "_history_at", self.fields.index(self.history_id) if self.history_id else None)
        object.__setattr__(self, "_payload_names", tuple(names[i] for i in payload))
        object.__setattr__(self, "_payload_of", operator.itemgetter(*payload))

    @property
    def event_fields(self) -> tuple[str, ...]:
        """The event's field each column of the row (but the source columns) is read from."""
        return tuple(HISTORY_IDS.get(f, f) for f in self.fields)

    @property
    def needed(self) -> tuple[str, ...]:
        """The event field a row cannot go without: the history id's, derived from the payload when null."""
        return (HISTORY_IDS.get(self.history_id, self.history_id),) if self.history_id else ()

    def of_event(self, event: Event, message: Message) -> list[tuple[SinkTable, Row]]:
        row = event_row(event, self.fields, message, self._history_at)  # type: ignore[attr-defined]
        return [(table, row) for table in self.tables]

    def of_values(self, values: Values, message: Message) -> list[tuple[SinkTable, Row]]:
        row: Row = self._pick(values)  # type: ignore[attr-defined]
        at: int | None = self._history_at  # type: ignore[attr-defined]
        if at is not None and row[at] is None:
            row = (*row[:at], self.derived_id(values), *row[at + 1 :])
        row += (message.topic(), message.partition(), message.offset())
        return [(table, row) for table in self.tables]

    def derived_id(self, values: Values) -> str:
        """`derive_event_id` of the event these values are, without building it."""
        payload = dict(zip(self._payload_names, self._payload_of(values), strict=True))  # type: ignore[attr-defined]
        return event_id_from_payload(self.event.event_type, payload)


@functools.cache
def _row_shape(
    model: type[Event], fields: tuple[str, ...]
) -> tuple[Callable[[Event], tuple[Any, ...]], tuple[int, ...]]:
    """How `fields` of `model` are read (one attrgetter) and where they hold enums (written by their
    value): found once per event class, not per record."""
    known = model.model_fields
    enums = tuple(i for i, f in enumerate(fields) if f in known and _is_enum(known[f].annotation))
    return operator.attrgetter(*(HISTORY_IDS.get(f, f) for f in fields)), enums  # type: ignore[return-value]


def _is_enum(annotation: Any) -> bool:
    options = typing.get_args(annotation) or (annotation,)
    return any(isinstance(option, type) and issubclass(option, Enum) for option in options)


def event_row(event: Event, fields: tuple[str, ...], message: Message, history_id_at: int | None = None) -> Row:
    """`fields` of `event` in order (the history id at `history_id_at`), then where the record came from."""
    read, enums = _row_shape(type(event), fields)
    values = list(read(event))
    for i in enums:
        value = values[i]
        if value is not None:
            values[i] = value.value
    if history_id_at is not None:
        values[history_id_at] = history_id(event)
    values += (message.topic(), message.partition(), message.offset())
    return tuple(values)


def history_id(event: Event) -> str:
    """The id a history row is unique by: the event id, or the one derived from the payload when it has none."""
    return event.event_id or derive_event_id(event)


CANDIDATE_ROWS = EventRows(InvoiceCandidate, CANDIDATE_FIELDS, (INVOICE_CANDIDATES,))
POSTING_ROWS = EventRows(PostingRequest, POSTING_FIELDS, (POSTING_REQUESTS,))
ACK_ROWS = EventRows(PostingAck, ACK_FIELDS, (POSTING_ACK_HISTORY, POSTING_ACKS), history_id="ack_id")
RESPONSE_ROWS = EventRows(
    BillingResponse, RESPONSE_FIELDS, (BILLING_RESPONSE_HISTORY, BILLING_RESPONSES), history_id="response_id"
)
EXCEPTION_ROWS = EventRows(BusinessException, EXCEPTION_FIELDS, (EXCEPTION_HISTORY, EXCEPTIONS), history_id="event_id")

candidate_rows = CANDIDATE_ROWS.of_event
posting_rows = POSTING_ROWS.of_event
ack_rows = ACK_ROWS.of_event
response_rows = RESPONSE_ROWS.of_event
exception_rows = EXCEPTION_ROWS.of_event


def dead_letter_rows(message: Message) -> list[tuple[SinkTable, Row]]:
    return [(DEAD_LETTER_TABLE, dead_letter_row(message))]


# --- topics ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkTopics:
    """The catalog topics the sink reads (tests give them unique names with `prefixed`)."""

    invoice_candidates: Topic = catalog.INVOICE_CANDIDATES
    posting_requests: Topic = catalog.POSTING_REQUESTS
    posting_acks: Topic = catalog.POSTING_ACKS
    billing_responses: Topic = catalog.BILLING_RESPONSES
    exceptions: Topic = catalog.EXCEPTIONS
    event_topics: tuple[Topic, ...] = catalog.EVENT_TOPICS
    """Whose dead-letter topics are materialised (every event topic's)."""

    @classmethod
    def prefixed(cls, prefix: str) -> SinkTopics:
        """Every topic (and its DLQ) renamed `<prefix><name>`, like the topology's test topics."""
        if not prefix:
            return cls()
        base = cls()
        renamed = {t.name: _renamed(t, prefix) for t in base.event_topics}
        return cls(
            invoice_candidates=renamed[base.invoice_candidates.name],
            posting_requests=renamed[base.posting_requests.name],
            posting_acks=renamed[base.posting_acks.name],
            billing_responses=renamed[base.billing_responses.name],
            exceptions=renamed[base.exceptions.name],
            event_topics=tuple(renamed.values()),
        )

    @property
    def dead_letter_topics(self) -> tuple[Topic, ...]:
        return tuple(t.dlq for t in self.event_topics if t.dlq is not None)

    def all(self) -> tuple[Topic, ...]:
        return self.event_topics + self.dead_letter_topics


def _renamed(topic: Topic, prefix: str) -> Topic:
    dlq = replace(topic.dlq, name=f"{prefix}{topic.dlq.name}") if topic.dlq else None
    return replace(topic, name=f"{prefix}{topic.name}", dlq=dlq)


def routes(topics: SinkTopics, serdes: SerdeCache) -> list[SinkRoute]:
    """One route per topic the sink reads: the five output streams and every dead-letter topic."""
    events = [
        (topics.invoice_candidates, CANDIDATE_ROWS),
        (topics.posting_requests, POSTING_ROWS),
        (topics.posting_acks, ACK_ROWS),
        (topics.billing_responses, RESPONSE_ROWS),
        (topics.exceptions, EXCEPTION_ROWS),
    ]
    decoded = [SinkRoute(topic.name, _decoding(serdes.for_topic(topic), rows), rows.tables) for topic, rows in events]
    dead = [SinkRoute(t.name, dead_letter_rows, (DEAD_LETTER_TABLE,)) for t in topics.dead_letter_topics]
    return decoded + dead


def _decoding(serde: TopicSerde, rows: EventRows) -> Callable[[Message], list[tuple[SinkTable, Row]]]:
    """A record's rows: read straight into the row by its writer schema's compiled row reader (the usual
    record: one call), else from the values its compiled reader reads (a history row whose id is derived
    from them), or, for a record those readers cannot vouch for, from the event the model decodes (or a
    `DecodeError`, which the worker turns into a dead letter, as before there were compiled readers). The
    three give the same row (tests/unit/test_sink_rows.py)."""
    if serde.event_cls is not rows.event:
        raise ValueError(f"topic {serde.topic.name} carries {serde.event_cls.__name__}, not {rows.event.__name__}")
    decode_row = serde.row_decoder(rows.event_fields, complete=rows.needed)
    tables = rows.tables
    only = tables[0] if len(tables) == 1 else None

    def of_record(message: Message) -> list[tuple[SinkTable, Row]]:
        row = decode_row(message)
        if row is not None:
            return [(only, row)] if only is not None else [(table, row) for table in tables]
        values = serde.decode_values(message)
        if values is not None:
            return rows.of_values(values, message)
        event = serde.decode(message)  # DecodeError → the worker dead-letters the record
        if not isinstance(event, rows.event):
            raise DecodeError(f"expected {rows.event.__name__}, got {type(event).__name__}", raw=message)
        return rows.of_event(event, message)

    return of_record


# --- running ----------------------------------------------------------------------------------------------------


def apply_sink_migrations(conninfo: str, schema: str = "backbone") -> list[int]:
    """Bring the read model's schema up to date (safe to run concurrently: an advisory lock serialises it)."""
    return apply_migrations(conninfo, check_schema_name(schema), MIGRATIONS)


class PostgresSink:
    """The read model's sink: its topics, its routes and the exactly-once worker that writes them."""

    def __init__(self, settings: Settings, sink: SinkSettings, *, topics: SinkTopics | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self.topics = topics or SinkTopics.prefixed(sink.topic_prefix)
        serdes = SerdeCache(registry_client(settings.registry.client_config()), auto_register=False)
        self.worker = SinkWorker(
            kafka=settings.kafka,
            streams=settings.streams,
            conninfo=settings.postgres.conninfo(),
            schema=check_schema_name(sink.db_schema),
            group_id=sink.group_id,
            routes=routes(self.topics, serdes),
            batch_size=sink.batch_size,
            name="postgres-sink",
            crash_after_commit=sink.crash_after_commit,
        )

    def run(self, *, handle_signals: bool = True) -> None:
        """Create missing topics, migrate the schema, then write until `stop()` (or SIGTERM)."""
        apply_topics(
            clients.admin(self.settings.kafka),
            self.topics.all(),
            replication_factor=self.settings.kafka.replication_factor,
        )
        applied = apply_sink_migrations(self.settings.postgres.conninfo(), self.sink.db_schema)
        log.info("sink schema ready", schema=self.sink.db_schema, migrations_applied=applied)
        self.worker.run(handle_signals=handle_signals)

    def stop(self) -> None:
        self.worker.stop()


def run_sink(settings: Settings, sink: SinkSettings) -> None:
    """`backbone run sink`: migrate the schema, serve metrics, write until SIGTERM."""
    serve_metrics(settings.runtime.metrics_port)
    postgres_sink = PostgresSink(settings, sink)
    freeze_startup_objects()
    postgres_sink.run()


YOUNG_COLLECTIONS_EVERY = 50_000


def freeze_startup_objects() -> None:
    """Leave what the process has loaded so far (modules, models, compiled schemas: ~75,000 objects) out
    of CPython's cyclic garbage collections. Each batch allocates a few containers per record, which
    keeps triggering collections, and every full one rescanned all of it; frozen, the sink spends about
    a third of the time in them (docs/benchmarks.md, "The PostgreSQL sink").

    The youngest generation is then collected every `YOUNG_COLLECTIONS_EVERY` allocations instead of 700: a
    batch keeps ~20,000 containers alive until it commits, and at 700 they were traced again and again on
    their way to the oldest generation (~390 young, 35 middle and 3 full collections, 0.12-0.14 s of CPU,
    per 40,000 records; 2 young ones, 0.06-0.07 s, with it). The sink's records make no reference cycles
    (those collections freed no object either way), so collecting less often holds no memory back."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTIONS_EVERY)
