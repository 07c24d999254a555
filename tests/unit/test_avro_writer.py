"""`wire.body_writer` writes the bytes fastavro writes, for every event type and every kind of value.

The writer replaced fastavro's `schemaless_writer` on `wire.to_record` dicts on the publishing paths
(`backbone emit`, the gateway, the topology's outputs); consumers of other languages read those bytes,
so they must not change by one bit. Each event type is drawn a few hundred times from pools of values
at the edges of their ranges: nulls and every union branch, decimals negative, zero, negative zero,
at the limits of precision and around the byte boundaries of their two's complement, unicode of one
to four UTF-8 bytes per character, strings whose lengths cross varint boundaries, instants and dates
before the epoch, at it and at the ends of the calendar, every enum symbol, empty and filled arrays.
"""

from __future__ import annotations

import io
import random
import typing
from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, Decimal, localcontext
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

import fastavro
import pytest
from pydantic import ValidationError

from backbone.domain.models import ALL_EVENTS, Canonical
from backbone.errors import InvalidInputError
from backbone.kafka import avro_writer, wire
from backbone.kafka import topics as catalog
from backbone.kafka.serde import TopicSerde
from tests.examples import RICH

DRAWS = 300
STRINGS = [
    "a",
    "TE-1",
    "Ünïcödé ✓",
    "日本語のメモ",
    "emoji 🙂🚀",
    "x" * 63,
    "x" * 64,
    "ä" * 32,
    "y" * 200,
    "z" * 8_191,
    "z" * 8_192,
    "w" * 20_000,
    " padded ",
]
CURRENCIES = ["EUR", "USD", "JPY", "CHF"]
INTEGERS = [1, 2, 63, 64, 127, 128, 8_191, 8_192, 28_800, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1]
INTEGERS += [0, -1, -64, -65, -(2**63)]
DECIMALS = [
    "0",
    "-0",
    "0.0000",
    "0.0001",
    "-0.0001",
    "1.5",
    "12.5000",
    "-0.0128",
    "0.0127",
    "-0.0129",
    "3.2768",
    "-3.2768",
    "150.25",
    "-128",
    "255.99",
    "1E+3",
    "99999999999999.9999",
    "-99999999999999.9999",
]
DATES = ["0001-01-01", "1969-12-31", "1970-01-01", "1970-01-02", "2026-11-02", "9999-12-31"]
INSTANTS = [
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:00:00.000001Z",
    "2026-11-02T09:30:00.123456+05:30",
    "2026-11-02T09:30:00Z",
    "9999-12-31T23:59:59.999999Z",
]


def fastavro_body(event: Canonical) -> bytes:
    """What the serde wrote before the writer: fastavro on the record `wire.to_record` builds."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, wire.parsed_schema(type(event)), wire.to_record(event))  # type: ignore[arg-type]
    return out.getvalue()


def draw_value(rng: random.Random, name: str, annotation: Any) -> Any:
    """A value for one field: None for optional ones a third of the time, else one from the pools."""
    if _optional(annotation) and rng.random() < 0.3:
        return None
    inner = wire._strip(annotation)
    if isinstance(inner, type) and issubclass(inner, Enum):
        return rng.choice(list(inner)).value
    if typing.get_origin(inner) is tuple:
        (item,) = {a for a in typing.get_args(inner) if a is not Ellipsis}
        return [draw_fields(rng, item) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
    pools: dict[Any, list[Any]] = {
        bool: [True, False],
        int: INTEGERS,
        Decimal: DECIMALS,
        date: DATES,
        datetime: INSTANTS,
        str: CURRENCIES if "currency" in name else STRINGS,
    }
    return rng.choice(pools[inner])


def _optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def draw_fields(rng: random.Random, model: type[Canonical]) -> dict[str, Any]:
    return {name: draw_value(rng, name, info.annotation) for name, info in model.model_fields.items()}


def drawn_events(event_cls: type[Canonical], count: int, seed: int) -> list[Canonical]:
    """`count` valid events of `event_cls` from the pools (draws the model refuses are drawn again)."""
    rng = random.Random(seed)
    events: list[Canonical] = []
    while len(events) < count:
        try:
            events.append(event_cls.model_validate(draw_fields(rng, event_cls)))
        except ValidationError:
            continue
    return events


@pytest.mark.parametrize("event_type", sorted(ALL_EVENTS))
def test_the_writer_writes_fastavros_bytes_for_every_drawn_event(event_type: str) -> None:
    event_cls = ALL_EVENTS[event_type]
    events = [event_cls.model_validate(RICH[event_type]), *drawn_events(event_cls, DRAWS, seed=len(event_type))]
    write = wire.body_writer(event_cls)
    for event in events:
        assert write(event.__dict__) == fastavro_body(event), event


@pytest.mark.parametrize("event_type", sorted(ALL_EVENTS))
def test_the_draws_reach_every_union_branch_and_the_edges(event_type: str) -> None:
    # The comparison above is only as good as its draws: every optional field must have been null and
    # set, and every pool's extremes must have been taken by some field that allows them.
    event_cls = ALL_EVENTS[event_type]
    events = drawn_events(event_cls, DRAWS, seed=len(event_type))
    for name, info in event_cls.model_fields.items():
        seen = [getattr(event, name) for event in events]
        if _optional(info.annotation):
            assert None in seen and any(value is not None for value in seen), name
        if wire._strip(info.annotation) is Decimal:
            assert {Decimal("-99999999999999.9999"), Decimal("0.0127"), Decimal("-0.0129")} <= set(seen), name


def test_envelope_defaults_laid_over_the_values_are_written_as_if_the_model_held_them() -> None:
    event = ALL_EVENTS["time-entry"].model_validate({**RICH["time-entry"], "event_id": None, "correlation_id": None})
    updates = {"event_id": "ev-derived", "correlation_id": "TE-1"}
    serde = TopicSerde(catalog.TIME_ENTRIES, registry=None)  # type: ignore[arg-type]
    assert serde.encode_body(event, updates) == fastavro_body(event.model_copy(update=updates))


@pytest.mark.parametrize("amount", ["85.123456", "-0.00005", "0.00015", "-2.99995"])
def test_a_decimal_with_more_places_than_the_scale_is_rounded_as_before(amount: str) -> None:
    # Models refuse such values, but the core builds its outputs without validation: rounding half-even
    # to the scale is what `wire.to_record` did before fastavro wrote the record.
    event = ALL_EVENTS["worker"].model_validate(RICH["worker"]).model_copy(update={"cost_rate": Decimal(amount)})
    assert wire.body_writer(type(event))(event.__dict__) == fastavro_body(event)


def test_instants_dates_and_decimals_written_before_are_written_as_themselves_again() -> None:
    # The writers remember the last instant and the dates and decimals they wrote (the topology writes
    # the same ones in each change's three outputs): what they remember must never leak into another value.
    candidate = ALL_EVENTS["invoice-candidate"].model_validate(RICH["invoice-candidate"])
    posting = ALL_EVENTS["posting-request"].model_validate(RICH["posting-request"])
    write_candidate, write_posting = wire.body_writer(type(candidate)), wire.body_writer(type(posting))
    earlier, later = datetime(2026, 11, 2, 9, 30, tzinfo=UTC), datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
    for at, day, amount in [
        (earlier, date(2026, 11, 2), Decimal("12.50")),
        (earlier, date(2026, 11, 2), Decimal("12.5000")),  # equal, another exponent: the same bytes
        (later, date(2026, 11, 3), Decimal("-12.5")),
        (earlier, date(2026, 11, 2), Decimal("12.5")),
    ]:
        for event, write in ((candidate, write_candidate), (posting, write_posting)):
            changed = event.model_copy(update={"occurred_at": at, "work_date": day, "amount": amount})
            assert write(changed.__dict__) == fastavro_body(changed), (at, day, amount)


def test_equal_instants_an_hour_apart_are_not_confused() -> None:
    # 01:30 on the night New York leaves summer time happens twice: the two datetimes compare (and hash)
    # equal but are an hour apart, so a writer may not reuse the bytes of one for the other.
    first = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    second = first.replace(fold=1)
    assert first == second
    event = ALL_EVENTS["posting-request"].model_validate(RICH["posting-request"])
    write = wire.body_writer(type(event))
    for at in (first, second, first):
        changed = event.model_copy(update={"occurred_at": at})
        assert write(changed.__dict__) == fastavro_body(changed)
    assert write({**event.__dict__, "occurred_at": first}) != write({**event.__dict__, "occurred_at": second})


def test_a_value_equal_to_a_remembered_decimal_but_not_a_decimal_is_not_written_as_one() -> None:
    event = ALL_EVENTS["posting-request"].model_validate(RICH["posting-request"])
    write = wire.body_writer(type(event))
    write({**event.__dict__, "amount": Decimal("2")})
    with pytest.raises(AttributeError):  # as before the writers remembered decimals
        write({**event.__dict__, "amount": 2})


def test_remembered_dates_and_decimals_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avro_writer, "REMEMBERED", 8)
    event = ALL_EVENTS["posting-request"].model_validate(RICH["posting-request"])
    write = wire.body_writer(type(event))
    for n in range(50):
        changed = event.model_copy(update={"work_date": date(2026, 1, 1 + n % 31), "amount": Decimal(n).scaleb(-2)})
        assert write(changed.__dict__) == fastavro_body(changed)
    assert len(avro_writer._DATES) <= 8
    assert all(len(remembered) <= 8 for remembered in avro_writer._DECIMALS.values())


def test_the_decimal_context_of_the_thread_does_not_change_the_bytes() -> None:
    # Rounding to the schema's scale is half-even in a context of the writer's own, so the bytes depend
    # on the value alone (which is what lets them be remembered).
    event = ALL_EVENTS["worker"].model_validate(RICH["worker"]).model_copy(update={"cost_rate": Decimal("0.00015")})
    write = wire.body_writer(type(event))
    expected = fastavro_body(event)
    with localcontext(rounding=ROUND_DOWN, prec=5):
        assert write(event.__dict__) == expected


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("duration_seconds", 2**63, "out of range for an Avro long"),
        ("revision", 2**31, "out of range for an Avro int"),
        ("notes", "\ud800", "surrogates not allowed"),
    ],
    ids=["long-overflow", "int-overflow", "lone-surrogate"],
)
def test_a_value_avro_cannot_carry_is_refused_as_invalid_input(field: str, value: Any, reason: str) -> None:
    # Models refuse the first two themselves; a model built without validation must still not reach the wire.
    event = ALL_EVENTS["time-entry"].model_validate(RICH["time-entry"]).model_copy(update={field: value})
    serde = TopicSerde(catalog.TIME_ENTRIES, registry=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=reason):
        serde.encode_body(event)


def test_a_symbol_outside_the_schema_is_refused() -> None:
    write = avro_writer._writer({"type": "enum", "name": "E", "symbols": ["A", "B"]})
    assert write("B") == b"\x02"
    with pytest.raises(ValueError, match="not one of the symbols"):
        write("C")


@pytest.mark.parametrize(
    "avro_type",
    ["float", ["null", "string", "long"], {"type": "fixed", "name": "F", "size": 4}, {"type": "map", "values": "long"}],
    ids=["float", "three-branch-union", "fixed", "map"],
)
def test_a_type_the_writer_does_not_know_is_refused_when_it_is_built(avro_type: Any) -> None:
    with pytest.raises(ValueError, match="no Avro writer"):
        avro_writer.record_writer({"type": "record", "name": "R", "fields": [{"name": "f", "type": avro_type}]})
