"""Compiled Avro readers against the model path they stand in for (backbone/kafka/compiled.py).

The guard is differential: for every record, the compiled reader either reads exactly the values the
model path (fastavro, then the pydantic model) gives, types and decimal exponents included, or defers
(None) and the model path decides. Records come from the current schemas, from the older writer schemas
of tests/fixtures/schemas/, from hypothesis (any value Avro can carry, bytes chosen freely) and from
corrupted bodies. Values a model shares (`shared_values`) are one object for every record, and still
the model path's values. The integration side (rows in PostgreSQL) is tests/integration/test_sink.py.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import Message
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, Field

from backbone.domain.models import (
    ALL_EVENTS,
    Canonical,
    ContractVersion,
    Decision,
    Event,
    PostingAck,
    Project,
    RateCardLine,
)
from backbone.kafka import compiled, wire
from backbone.kafka import topics as catalog
from backbone.kafka.compiled import CannotCompile, compile_reader
from backbone.kafka.serde import DecodeError, TopicSerde
from tests.examples import RICH

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "schemas"
SINK_TOPICS = (
    catalog.INVOICE_CANDIDATES,
    catalog.POSTING_REQUESTS,
    catalog.POSTING_ACKS,
    catalog.BILLING_RESPONSES,
    catalog.EXCEPTIONS,
)
REFERENCE_TOPICS = (catalog.CLIENTS, catalog.PROJECTS, catalog.WORKERS, catalog.CONTRACTS)
OLD_SCHEMAS = {  # topic -> the writer schema its records had before fields were added
    catalog.POSTING_ACKS: "posting-ack.v1.avsc",
    catalog.BILLING_RESPONSES: "billing-response.v1.avsc",
    catalog.EXCEPTIONS: "exception.v1.avsc",
}


# --- both ways ------------------------------------------------------------------------------------------


def model_values(event: Event) -> tuple[Any, ...]:
    """The event's values in field order, enums as their values: what a compiled reader reads."""
    return tuple(_plain(getattr(event, name)) for name in type(event).model_fields)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _typed(values: tuple[Any, ...]) -> list[tuple[type, str]]:
    """Values compared with their types and exact text (a decimal's exponent, an instant's zone)."""
    return [(type(v), repr(v)) for v in values]


def model_path(serde: TopicSerde, message: Message) -> tuple[Any, ...] | DecodeError:
    try:
        return model_values(serde.decode_by_model(message))
    except DecodeError as error:
        return error


def assert_agrees(serde: TopicSerde, message: Message, *, compiled_reads: bool | None = None) -> Any:
    """The compiled reader reads the model path's values or defers; `compiled_reads` pins which."""
    compiled = serde.decode_values(message)
    expected = model_path(serde, message)
    if compiled is not None:
        assert not isinstance(expected, DecodeError), f"compiled read a record the model refuses: {expected}"
        assert _typed(compiled) == _typed(expected)
    if compiled_reads is not None:
        assert (compiled is not None) is compiled_reads
    return expected


def message(value: bytes | None, topic: str = "t") -> Message:
    return Message(topic=topic, partition=1, offset=9, key=b"k", value=value, headers=[])


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(schema), named_schemas={}), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + out.getvalue()


def registered(serde: TopicSerde, schema: dict[str, Any]) -> int:
    """Registers `schema` as a writer schema of the serde's topic; its id."""
    return serde.registry.register_schema(serde.topic.value_subject, Schema(json.dumps(schema), "AVRO"))


@pytest.fixture
def registry() -> MockSchemaRegistryClient:
    return MockSchemaRegistryClient({"url": "mock://"})


def _event(topic: catalog.Topic, **overrides: Any) -> Event:
    assert topic.event is not None
    return topic.event.model_validate(RICH[topic.event_type or ""] | overrides)


def _minimal(topic: catalog.Topic) -> Event:
    """The rich example with every optional field empty (and no event id)."""
    assert topic.event is not None
    return _event(topic, **{name: f.default for name, f in topic.event.model_fields.items() if not f.is_required()})


# --- what compiles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_cls", list(ALL_EVENTS.values()), ids=lambda c: c.event_type)
def test_every_event_compiles_a_contracts_rate_card_included(event_cls: type[Event]) -> None:
    schema = wire.schema_for(event_cls)
    compile_reader(schema, schema, event_cls)


def test_shared_values_of_a_field_the_model_lacks_are_refused() -> None:
    class Misnamed(PostingAck):
        shared_values = frozenset({"no_such_field"})

    reader = wire.schema_for(PostingAck)
    with pytest.raises(CannotCompile, match="no_such_field"):
        compile_reader(reader, reader, Misnamed)


# --- the same values ----------------------------------------------------------------------------------------


ALL_TOPICS = tuple(t for t in catalog.EVENT_TOPICS if t.event is not None)


@pytest.mark.parametrize("topic", ALL_TOPICS, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", ["rich", "minimal"])
def test_decode_builds_from_the_compiled_values_the_event_the_model_validates(
    registry: Any, topic: catalog.Topic, shape: str
) -> None:
    """What every processor reads (`decode`) is the model's event, enum members and all, whichever way."""
    serde = TopicSerde(topic, registry)
    record = message(serde.encode_value(_event(topic) if shape == "rich" else _minimal(topic)))
    fast, validated = serde.decode(record), serde.decode_by_model(record)
    assert serde.decode_values(record) is not None  # the compiled way was taken
    assert type(fast) is type(validated)
    assert [(type(v), repr(v)) for v in fast.__dict__.values()] == [
        (type(v), repr(v)) for v in validated.__dict__.values()
    ]
    assert fast == validated
    assert fast.model_fields_set == validated.model_fields_set


def test_decode_of_a_record_the_compiled_reader_cannot_vouch_for_says_what_the_model_says(registry: Any) -> None:
    serde = TopicSerde(catalog.TIME_ENTRIES, registry)
    body = serde.encode_value(_event(catalog.TIME_ENTRIES))
    truncated = message(body[:-3])
    assert serde.decode_values(truncated) is None
    with pytest.raises(DecodeError) as fast:
        serde.decode(truncated)
    with pytest.raises(DecodeError) as validated:
        serde.decode_by_model(truncated)
    assert str(fast.value) == str(validated.value)


@pytest.mark.parametrize("topic", SINK_TOPICS + REFERENCE_TOPICS, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", ["rich", "minimal"])
def test_compiled_readers_read_what_the_model_reads(registry: Any, topic: catalog.Topic, shape: str) -> None:
    serde = TopicSerde(topic, registry)
    event = _event(topic) if shape == "rich" else _minimal(topic)
    assert assert_agrees(serde, message(serde.encode_value(event)), compiled_reads=True) == model_values(event)


@pytest.mark.parametrize("topic", list(OLD_SCHEMAS), ids=lambda t: t.name)
def test_records_of_an_older_writer_schema_resolve_as_fastavro_resolves_them(
    registry: Any, topic: catalog.Topic
) -> None:
    serde = TopicSerde(topic, registry)
    old = json.loads((FIXTURES / OLD_SCHEMAS[topic]).read_text())
    event = _event(topic)
    record = {
        name: value for name, value in wire.to_record(event).items() if name in {f["name"] for f in old["fields"]}
    }
    values = assert_agrees(serde, message(framed(registered(serde, old), old, record)), compiled_reads=True)
    assert old != wire.schema_for(type(event)), "the fixture should be an older schema"
    added = {f["name"] for f in wire.schema_for(type(event))["fields"]} - set(record)
    assert all(values[list(type(event).model_fields).index(name)] is None for name in added)


def test_a_field_the_reader_lacks_is_read_and_dropped(registry: Any) -> None:
    serde = TopicSerde(catalog.POSTING_ACKS, registry)
    newer = copy.deepcopy(wire.schema_for(catalog.POSTING_ACKS.event))  # type: ignore[arg-type]
    newer["fields"].insert(3, {"name": "note", "type": ["null", "string"], "default": None})
    newer["fields"].append({"name": "tries", "type": "long", "default": 0})
    record = wire.to_record(_event(catalog.POSTING_ACKS)) | {"note": "a note", "tries": 300}
    assert_agrees(serde, message(framed(registered(serde, newer), newer, record)), compiled_reads=True)


def test_an_enum_symbol_the_reader_does_not_know_is_left_to_the_model(registry: Any) -> None:
    serde = TopicSerde(catalog.POSTING_ACKS, registry)
    newer = copy.deepcopy(wire.schema_for(catalog.POSTING_ACKS.event))  # type: ignore[arg-type]
    status = next(f for f in newer["fields"] if f["name"] == "status")
    status["type"]["symbols"].append("PENDING")
    schema_id = registered(serde, newer)
    record = wire.to_record(_event(catalog.POSTING_ACKS))
    assert_agrees(serde, message(framed(schema_id, newer, record)), compiled_reads=True)
    refused = assert_agrees(
        serde, message(framed(schema_id, newer, record | {"status": "PENDING"})), compiled_reads=False
    )
    assert isinstance(refused, DecodeError)


def test_a_writer_type_without_a_compiled_reading_leaves_every_record_to_the_model(registry: Any) -> None:
    serde = TopicSerde(catalog.BILLING_RESPONSES, registry)
    other = copy.deepcopy(wire.schema_for(catalog.BILLING_RESPONSES.event))  # type: ignore[arg-type]
    message_field = next(f for f in other["fields"] if f["name"] == "message")
    message_field["type"] = ["null", "bytes"]  # Avro resolves bytes to a reader's string; no compiled reading
    record = wire.to_record(_event(catalog.BILLING_RESPONSES)) | {"message": b"Added"}
    assert_agrees(serde, message(framed(registered(serde, other), other, record)), compiled_reads=False)


@pytest.mark.parametrize(
    "writer",
    [
        pytest.param("string", id="not-a-record"),
        pytest.param({"type": "record", "name": "Other", "fields": []}, id="another-record"),
    ],
)
def test_a_writer_schema_that_is_not_the_events_record_is_not_compiled(writer: Any) -> None:
    reader = wire.schema_for(catalog.POSTING_ACKS.event)  # type: ignore[arg-type]
    with pytest.raises(CannotCompile):
        compile_reader(writer, reader, catalog.POSTING_ACKS.event)  # type: ignore[arg-type]


def test_reader_fields_with_aliases_are_left_to_fastavro_which_matches_writer_fields_by_them() -> None:
    reader = copy.deepcopy(wire.schema_for(catalog.POSTING_ACKS.event))  # type: ignore[arg-type]
    reader["fields"][4]["aliases"] = ["posting"]
    with pytest.raises(CannotCompile):
        compile_reader(reader, reader, catalog.POSTING_ACKS.event)  # type: ignore[arg-type]


def test_a_model_rule_without_a_compiled_check_leaves_the_event_to_the_model() -> None:
    class Stricter(PostingAck):
        erp_target: str = Field(pattern=r"^[a-z-]+$")  # a pattern the compiled reader has no check for

    class Configured(PostingAck):
        model_config = ConfigDict(str_max_length=20)

    reader = wire.schema_for(PostingAck)
    for event_cls in (Stricter, Configured):
        with pytest.raises(CannotCompile):
            compile_reader(reader, reader, event_cls)


# --- values shared between records, arrays of records ---------------------------------------------------------


@pytest.mark.parametrize("topic", REFERENCE_TOPICS, ids=lambda t: t.name)
def test_shared_values_are_one_object_for_every_record_and_still_the_models_values(
    registry: Any, topic: catalog.Topic
) -> None:
    serde = TopicSerde(topic, registry)
    assert topic.event is not None and topic.event.shared_values
    records = [message(serde.encode_value(_event(topic, event_id=f"ev-{n}"))) for n in range(2)]
    first, second = (serde.decode(record) for record in records)
    for record in records:
        assert_agrees(serde, record, compiled_reads=True)
    for name in topic.event.shared_values:
        if getattr(first, name) not in (None, ()):
            assert getattr(first, name) is getattr(second, name), name
    assert first.event_id == "ev-0" and second.event_id == "ev-1"


def test_rate_cards_of_the_same_bytes_are_one_tuple_and_other_cards_their_own(registry: Any) -> None:
    serde = TopicSerde(catalog.CONTRACTS, registry)
    card = RICH["contract"]["rate_card"]
    a, b, c = (
        serde.decode(message(serde.encode_value(_event(catalog.CONTRACTS, version=n, rate_card=rates))))
        for n, rates in ((1, card), (2, card), (3, card[:1]))
    )
    assert isinstance(a, ContractVersion) and isinstance(b, ContractVersion) and isinstance(c, ContractVersion)
    assert a.rate_card is b.rate_card and len(a.rate_card) == 2
    assert c.rate_card == a.rate_card[:1] and c.rate_card is not a.rate_card
    assert a.rate_card[0].hourly_rate is c.rate_card[0].hourly_rate  # a shared rate of RateCardLine


def test_values_beyond_the_shared_caches_limit_are_read_the_same_but_not_shared(
    registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiled, "SHARED_LIMIT", 0)
    serde = TopicSerde(catalog.WORKERS, registry)
    records = [message(serde.encode_value(_event(catalog.WORKERS, cost_rate=f"{n}1.2345"))) for n in range(2)]
    first, second = (assert_agrees(serde, record, compiled_reads=True) for record in records)
    assert first != second


def _array_blocks(serde: TopicSerde, lines: list[dict[str, Any]]) -> bytes:
    """A contract whose rate card is written in two blocks, the first with a negative count and its size
    in bytes (as Avro allows a writer to), the second with a positive one; both forms fastavro reads."""
    schema = wire.schema_for(ContractVersion)
    items = next(f["type"]["items"] for f in schema["fields"] if f["name"] == "rate_card")
    parsed = fastavro.parse_schema({**items, "namespace": schema["namespace"]}, named_schemas={})

    def item(line: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, wire.to_record(RateCardLine.model_validate(line)))
        return out.getvalue()

    def long(n: int) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, "long", n)
        return out.getvalue()

    first, rest = item(lines[0]), b"".join(item(line) for line in lines[1:])
    blocks = long(-1) + long(len(first)) + first + long(len(lines) - 1) + rest + long(0)
    without_card = serde.encode_value(_event(catalog.CONTRACTS, rate_card=()))
    assert without_card.endswith(b"\x00")  # the rate card is the last field: an empty array
    return without_card[:-1] + blocks


def test_an_array_in_blocks_with_a_negative_count_reads_as_fastavro_reads_it(registry: Any) -> None:
    serde = TopicSerde(catalog.CONTRACTS, registry)
    card = RICH["contract"]["rate_card"]
    values = assert_agrees(serde, message(_array_blocks(serde, card)), compiled_reads=True)
    assert values[-1] == tuple(RateCardLine.model_validate(line) for line in card)


def test_a_writer_without_the_rate_card_reads_the_readers_empty_default(registry: Any) -> None:
    serde = TopicSerde(catalog.CONTRACTS, registry)
    old = copy.deepcopy(wire.schema_for(ContractVersion))
    old["fields"] = [f for f in old["fields"] if f["name"] != "rate_card"]
    record = {k: v for k, v in wire.to_record(_event(catalog.CONTRACTS)).items() if k != "rate_card"}
    values = assert_agrees(serde, message(framed(registered(serde, old), old, record)), compiled_reads=True)
    assert values[-1] == ()


def test_a_compiled_event_keeps_its_fields_in_a_smaller_key_sharing_dict(registry: Any) -> None:
    serde = TopicSerde(catalog.PROJECTS, registry)
    record = message(serde.encode_value(_event(catalog.PROJECTS)))
    fast, validated = serde.decode(record), serde.decode_by_model(record)
    assert isinstance(fast, Project)
    assert fast.__dict__ == validated.__dict__ and list(fast.__dict__) == list(validated.__dict__)
    assert sys.getsizeof(fast.__dict__) < sys.getsizeof(validated.__dict__)


# --- values that break a model rule, or might ------------------------------------------------------------------


RULE_BREAKERS = [
    pytest.param({"candidate_id": ""}, id="empty-id"),
    pytest.param({"candidate_id": "   "}, id="blank-id"),
    pytest.param({"candidate_id": "c\x00"}, id="nul-in-id"),
    pytest.param({"candidate_id": "c\u202e1"}, id="bidi-override-in-id"),
    pytest.param({"candidate_id": "c" * 513}, id="id-too-long"),
    pytest.param({"correlation_id": "\t"}, id="control-character-in-optional-id"),
    pytest.param({"currency": "euro"}, id="currency-not-iso"),
    pytest.param({"currency": "EU1"}, id="currency-with-digit"),
    pytest.param({"revision": 0}, id="revision-below-one"),
    pytest.param({"contract_version": -3}, id="contract-version-below-one"),
    pytest.param({"revision": 2**31}, id="revision-beyond-int32"),
    pytest.param({"amount": (10**18).to_bytes(8, "big", signed=True)}, id="decimal-with-15-integer-digits"),
    pytest.param({"amount": (-(10**18)).to_bytes(8, "big", signed=True)}, id="negative-decimal-too-large"),
]
ACCEPTED_ODDITIES = [
    pytest.param({"candidate_id": "c\u00a01"}, id="no-break-space-in-id"),
    pytest.param({"candidate_id": " c "}, id="spaces-around-id"),
    pytest.param({"role": "night\x00shift"}, id="nul-in-free-text"),
    pytest.param({"candidate_id": "c" * 512}, id="id-of-512"),
    pytest.param({"amount": (10**18 - 1).to_bytes(8, "big", signed=True)}, id="largest-decimal"),
    pytest.param({"amount": b""}, id="decimal-of-no-bytes-is-zero"),
    pytest.param({"revision": 2**31 - 1}, id="largest-revision"),
    pytest.param({"billable_minutes": -(2**63)}, id="smallest-long"),
]


def _raw_record(event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event as an Avro record of its schema without logical types (the same bytes, but any value
    can be put in), and that schema."""
    schema = _raw(wire.schema_for(type(event)))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, wire.parsed_schema(type(event)), wire.to_record(event))
    return fastavro.schemaless_reader(io.BytesIO(out.getvalue()), fastavro.parse_schema(schema), None), schema  # type: ignore[return-value]


def _raw(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _raw(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_raw(v) for v in schema]
    return schema


def _written_raw(serde: TopicSerde, **overrides: Any) -> bytes:
    record, schema = _raw_record(_event(catalog.INVOICE_CANDIDATES))
    return serde.header() + framed(0, schema, record | overrides)[5:]


@pytest.mark.parametrize("overrides", RULE_BREAKERS)
def test_a_value_breaking_a_model_rule_is_left_to_the_model_which_refuses_it(
    registry: Any, overrides: dict[str, Any]
) -> None:
    serde = TopicSerde(catalog.INVOICE_CANDIDATES, registry)
    refused = assert_agrees(serde, message(_written_raw(serde, **overrides)), compiled_reads=False)
    assert isinstance(refused, DecodeError)


@pytest.mark.parametrize("overrides", ACCEPTED_ODDITIES)
def test_odd_values_the_model_takes_give_the_same_values_either_way(registry: Any, overrides: dict[str, Any]) -> None:
    serde = TopicSerde(catalog.INVOICE_CANDIDATES, registry)
    taken = assert_agrees(serde, message(_written_raw(serde, **overrides)))
    assert not isinstance(taken, DecodeError)


# --- corrupt bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", SINK_TOPICS + REFERENCE_TOPICS, ids=lambda t: t.name)
def test_every_truncation_of_a_record_is_left_to_the_model(registry: Any, topic: catalog.Topic) -> None:
    serde = TopicSerde(topic, registry)
    value = serde.encode_value(_event(topic))
    for end in range(5, len(value)):
        assert serde.decode_values(message(value[:end])) is None, f"cut at {end}"
        assert isinstance(model_path(serde, message(value[:end])), DecodeError)


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda v: v.replace(b"IC-1", b"I\xff-1"), id="invalid-utf8"),
        pytest.param(lambda v: v[:5] + b"\x04" + v[6:], id="union-branch-out-of-range"),
        pytest.param(lambda v: v[:5] + b"\x01" + v[6:], id="negative-union-branch"),
        pytest.param(lambda v: v[:5] + b"\xff" * 11 + v[6:], id="varint-of-eleven-bytes"),
    ],
)
def test_corrupt_bodies_are_left_to_the_model(registry: Any, corrupt: Any) -> None:
    serde = TopicSerde(catalog.INVOICE_CANDIDATES, registry)
    value = corrupt(serde.encode_value(_event(catalog.INVOICE_CANDIDATES)))
    assert_agrees(serde, message(value), compiled_reads=False)


def test_framing_the_compiled_reader_cannot_read_is_left_to_the_model(registry: Any) -> None:
    serde = TopicSerde(catalog.INVOICE_CANDIDATES, registry)
    for value in (None, b"", b"\x00\x00", b"not avro at all"):
        assert serde.decode_values(message(value)) is None
        assert isinstance(model_path(serde, message(value)), DecodeError)


def test_an_unknown_writer_schema_is_the_same_decode_error_either_way(registry: Any) -> None:
    serde = TopicSerde(catalog.INVOICE_CANDIDATES, registry)
    unknown = message(b"\x00" + (4242).to_bytes(4, "big") + b"\x02")
    with pytest.raises(DecodeError, match="unknown writer schema"):
        serde.decode_values(unknown)
    assert "unknown writer schema" in str(model_path(serde, unknown))


# --- any value Avro can carry --------------------------------------------------------------------------------


def _strategy(avro_type: Any) -> st.SearchStrategy[Any]:
    """Any value of an Avro type without logical types, edge cases first."""
    if isinstance(avro_type, list):
        return st.one_of(*(_strategy(member) for member in avro_type))
    if isinstance(avro_type, dict):
        if avro_type["type"] == "enum":
            return st.sampled_from(avro_type["symbols"])
        if avro_type["type"] == "array":
            return st.lists(_strategy(avro_type["items"]), max_size=3)
        if avro_type["type"] == "record":
            return st.fixed_dictionaries({f["name"]: _strategy(f["type"]) for f in avro_type["fields"]})
        return _strategy(avro_type["type"])
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1)),
        "long": st.one_of(
            st.sampled_from([0, -1, 2**63 - 1, -(2**63), 253402300799999999, -62135596800000001]),
            st.integers(-(2**63), 2**63 - 1),
        ),
        "string": st.one_of(
            st.sampled_from(["", " ", "EUR", "euro", "\u00a0", "a\x00", "\u2028", "x" * 513, "ÄÖ-1"]),
            st.text(max_size=12),
        ),
        "bytes": st.one_of(
            st.integers(-(10**18) - 2, 10**18 + 2).map(lambda n: n.to_bytes(9, "big", signed=True)),
            st.binary(max_size=10),
        ),
    }[avro_type]


@pytest.mark.parametrize("topic", SINK_TOPICS + REFERENCE_TOPICS, ids=lambda t: t.name)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_record_is_read_as_the_model_reads_it_or_left_to_it(
    registry: Any, topic: catalog.Topic, data: st.DataObject
) -> None:
    serde, parsed, records = _built_once(topic)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, data.draw(records))
    assert_agrees(serde, message(serde.header() + out.getvalue()))


@functools.cache
def _built_once(topic: catalog.Topic) -> tuple[TopicSerde, Any, st.SearchStrategy[dict[str, Any]]]:
    """The topic's serde, its schema without logical types (parsed) and a strategy of its records: the
    rich or the minimal example with up to three fields set to any value their Avro type can carry."""
    bases = [_raw_record(_event(topic))[0], _raw_record(_minimal(topic))[0]]
    raw = _raw(wire.schema_for(topic.event))  # type: ignore[arg-type]
    changes = st.lists(
        st.sampled_from(raw["fields"]).flatmap(lambda f: st.tuples(st.just(f["name"]), _strategy(f["type"]))),
        max_size=3,
    )
    records = st.tuples(st.sampled_from(bases), changes).map(lambda drawn: drawn[0] | dict(drawn[1]))
    return TopicSerde(topic, MockSchemaRegistryClient({"url": "mock://"})), fastavro.parse_schema(raw), records


class _Review(Canonical):
    """No canonical event has an optional enum yet; the builder must still give one back as the model would."""

    decision: Decision | None = None
    reviewer_id: str


@pytest.mark.parametrize(
    ("decision", "expected"),
    [("APPROVED", Decision.APPROVED), (None, None)],
    ids=["value-becomes-its-member", "missing-stays-none"],
)
def test_the_event_builder_gives_an_optional_enum_back_as_the_model_holds_it(
    decision: str | None, expected: Decision | None
) -> None:
    built = compiled.event_builder(_Review)((decision, "M1"))
    assert built.decision is expected
    assert built == _Review.model_validate({"decision": decision, "reviewer_id": "M1"})
