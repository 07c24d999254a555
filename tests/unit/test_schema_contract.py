"""The Avro schemas and the pydantic models describe the same contract, and the seam round-trips it.

Any drift — a renamed or missing field, a changed type, optionality, default or enum symbol — fails
here before it can reach the wire.
"""

from __future__ import annotations

import datetime
import enum
import io
import json
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import BaseModel

from backbone.domain import models
from backbone.kafka import wire
from backbone.registry import compatibility
from tests.examples import RICH

EVENTS = sorted(models.ALL_EVENTS.items())
IDS = [event_type for event_type, _ in EVENTS]
DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4}


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of a model field annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0])[0], True
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])[0], False
    return annotation, False


def _type_problems(where: str, python_type: Any, avro_type: Any) -> list[str]:
    """Why `avro_type` does not carry `python_type` (empty when it does)."""
    expected = {
        bool: lambda t: t == "boolean",
        int: lambda t: t in ("int", "long"),
        str: lambda t: t == "string",
        Decimal: lambda t: t == DECIMAL,
        datetime.datetime: lambda t: (
            isinstance(t, dict)
            and t.get("logicalType") in ("timestamp-micros", "timestamp-millis")
            and t["type"] == "long"
        ),
        datetime.date: lambda t: t == {"type": "int", "logicalType": "date"},
    }
    if isinstance(python_type, type) and issubclass(python_type, enum.Enum):
        symbols = [member.value for member in python_type]
        if not (isinstance(avro_type, dict) and avro_type.get("type") == "enum" and avro_type["symbols"] == symbols):
            return [f"{where}: expected enum {symbols}, schema has {avro_type}"]
        return []
    if typing.get_origin(python_type) is tuple:
        (item,) = {a for a in typing.get_args(python_type) if a is not Ellipsis}
        if not (isinstance(avro_type, dict) and avro_type.get("type") == "array"):
            return [f"{where}: expected an array, schema has {avro_type}"]
        return _record_problems(item, avro_type["items"])
    check = expected.get(python_type)
    if check is None:
        return [f"{where}: the contract test does not know Python type {python_type}"]
    return [] if check(avro_type) else [f"{where}: {python_type.__name__} cannot travel as {avro_type}"]


def _record_problems(model: type[BaseModel], schema: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    avro_fields = {f["name"]: f for f in schema["fields"]}
    if list(avro_fields) != list(model.model_fields):
        problems.append(f"{schema['name']}: fields {list(avro_fields)} != model {list(model.model_fields)}")
    for name, info in model.model_fields.items():
        field = avro_fields.get(name)
        if field is None:
            continue
        where = f"{schema['name']}.{name}"
        inner, optional = _unwrap(info.annotation)
        avro_type = field["type"]
        if optional:
            if not (isinstance(avro_type, list) and avro_type[0] == "null" and len(avro_type) == 2):
                problems.append(f"{where}: optional in the model, schema type is {avro_type}")
                continue
            if field.get("default", "missing") is not None:
                problems.append(f"{where}: optional fields need default null")
            avro_type = avro_type[1]
        elif isinstance(avro_type, list):
            problems.append(f"{where}: required in the model, schema makes it a union")
            continue
        problems += _type_problems(where, inner, avro_type)
        problems += _default_problems(where, info, field, optional)
    return problems


def _default_problems(where: str, info: Any, field: dict[str, Any], optional: bool) -> list[str]:
    if optional:
        return []
    if info.is_required():
        return [f"{where}: required in the model but the schema has a default"] if "default" in field else []
    if "default" not in field:
        return [f"{where}: the model defaults to {info.default!r}; the schema needs the same default"]
    return (
        []
        if _same_default(info.default, field["default"])
        else [f"{where}: default {field['default']!r} != model {info.default!r}"]
    )


def _same_default(model_default: Any, avro_default: Any) -> bool:
    if isinstance(model_default, Decimal):
        # Avro encodes a bytes default as a string of code points: the big-endian unscaled integer.
        unscaled = int.from_bytes(avro_default.encode("latin-1"), "big", signed=True)
        return Decimal(unscaled).scaleb(-4) == model_default
    if isinstance(model_default, enum.Enum):
        return avro_default == model_default.value
    if isinstance(model_default, tuple):
        return avro_default == list(model_default)
    return bool(avro_default == model_default)


def _docs_missing(schema: dict[str, Any]) -> list[str]:
    missing = [] if schema.get("doc") else [schema["name"]]
    for field in schema["fields"]:
        if not field.get("doc"):
            missing.append(f"{schema['name']}.{field['name']}")
        items = field["type"].get("items") if isinstance(field["type"], dict) else None
        if isinstance(items, dict) and items.get("type") == "record":
            missing += _docs_missing(items)
    return missing


def test_every_event_has_a_schema_file_and_nothing_else_does() -> None:
    files = {path.stem for path in wire.SCHEMA_DIR.glob("*.avsc")}
    assert files == set(models.ALL_EVENTS)


@pytest.mark.parametrize(("event_type", "event_cls"), EVENTS, ids=IDS)
def test_schema_matches_model(event_type: str, event_cls: type[models.Event]) -> None:
    schema = wire.schema_for(event_cls)
    assert schema["name"] == event_cls.__name__
    assert schema["namespace"] == "dev.backbone.events"
    assert _record_problems(event_cls, schema) == []


@pytest.mark.parametrize(("event_type", "event_cls"), EVENTS, ids=IDS)
def test_every_record_and_field_is_documented(event_type: str, event_cls: type[models.Event]) -> None:
    assert _docs_missing(wire.schema_for(event_cls)) == []


def test_enum_names_are_scoped_to_their_record() -> None:
    # Registries and code generators put named types in one namespace: two `Status` enums would clash.
    names: list[str] = []
    for _, event_cls in EVENTS:
        text = json.dumps(wire.schema_for(event_cls))
        names += [t["name"] for t in _named_types(json.loads(text)) if t["type"] == "enum"]
    assert len(names) == len(set(names))


def _named_types(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [t for item in node for t in _named_types(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if node.get("type") in ("enum", "record") and "name" in node else []
    return found + [t for value in node.values() for t in _named_types(value)]


@pytest.mark.parametrize(("event_type", "event_cls"), EVENTS, ids=IDS)
def test_round_trip_through_avro_keeps_the_event(event_type: str, event_cls: type[models.Event]) -> None:
    event = event_cls.model_validate(RICH[event_type])
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, wire.parsed_schema(event_cls), wire.to_record(event))
    record = fastavro.schemaless_reader(io.BytesIO(buffer.getvalue()), wire.parsed_schema(event_cls), None)
    back = wire.from_record(event_cls, record)
    assert back == event
    # Decimals compare by value: "85.5" comes back as 85.5000, the schema's scale.
    assert back.model_dump() == event.model_dump()


def test_rich_examples_set_every_field() -> None:
    for event_type, event_cls in EVENTS:
        assert set(RICH[event_type]) == set(event_cls.model_fields), event_type


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("150", Decimal("150.0000"), id="integer-gains-scale"),
        pytest.param("0.1", Decimal("0.1000"), id="fraction-padded"),
        pytest.param("-32.8700", Decimal("-32.8700"), id="negative-kept"),
    ],
)
def test_decimals_leave_at_the_schema_scale(value: str, expected: Decimal) -> None:
    worker = models.Worker.model_validate({**RICH["worker"], "cost_rate": value})
    record = wire.to_record(worker)
    assert record["cost_rate"] == expected
    assert record["cost_rate"].as_tuple().exponent == -4


def test_record_decodes_with_a_plain_fastavro_reader_of_the_schema_file() -> None:
    # A consumer that only has the .avsc file (no backbone code) reads the same values.
    event = models.TimeEntry.model_validate(RICH["time-entry"])
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, wire.parsed_schema(models.TimeEntry), wire.to_record(event))
    schema = fastavro.parse_schema(json.loads(wire.schema_path(models.TimeEntry).read_text()))
    record = fastavro.schemaless_reader(io.BytesIO(buffer.getvalue()), schema, None)
    assert record["duration_seconds"] == 5400
    assert record["work_date"] == datetime.date(2026, 11, 2)


# --- evolution: a changed schema must pass the registry's compatibility check -----------------------

PUBLISHED = Path(__file__).resolve().parents[1] / "fixtures" / "schemas"
"""Versions of the schemas as they were first published (what topics already hold)."""


@pytest.mark.parametrize(
    ("published", "event_cls"),
    [
        pytest.param("time-entry.v1.avsc", models.TimeEntry, id="time-entry-gains-invoiced-at-source"),
        pytest.param("exception.v1.avsc", models.BusinessException, id="exception-gains-invoiced-at-source-kind"),
        pytest.param("billing-response.v1.avsc", models.BillingResponse, id="billing-response-gains-amount"),
        pytest.param("billing-response.v2.avsc", models.BillingResponse, id="billing-response-gains-time-entry"),
        pytest.param("posting-ack.v1.avsc", models.PostingAck, id="posting-ack-gains-amount"),
    ],
)
def test_the_current_schema_reads_what_the_published_one_wrote(published: str, event_cls: type[models.Event]) -> None:
    old = compatibility.parse((PUBLISHED / published).read_text())
    new = compatibility.parse(wire.schema_str(event_cls))
    assert (
        compatibility.check_compatibility(compatibility.CompatibilityLevel.BACKWARD, new, [old], decimal_strict=True)
        == []
    )


def test_a_time_entry_written_before_the_invoice_fields_reads_as_not_said() -> None:
    # an old producer's record, read with the new schema: the source said nothing about invoicing
    old_schema = fastavro.parse_schema(json.loads((PUBLISHED / "time-entry.v1.avsc").read_text()))
    before = {k: v for k, v in RICH["time-entry"].items() if k not in ("invoiced_at_source", "source_invoice_id")}
    event = models.TimeEntry.model_validate(before)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, old_schema, wire.to_record(event))
    record = fastavro.schemaless_reader(io.BytesIO(buffer.getvalue()), old_schema, wire.parsed_schema(models.TimeEntry))
    back = wire.from_record(models.TimeEntry, record)
    assert isinstance(back, models.TimeEntry)
    assert (back.invoiced_at_source, back.source_invoice_id) == (None, None)
    assert back == event


def test_an_old_reader_cannot_read_the_new_kind_so_consumers_upgrade_before_producers() -> None:
    # the check is not vacuous: the new symbol is BACKWARD compatible only, not FORWARD
    old = compatibility.parse((PUBLISHED / "exception.v1.avsc").read_text())
    new = compatibility.parse(wire.schema_str(models.BusinessException))
    assert compatibility.check_compatibility(compatibility.CompatibilityLevel.FORWARD, new, [old]) != []
