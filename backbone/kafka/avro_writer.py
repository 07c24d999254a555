"""Avro binary bodies written straight from a model's field values, without fastavro.

`record_writer(schema)` turns a parsed record schema into a function from a dict of field values (a
pydantic model's `__dict__`) to the Avro body, generated once from the schema as one flat function
(each field's encoding inlined for its type), so writing a record does no type tests, no union
resolution by trial, no intermediate dict and few calls. fastavro's `schemaless_writer` on the dict
`wire.to_record` built cost a time entry about 15 µs of the ~40 µs `backbone emit` spent per line,
and the topology pays it for every output; this costs a few (docs/benchmarks.md). The bytes are
fastavro's, byte for byte: tests/unit/test_avro_writer.py holds every event type, with nulls,
unions, decimals, unicode and the extremes of every range, to that.

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

from backbone.kafka.generated import define

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

    The dict must hold every field of the schema (a model's `__dict__` does); extra keys are ignored.
    The function is generated from the schema as one flat body (`_RecordSource`): every output of the
    topology and every line `backbone emit` publishes is written by it, and a call per field and per
    varint was most of what writing cost (docs/topology-performance.md, "Sixth session")."""
    return _RecordSource(schema).compile()


class _RecordSource:
    """The Python source of one record's writer: each field's encoding inlined in field order.

    Strings, longs, ints, booleans, instants, dates, enums and optional ones of these are written
    inline into one `bytearray`; decimals, arrays and nested records call the writers below. Varints of
    -64..63 (most lengths, counts and small numbers) are one table lookup; larger ones go through
    `write_long`/`write_int`, which also check the range. The source is kept on the function
    (`source`) for whoever needs to read what runs."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.name = str(schema.get("name", "record"))
        self.namespace: dict[str, Any] = {
            "_ONE": _ONE_BYTE,
            "_long": write_long,
            "_int": write_int,
            "_EPOCH": _EPOCH,
            "_EPOCH_ORDINAL": _EPOCH_ORDINAL,
        }
        self.lines = ["def write_record(values):", "    out = bytearray()"]
        for field in schema["fields"]:
            self.lines.append(f"    v = values[{field['name']!r}]")
            self._value(field["type"], "    ")
        self.lines.append("    return bytes(out)")

    def compile(self) -> Callable[[dict[str, Any]], bytes]:
        source = "\n".join(self.lines) + "\n"
        write: Callable[[dict[str, Any]], bytes] = define(
            source, "write_record", self.namespace, f"avro writer of {self.name}"
        )
        return write

    def _value(self, avro_type: Any, indent: str) -> None:
        """Lines appending the encoding of `v` (of `avro_type`) to `out`."""
        if isinstance(avro_type, list):
            self._optional(avro_type, indent)
        elif isinstance(avro_type, dict) and avro_type.get("logicalType") == "timestamp-micros":
            self._line(indent, "d = v - _EPOCH", "v = (d.days * 86400 + d.seconds) * 1000000 + d.microseconds")
            self._varint("_long", indent)
        elif isinstance(avro_type, dict) and avro_type.get("logicalType") == "date" and avro_type["type"] == "int":
            self._line(indent, "v = v.toordinal() - _EPOCH_ORDINAL")
            self._varint("_int", indent)
        elif isinstance(avro_type, dict) and "logicalType" not in avro_type and avro_type["type"] == "enum":
            symbols = self._helper({symbol: write_long(i) for i, symbol in enumerate(avro_type["symbols"])})
            refuse = self._helper(_enum(avro_type["symbols"]))
            self._line(indent, f"e = {symbols}.get(v)", f"out += {refuse}(v) if e is None else e")
        elif avro_type in ("string", "bytes"):
            self._line(indent, "s = v.encode()" if avro_type == "string" else "s = v", "n = len(s)")
            self._line(indent, "out += _ONE[n + n] if n < 64 else _long(n)", "out += s")
        elif avro_type in ("long", "int"):
            self._varint("_long" if avro_type == "long" else "_int", indent)
        elif avro_type == "boolean":
            self._line(indent, 'out += b"\\x01" if v else b"\\x00"')
        else:  # decimals, arrays, nested records: a call to the writer of the type
            self._line(indent, f"out += {self._helper(_writer(avro_type))}(v)")

    def _optional(self, branches: list[Any], indent: str) -> None:
        others = [branch for branch in branches if branch != "null"]
        if len(branches) != 2 or len(others) != 1:
            raise ValueError(f"no Avro writer for the union {branches!r} (only null and one type)")
        null_branch = _BRANCH[branches.index("null")]
        value_branch = _BRANCH[branches.index(others[0])]
        self._line(indent, "if v is None:", f"    out += {null_branch!r}", "else:", f"    out += {value_branch!r}")
        self._value(others[0], indent + "    ")

    def _varint(self, write: str, indent: str) -> None:
        # zig-zag of -64..63 is below 0x80: one byte, from the table
        self._line(indent, f"out += _ONE[(v << 1) ^ (v >> 63)] if -64 <= v <= 63 else {write}(v)")

    def _helper(self, value: Any) -> str:
        name = f"_h{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def _line(self, indent: str, *lines: str) -> None:
        self.lines.extend(indent + line for line in lines)


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
