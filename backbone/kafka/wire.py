"""The one seam between canonical models and their Avro wire form.

`schemas/avro/<event-type>.avsc` holds one schema per event in the canonical model. This module loads
them, and is the only code that turns an `Event` into an Avro record (a plain dict fastavro can write)
and back. Everything else — the serdes, connectors, processors, sinks — calls `to_record` and
`from_record` and never builds Avro dicts by hand, so a contract change touches the schema file, the
model and nothing else. Decimals leave with exactly the schema's scale (4); dates and instants stay
Python `date`/`datetime` objects because fastavro converts them with the schema's logical types.
Writing is the hot path of `backbone emit` and of every topology output, so `body_writer` writes the
same bytes straight from a model's field values, without the dict (`backbone.kafka.avro_writer`).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from backbone.domain.models import ALL_EVENTS, DECIMAL_SCALE, Canonical, Event
from backbone.kafka import avro_writer

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
"""Where the `.avsc` files live (the working tree's contract)."""

_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)


def schema_path(event_cls: type[Event]) -> Path:
    """The `.avsc` file of an event class: `schemas/avro/<event_type>.avsc`."""
    return SCHEMA_DIR / f"{event_cls.event_type}.avsc"


@cache
def schema_for(event_cls: type[Event]) -> dict[str, Any]:
    """The event's Avro schema as parsed JSON (shared; do not mutate)."""
    return json.loads(schema_path(event_cls).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@cache
def schema_str(event_cls: type[Event]) -> str:
    """The event's Avro schema as compact JSON text, the form the schema registry stores."""
    return json.dumps(schema_for(event_cls), separators=(",", ":"), ensure_ascii=False)


@cache
def body_writer(event_cls: type[Event]) -> Callable[[dict[str, Any]], bytes]:
    """Writes the Avro body of an event of `event_cls` from its field values (the model's `__dict__`,
    with any envelope defaults laid over it): the bytes fastavro writes for `to_record(event)`, built
    without the record dict (`backbone.kafka.avro_writer`); decimals leave at the schema's scale, as
    `to_record` puts them."""
    return avro_writer.record_writer(schema_for(event_cls))


@cache
def parsed_schema(event_cls: type[Event]) -> Any:
    """The event's schema parsed by fastavro, ready for `schemaless_writer`/`schemaless_reader`."""
    return fastavro.parse_schema(schema_for(event_cls))


def event_class_for(record_name: str) -> type[Event]:
    """The event class whose schema is the Avro record `record_name` (full or short name)."""
    short = record_name.rsplit(".", 1)[-1]
    for cls in ALL_EVENTS.values():
        if cls.__name__ == short:
            return cls
    raise KeyError(f"no canonical event is written as Avro record {record_name!r}")


def to_record(event: Canonical) -> dict[str, Any]:
    """The Avro record of a canonical model: enums as symbols, decimals at scale 4, tuples as lists."""
    return {name: convert(getattr(event, name)) for name, convert in _converters(type(event))}


def from_record(event_cls: type[Event], record: dict[str, Any]) -> Event:
    """The canonical event of an Avro record (validated: valid Avro can still break a model rule)."""
    return event_cls.model_validate(record)


@cache
def _converters(model: type[Canonical]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    # Chosen once per class from the field annotations: the hot path then does no type tests.
    return tuple((name, _converter(info.annotation)) for name, info in model.model_fields.items())


def _converter(annotation: Any) -> Callable[[Any], Any]:
    inner = _strip(annotation)
    if isinstance(inner, type) and issubclass(inner, Enum):
        return _optional(_enum_symbol)
    if inner is Decimal:
        return _optional(_scaled)
    if typing.get_origin(inner) is tuple:
        return _records
    return _same


def _strip(annotation: Any) -> Any:
    """The type inside `Annotated[...]` and `X | None`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _strip(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _strip(inner)
    return annotation


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _enum_symbol(value: Enum) -> Any:
    return value.value


def _scaled(value: Decimal) -> Decimal:
    # fastavro refuses more digits than the scale; models already allow at most 4.
    return value.quantize(_QUANTUM)


def _records(values: tuple[Canonical, ...]) -> list[dict[str, Any]]:
    return [to_record(value) for value in values]


def _same(value: Any) -> Any:
    return value
