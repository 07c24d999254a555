"""The sink's pure parts: rows from events, and the same rows from compiled readers' values (current and older
writer schemas, derived history ids), dead-letter rows, per-key deduplication of a batch, the SQL of its upserts
and the prefixed topics of tests. The database and broker side is tests/integration/test_sink.py."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import fastavro
import psycopg
import pytest
from confluent_kafka import Message
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.domain.ids import derive_event_id
from backbone.domain.models import BusinessException, InvoiceCandidate
from backbone.kafka import topics as catalog
from backbone.kafka import wire
from backbone.kafka.serde import DecodeError, TopicSerde
from backbone.migrations import discover
from backbone.streams.loop import dead_letter_headers
from backbone.streams.sink import DEAD_LETTER_COLUMNS, Batch, BinaryCopy, SinkTable, Statements, dead_letter_row
from consumers.postgres.sink import (
    ACK_ROWS,
    CANDIDATE_FIELDS,
    CANDIDATE_ROWS,
    EXCEPTION_HISTORY,
    EXCEPTION_ROWS,
    EXCEPTIONS,
    INVOICE_CANDIDATES,
    MIGRATIONS,
    POSTING_ROWS,
    RESPONSE_ROWS,
    EventRows,
    SinkTopics,
    _decoding,
    candidate_rows,
    exception_rows,
)
from tests.examples import RICH
from tests.unit.test_compiled_reader import _built_once

AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "schemas"


def _candidate() -> InvoiceCandidate:
    return InvoiceCandidate(
        occurred_at=AT, source_system="backbone", correlation_id="TE-1", candidate_id="c-1", kind="TIME",
        time_entry_id="TE-1", revision=1, project_id="P-1", client_id="C-1", worker_id="W-1",
        work_date=date(2026, 11, 3), contract_id="K-1", contract_version=2, billable_minutes=90,
        hourly_rate="120.00", discount_percent="10", amount="162.00", currency="EUR",
    )  # fmt: skip


def _exception(status: str) -> BusinessException:
    return BusinessException(
        occurred_at=AT, source_system="backbone", exception_id="x-1", kind="NO_RATE", status=status,
        subject_type="TIME_ENTRY", subject_id="TE-1", owner="FINANCE_OPS", details="no rate", opened_at=AT,
    )  # fmt: skip


def _message(offset: int = 7, partition: int = 2, topic: str = "billing.invoice-candidates.v1") -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=b"P-1", value=b"v", headers=[])


def test_a_candidate_row_keeps_money_as_decimal_enums_as_text_and_its_source() -> None:
    [(table, row)] = candidate_rows(_candidate(), _message())
    values = dict(zip(table.columns, row, strict=True))
    assert table is INVOICE_CANDIDATES
    assert values["amount"] == Decimal("162.00") and isinstance(values["amount"], Decimal)
    assert values["hourly_rate"] == Decimal("120.00")
    assert values["kind"] == "TIME" and type(values["kind"]) is str
    assert (values["source_topic"], values["source_partition"], values["source_offset"]) == (
        "billing.invoice-candidates.v1", 2, 7,
    )  # fmt: skip
    assert set(CANDIDATE_FIELDS) <= set(table.columns)


def test_an_exception_without_event_id_gets_its_derived_id_in_history_and_latest() -> None:
    event = _exception("OPEN")
    rows = exception_rows(event, _message(topic="ops.exceptions.v1"))
    assert [table for table, _ in rows] == [EXCEPTION_HISTORY, EXCEPTIONS]
    history = dict(zip(EXCEPTION_HISTORY.columns, rows[0][1], strict=True))
    assert history["event_id"] == derive_event_id(event)


@pytest.mark.parametrize(
    ("latest", "kept"),
    [
        pytest.param(False, "first", id="insert-once-keeps-the-first"),
        pytest.param(True, "last", id="latest-keeps-the-last"),
    ],
)
def test_a_batch_holds_one_row_per_key(latest: bool, kept: str) -> None:
    table = SinkTable("t", ("id", "value", "source_topic", "source_partition", "source_offset"), ("id",), latest=latest)
    batch = Batch()
    for offset, value in enumerate(["first", "middle", "last"]):
        batch.records.append((_message(offset), [(table, ("a", value, "t", 0, offset))]))
    batch.records.append((_message(9), [(table, ("b", "other", "t", 0, 9))]))
    assert batch.by_table()[table] == [("a", kept, "t", 0, {"first": 0, "last": 2}[kept]), ("b", "other", "t", 0, 9)]


def test_a_latest_table_needs_its_source_columns() -> None:
    with pytest.raises(ValueError, match="source"):
        SinkTable("t", ("id", "value"), ("id",), latest=True)


def test_a_dead_letter_topic_record_becomes_a_row_with_its_error_headers_as_columns() -> None:
    original = Message(topic="psa.time-entries.v1", partition=4, offset=41, key=b"TE-9", value=b"\x00bad",
                       headers=[("correlation_id", b"TE-9")])  # fmt: skip
    headers = dead_letter_headers(original, ValueError("not Avro"), "topology.entries", "DecodeError")
    letter = Message(topic="psa.time-entries.v1.dlq", partition=0, offset=3, key=b"TE-9", value=b"\x00bad",
                     headers=headers)  # fmt: skip
    row = dict(zip(DEAD_LETTER_COLUMNS, dead_letter_row(letter), strict=True))
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == ("psa.time-entries.v1.dlq", 0, 3)
    assert (row["error_topic"], row["error_partition"], row["error_offset"]) == ("psa.time-entries.v1", 4, 41)
    assert (row["error_class"], row["error_message"], row["error_processor"]) == (
        "DecodeError", "not Avro", "topology.entries",
    )  # fmt: skip
    assert isinstance(row["error_at"], datetime) and row["correlation_id"] == "TE-9"
    assert row["record_value"] == b"\x00bad"


def test_a_record_the_sink_cannot_store_becomes_a_row_naming_the_sink() -> None:
    row = dict(zip(DEAD_LETTER_COLUMNS, dead_letter_row(_message(), KeyError("boom"), "postgres-sink"), strict=True))
    assert (row["error_topic"], row["error_offset"], row["error_class"]) == (
        "billing.invoice-candidates.v1",
        7,
        "KeyError",
    )
    assert row["error_processor"] == "postgres-sink" and row["correlation_id"] is None


def test_nul_characters_in_headers_never_reach_postgresql_text() -> None:
    letter = Message(topic="x.dlq", partition=0, offset=0, key=b"k\x00", value=b"\x00",
                     headers=[("note\x00", b"nul\x00byte"), ("correlation_id", b"TE\x001")])  # fmt: skip
    row = dict(zip(DEAD_LETTER_COLUMNS, dead_letter_row(letter, ValueError("bad\x00value"), "sink"), strict=True))
    assert "\\u0000" not in row["headers"] and "\x00" not in row["headers"]
    assert "\x00" not in row["error_message"] and "\x00" not in row["correlation_id"]
    assert row["record_key"] == b"k\x00" and row["record_value"] == b"\x00"  # bytea keeps the bytes as they are


def test_malformed_error_headers_leave_columns_empty_instead_of_failing() -> None:
    letter = Message(topic="x.dlq", partition=0, offset=0, key=None, value=None,
                     headers=[("backbone.error.offset", b"many"), ("backbone.error.at", b"yesterday")])  # fmt: skip
    row = dict(zip(DEAD_LETTER_COLUMNS, dead_letter_row(letter), strict=True))
    assert row["error_offset"] is None and row["error_at"] is None


def test_latest_tables_only_take_rows_from_later_offsets() -> None:
    text = Statements("backbone").on_conflict(EXCEPTIONS).as_string(None)
    assert 'ON CONFLICT ("exception_id") DO UPDATE' in text
    assert '"exceptions".source_offset < EXCLUDED.source_offset' in text
    assert Statements("backbone").on_conflict(INVOICE_CANDIDATES).as_string(None).endswith("DO NOTHING")


def test_offsets_only_move_forward() -> None:
    assert '"sink_offsets".next_offset < EXCLUDED.next_offset' in Statements("s").save_offset().as_string(None)


def test_prefixed_topics_rename_every_topic_and_dead_letter_topic() -> None:
    topics = SinkTopics.prefixed("t1-")
    assert topics.invoice_candidates.name == "t1-billing.invoice-candidates.v1"
    assert topics.exceptions.dlq is not None and topics.exceptions.dlq.name == "t1-ops.exceptions.v1.dlq"
    assert len(topics.dead_letter_topics) == len(catalog.EVENT_TOPICS)
    assert all(t.name.startswith("t1-") for t in topics.all())
    assert SinkTopics.prefixed("") == SinkTopics()


def test_the_migrations_are_versioned_files() -> None:
    assert [m.version for m in discover(MIGRATIONS)][:1] == [1]


# --- rows from compiled readers (backbone/kafka/compiled.py) against rows from the model ---------------------

SINK_EVENTS = [
    pytest.param(catalog.INVOICE_CANDIDATES, CANDIDATE_ROWS, id="candidates"),
    pytest.param(catalog.POSTING_REQUESTS, POSTING_ROWS, id="postings"),
    pytest.param(catalog.POSTING_ACKS, ACK_ROWS, id="acks"),
    pytest.param(catalog.BILLING_RESPONSES, RESPONSE_ROWS, id="responses"),
    pytest.param(catalog.EXCEPTIONS, EXCEPTION_ROWS, id="exceptions"),
]
OLD_SCHEMAS = {"posting-ack": "posting-ack.v1.avsc", "billing-response": "billing-response.v1.avsc",
               "exception": "exception.v1.avsc"}  # fmt: skip


def _serde(topic: catalog.Topic) -> TopicSerde:
    return TopicSerde(topic, MockSchemaRegistryClient({"url": "mock://"}))


def _records(topic: catalog.Topic, serde: TopicSerde) -> list[bytes]:
    """The rich example with and without its event id, in the current schema and in the older one."""
    assert topic.event is not None and topic.event_type is not None
    rich = topic.event.model_validate(RICH[topic.event_type])
    values = [serde.encode_value(rich), serde.encode_value(rich.model_copy(update={"event_id": None}))]
    if topic.event_type in OLD_SCHEMAS:
        old = json.loads((FIXTURES / OLD_SCHEMAS[topic.event_type]).read_text())
        schema_id = serde.registry.register_schema(topic.value_subject, Schema(json.dumps(old), "AVRO"))
        names = {f["name"] for f in old["fields"]}
        for event in (rich, rich.model_copy(update={"event_id": None})):
            out = io.BytesIO()
            record = {k: v for k, v in wire.to_record(event).items() if k in names}
            fastavro.schemaless_writer(out, fastavro.parse_schema(old, named_schemas={}), record)
            values.append(b"\x00" + schema_id.to_bytes(4, "big") + out.getvalue())
    return values


def _typed(rows: list[tuple[SinkTable, tuple[object, ...]]]) -> list[tuple[SinkTable, list[tuple[type, str]]]]:
    """Rows compared with their values' types and exact text (a decimal's exponent, an instant's zone)."""
    return [(table, [(type(v), repr(v)) for v in row]) for table, row in rows]


@pytest.mark.parametrize(("topic", "rows"), SINK_EVENTS)
def test_compiled_reads_give_the_rows_the_model_gives(topic: catalog.Topic, rows: EventRows) -> None:
    serde = _serde(topic)
    route, decode_row = _decoding(serde, rows), serde.row_decoder(rows.event_fields, complete=rows.needed)
    for value in _records(topic, serde):
        record = Message(topic=topic.name, partition=1, offset=3, key=b"k", value=value, headers=[])
        values = serde.decode_values(record)
        assert values is not None, "the compiled reader should read every valid record"
        from_event = _typed(rows.of_event(serde.decode(record), record))
        assert _typed(rows.of_values(values, record)) == from_event
        assert _typed(route(record)) == from_event
        row = decode_row(record)  # its writer schema fetched above: read straight into the row
        if rows.history_id is None or values[list(rows.event.model_fields).index("event_id")] is not None:
            assert row is not None, "the row reader should read every valid record with its history id"
            assert _typed([(rows.tables[0], row)]) == from_event[:1]
        else:
            assert row is None, "a history id derived from the payload is left to the values"


def test_the_first_record_of_a_writer_schema_takes_the_values_way_which_fetches_it() -> None:
    topic = catalog.INVOICE_CANDIDATES
    serde = _serde(topic)
    decode_row = serde.row_decoder(CANDIDATE_ROWS.event_fields)
    record = Message(
        topic=topic.name, partition=0, offset=1, key=b"k", value=serde.encode_value(_candidate()), headers=[]
    )
    assert decode_row(record) is None  # the writer schema is not fetched yet: decode_values will
    assert serde.decode_values(record) is not None
    assert decode_row(record) == candidate_rows(_candidate(), record)[0][1]
    unknown = Message(topic=topic.name, partition=0, offset=2, key=b"k", value=b"\x00\x00\x00\x7f\x7f", headers=[])
    assert decode_row(unknown) is None
    with pytest.raises(DecodeError, match="unknown writer schema"):
        _decoding(serde, CANDIDATE_ROWS)(unknown)


@pytest.mark.parametrize(("topic", "rows"), SINK_EVENTS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_record_gets_the_models_rows_from_its_row_reader_or_is_left_to_the_model(
    topic: catalog.Topic, rows: EventRows, data: st.DataObject
) -> None:
    serde, parsed, records = _built_once(topic)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, data.draw(records))
    record = Message(topic=topic.name, partition=4, offset=5, key=b"k", value=serde.header() + out.getvalue())
    serde.decode_values(record)  # the writer schema fetched, as the route's first record of it does
    row = _row_decoder(topic, rows)(record)
    try:
        expected = rows.of_event(serde.decode_by_model(record), record)
    except DecodeError:
        assert row is None, "the row reader read a record the model refuses"
        return
    if row is not None:
        assert _typed([(t, row) for t in rows.tables]) == _typed(expected)
    assert _typed(_decoding(serde, rows)(record)) == _typed(expected)


@functools.cache
def _row_decoder(topic: catalog.Topic, rows: EventRows) -> Callable[[Message], tuple[object, ...] | None]:
    serde, _, _ = _built_once(topic)
    return serde.row_decoder(rows.event_fields, complete=rows.needed)


def test_a_record_the_compiled_reader_defers_gets_the_models_row_or_a_decode_error() -> None:
    topic = catalog.INVOICE_CANDIDATES
    serde = _serde(topic)
    route = _decoding(serde, CANDIDATE_ROWS)
    odd = _candidate().model_copy(update={"worker_id": "W\u00a01"})  # valid, but not plainly printable
    record = Message(topic=topic.name, partition=0, offset=1, key=b"k", value=serde.encode_value(odd), headers=[])
    assert serde.decode_values(record) is None
    assert route(record) == candidate_rows(odd, record)
    bad = Message(topic=topic.name, partition=0, offset=2, key=b"k", value=serde.encode_value(odd)[:-3], headers=[])
    with pytest.raises(DecodeError):
        route(bad)


INT4, INT8, TEXT, JSONB = (psycopg.postgres.types[name].oid for name in ("int4", "int8", "text", "jsonb"))
BPCHAR = psycopg.postgres.types["bpchar"].oid


def test_a_binary_copy_writes_char_as_text_and_is_refused_for_a_jsonb_column() -> None:
    binary = BinaryCopy.of(("id", "currency", "n"), {"id": TEXT, "currency": BPCHAR, "n": INT4})
    assert binary is not None and binary.types == (TEXT, TEXT, INT4)
    assert BinaryCopy.of(("id", "headers"), {"id": TEXT, "headers": JSONB}) is None
    assert BinaryCopy.of(("id", "gone"), {"id": TEXT}) is None, "a column the table lacks: text COPY says so"


@pytest.mark.parametrize(
    ("column_type", "values", "binary"),
    [
        pytest.param(INT4, [0, 2**31 - 1, -(2**31)], True, id="int4-bounds-fit"),
        pytest.param(INT4, [1, 2**31], False, id="int4-above-would-wrap"),
        pytest.param(INT4, [-(2**31) - 1, 1], False, id="int4-below-would-wrap"),
        pytest.param(INT8, [2**31, -(2**63)], True, id="int8-takes-a-long"),
        pytest.param(INT8, [2**63], False, id="int8-above"),
        pytest.param(INT4, [1, None], False, id="a-null-goes-as-text"),
        pytest.param(INT4, ["1"], False, id="not-an-integer-goes-as-text"),
    ],
)
def test_a_batch_goes_binary_only_when_every_integer_fits_its_column(
    column_type: int, values: list[object], binary: bool
) -> None:
    copy = BinaryCopy.of(("id", "n"), {"id": TEXT, "n": column_type})
    assert copy is not None
    assert copy.takes([(f"id-{i}", value) for i, value in enumerate(values)]) is binary
