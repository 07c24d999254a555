"""Avro binary bodies written straight from a model's field values, without fastavro.

`record_writer(schema)` turns a parsed record schema into a function from a dict of field values (a
pydantic model's `__dict__`) to the Avro body, built once from the schema: each field gets a small
function chosen for its type, so writing a record does no type tests, no union resolution by trial
and no intermediate dict. fastavro's `schemaless_writer` on the dict `wire.to_record` built cost a
time entry about 15 µs of the ~40 µs `backbone emit` spent per line, and the topology pays it for
every output; this costs a few (docs/benchmarks.md). The bytes are fastavro's, byte for byte:
tests/unit/test_avro_writer.py holds every event type, with nulls, unions, decimals, unicode and the
extremes of every range, to that.

Covered: what the catalog's schemas use (null, boolean, int, long, string, bytes, enum, record, array,
unions, and the logical types decimal on bytes, date and timestamp-micros). Anything else is refused
when the writer is built, never guessed at. Values out of their type's range raise `ValueError` or
`OverflowError`, as fastavro does; the serde turns both into `InvalidInputError`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

Write = Callable[[Any], bytes]
"""Writes one value of one Avro type as its binary encoding."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.date().toordinal()
_ONE_BYTE = [bytes([value]) for value in range(0x80)]
"""The varint of every value below 0x80: most lengths, union branches and small numbers."""
_BRANCH = (b"\x00", b"\x02")
"""The encoded index of union branches 0 and 1."""


def record_writer(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    """A function writing a dict of field values as the Avro body of the record `schema` (parsed JSON).

    The dict must hold every field of the schema (a model's `__dict__` does); extra keys are ignored."""
    fields = tuple((field["name"], _writer(field["type"])) for field in schema["fields"])

    def write_record(values: dict[str, Any]) -> bytes:
        return b"".join([write(values[name]) for name, write in fields])

    return write_record


def _writer(avro_type: Any) -> Write:
    """The writer of one (field or item) type."""
    if isinstance(avro_type, list):
        return _union(avro_type)
    if isinstance(avro_type, str):
        return _primitive(avro_type)
    logical = avro_type.get("logicalType")
    kind = avro_type["type"]
    if logical is not None:
        return _logical(logical, avro_type)
    if kind == "record":
        write_fields = record_writer(avro_type)
        return lambda model: write_fields(model.__dict__)
    if kind == "enum":
        return _enum(avro_type["symbols"])
    if kind == "array":
        return _array(_writer(avro_type["items"]))
    return _primitive(kind)


def _primitive(name: str) -> Write:
    writers: dict[str, Write] = {
        "string": write_string,
        "long": write_long,
        "int": write_int,
        "boolean": write_boolean,
        "bytes": write_bytes,
    }
    if name not in writers:
        raise ValueError(f"no Avro writer for type {name!r}")
    return writers[name]


def _logical(logical: str, avro_type: dict[str, Any]) -> Write:
    kind = avro_type["type"]
    if logical == "timestamp-micros" and kind == "long":
        return _timestamp_micros
    if logical == "date" and kind == "int":
        return lambda value: write_int(days(value))
    if logical == "decimal" and kind == "bytes":
        return _decimal(avro_type["precision"], avro_type.get("scale", 0))
    raise ValueError(f"no Avro writer for logical type {logical!r} on {kind!r}")


def _union(branches: list[Any]) -> Write:
    """A union of null and one other type: what every optional field of the catalog is."""
    others = [branch for branch in branches if branch != "null"]
    if len(branches) != 2 or len(others) != 1:
        raise ValueError(f"no Avro writer for the union {branches!r} (only null and one type)")
    null_branch = _BRANCH[branches.index("null")]
    value_branch = _BRANCH[branches.index(others[0])]
    write_value = _writer(others[0])

    def write_optional(value: Any) -> bytes:
        return null_branch if value is None else value_branch + write_value(value)

    return write_optional


def _enum(symbols: list[str]) -> Write:
    # A StrEnum member hashes and compares as its symbol, so members and plain strings both look up.
    index = {symbol: write_long(position) for position, symbol in enumerate(symbols)}

    def write_symbol(value: Any) -> bytes:
        encoded = index.get(value)
        if encoded is None:
            raise ValueError(f"{value!r} is not one of the symbols {symbols}")
        return encoded

    return write_symbol


def _array(write_item: Write) -> Write:
    def write_array(values: Any) -> bytes:
        # One block holding every item, then the empty block that ends the array (fastavro's layout).
        if not values:
            return b"\x00"
        return write_long(len(values)) + b"".join([write_item(value) for value in values]) + b"\x00"

    return write_array


def _decimal(precision: int, scale: int) -> Write:
    quantum = Decimal(1).scaleb(-scale)
    limit = 10**precision

    def write_decimal(value: Decimal) -> bytes:
        # At exactly the schema's scale, rounding half-even as `wire.to_record` did before fastavro wrote it
        # (models allow no more places; a value built without validation is rounded, not refused).
        unscaled = int(value.quantize(quantum).scaleb(scale))
        if not -limit < unscaled < limit:
            raise ValueError("The decimal precision is bigger than allowed by schema")
        # fastavro's length: enough bytes for the magnitude and a sign bit (so -128 takes two bytes).
        return write_bytes(unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True))

    return write_decimal


def write_long(value: int) -> bytes:
    """A zig-zag varint; `OverflowError` outside Avro's 64-bit range."""
    if not -0x8000_0000_0000_0000 <= value <= 0x7FFF_FFFF_FFFF_FFFF:
        raise OverflowError(f"{value} is out of range for an Avro long")
    encoded = (value << 1) ^ (value >> 63)
    if encoded < 0x80:
        return _ONE_BYTE[encoded]
    if encoded < 0x4000:  # lengths and counts up to 8 KiB, durations up to 2 hours: no loop
        return bytes(((encoded & 0x7F) | 0x80, encoded >> 7))
    out = bytearray()
    while encoded > 0x7F:
        out.append((encoded & 0x7F) | 0x80)
        encoded >>= 7
    out.append(encoded)
    return bytes(out)


def write_int(value: int) -> bytes:
    """Like `write_long`, within Avro's 32-bit range."""
    if not -0x8000_0000 <= value <= 0x7FFF_FFFF:
        raise OverflowError(f"{value} is out of range for an Avro int")
    return write_long(value)


def write_string(value: str) -> bytes:
    return write_bytes(value.encode("utf-8"))


def write_bytes(value: bytes) -> bytes:
    size = len(value)
    return (_ONE_BYTE[size * 2] if size < 0x40 else write_long(size)) + value


def write_boolean(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def _timestamp_micros(value: datetime) -> bytes:
    delta = value - _EPOCH  # `micros`, inlined: every event has an instant
    return write_long((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def micros(value: datetime) -> int:
    """Microseconds since the epoch, by the integer arithmetic fastavro uses for timestamp-micros."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def days(value: date) -> int:
    """Days since the epoch, as Avro's date."""
    return value.toordinal() - _EPOCH_ORDINAL
