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

import operator
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
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
REMEMBERED = 4096
"""Distinct dates, and distinct decimals of one precision and scale, whose bytes writers remember."""
_SMALL = 4096
"""Numbers and lengths below this are written from `SMALL_VARINTS` (made after `write_long`, at the end)."""


def record_writer(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    """A function writing a dict of field values as the Avro body of the record `schema` (parsed JSON).

    The dict must hold every field of the schema (a model's `__dict__` does); extra keys are ignored.
    The function is generated from the schema as one flat body (`_RecordSource`): every output of the
    topology and every line `backbone emit` publishes is written by it, and a call per field and per
    varint was most of what writing cost (docs/topology-performance.md, "Sixth session")."""
    return _RecordSource(schema).compile()


class _RecordSource:
    """The Python source of one record's writer: one `b"".join` of every field's encoding, in field order.

        def write_record(values):
            f0, f1, ... = _fields(values)
            return b"".join((
                b'\\x00' if f0 is None else b'\\x02' + (...),     # an optional string
                _SMALL[n] if (n := len(s := f2.encode())) < 4096 else _long(n), s,    # a string
                ...
            ))

    The values are taken at once (`operator.itemgetter`), and each field is one or two expressions of
    the tuple: a tuple joined once costs less than appending each piece to a `bytearray`, a statement
    each (about 100 against 160–230 ns a string field). Strings, longs, ints, booleans, enums and optional
    ones of these are written inline; arrays and nested records call the writers below. Lengths and
    numbers of 0..4095 (most strings, counts, minutes, versions) are one lookup in `SMALL_VARINTS`;
    others go through `write_long`/`write_int`, which also check the range.

    Instants, dates and decimals are looked up among those written before, because their encoding costs
    a call and a varint loop (0.5–1.7 µs) and the topology writes the same ones again and again: the three
    outputs of one priced change (an invoice candidate and two posting requests) carry the same instant
    object, the same work date and the candidate's amount again, and work dates, rates and amounts repeat
    from entry to entry (docs/topology-performance.md, "Twelfth session"). An instant is compared by
    identity with the last one written (`_last_instant`): two equal datetimes can still differ in
    their `fold`, and so in their offset, so equality is not enough. Dates are looked up by value,
    decimals by their text (`str`, which gives sign, digits and exponent exactly, in ~100 ns where a
    fresh Decimal's hash takes ~400), in dicts of at most `REMEMBERED` entries. A decimal is looked up only
    when it is a `Decimal` (an int of the same text must still be refused as before). Remembered bytes are
    never empty, so `get(f) or write(f)` writes the value exactly when it was not found.

    The source is kept on the function (`source`) for whoever needs to read what runs."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.name = str(schema.get("name", "record"))
        self.namespace: dict[str, Any] = {
            "_SMALL": SMALL_VARINTS,
            "_long": write_long,
            "_int": write_int,
            "_last_instant": _LAST_INSTANT,
            "_instant": _remembered_instant,
            "_dates": _DATES,
            "_date": _remembered_date,
            "_Decimal": Decimal,
        }
        names = [field["name"] for field in schema["fields"]]
        local = [f"f{index}" for index in range(len(names))]
        self.lines = ["def write_record(values):"]
        if len(names) > 1:  # itemgetter of one name gives the value, not a tuple of one
            self.namespace["_fields"] = operator.itemgetter(*names)
            self.lines.append(f"    {', '.join(local)} = _fields(values)")
        elif names:
            self.lines.append(f"    f0 = values[{names[0]!r}]")
        self.lines.append('    return b"".join((')
        for field, value in zip(schema["fields"], local, strict=True):
            self.lines.append(f"        {', '.join(self._value(field['type'], value))},")
        self.lines.append("    ))")

    def compile(self) -> Callable[[dict[str, Any]], bytes]:
        source = "\n".join(self.lines) + "\n"
        write: Callable[[dict[str, Any]], bytes] = define(
            source, "write_record", self.namespace, f"avro writer of {self.name}"
        )
        return write

    def _value(self, avro_type: Any, v: str) -> list[str]:
        """The expressions whose bytes, in order, are the encoding of `v` (of `avro_type`)."""
        logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
        kind = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
        if isinstance(avro_type, list):
            return [self._optional(avro_type, v)]
        if logical == "timestamp-micros":
            return [f"m[1] if {v} is (m := _last_instant[0])[0] else _instant({v})"]
        if logical == "date" and kind == "int":
            return [f"_dates.get({v}) or _date({v})"]
        if logical == "decimal" and kind == "bytes":
            remembered, write = _remembered_decimal(avro_type["precision"], avro_type.get("scale", 0))
            known, written = self._helper(remembered), self._helper(write)
            return [f"({known}.get(str({v})) if type({v}) is _Decimal else None) or {written}({v})"]
        if logical is None and kind == "enum":
            symbols = self._helper({symbol: write_long(i) for i, symbol in enumerate(avro_type["symbols"])})
            return [f"{symbols}.get({v}) or {self._helper(_enum(avro_type['symbols']))}({v})"]
        if avro_type in ("string", "bytes"):
            text = f"{v}.encode()" if avro_type == "string" else v
            return [f"_SMALL[n] if (n := len(s := {text})) < {_SMALL} else _long(n)", "s"]
        if avro_type in ("long", "int"):
            # `0 <= v < _SMALL` also lets bools through, as `write_long` does (True is written as 1)
            return [f"_SMALL[{v}] if 0 <= {v} < {_SMALL} else {'_long' if avro_type == 'long' else '_int'}({v})"]
        if avro_type == "boolean":
            return [f"b'\\x01' if {v} else b'\\x00'"]
        return [f"{self._helper(_writer(avro_type))}({v})"]  # arrays, nested records: the writer of the type

    def _optional(self, branches: list[Any], v: str) -> str:
        others = [branch for branch in branches if branch != "null"]
        if len(branches) != 2 or len(others) != 1:
            raise ValueError(f"no Avro writer for the union {branches!r} (only null and one type)")
        null_branch = _BRANCH[branches.index("null")]
        value_branch = _BRANCH[branches.index(others[0])]
        value = " + ".join(f"({e})" if " " in e else e for e in self._value(others[0], v))
        return f"{null_branch!r} if {v} is None else {value_branch!r} + {value}"

    def _helper(self, value: Any) -> str:
        name = f"_h{len(self.namespace)}"
        self.namespace[name] = value
        return name


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
        # (models allow no more places; a value built without validation is rounded, not refused). In a
        # context of our own, not the thread's: the bytes depend on the value alone, so they can be remembered.
        # Given by position (rounding None: the context's): by keyword it costs ~450 ns more a decimal.
        unscaled = int(value.quantize(quantum, None, _DECIMAL_CONTEXT).scaleb(scale, _DECIMAL_CONTEXT))
        if not -limit < unscaled < limit:
            raise ValueError("The decimal precision is bigger than allowed by schema")
        # fastavro's length: enough bytes for the magnitude and a sign bit (so -128 takes two bytes).
        return write_bytes(unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True))

    return write_decimal


_DECIMAL_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""The default context's precision and rounding, whatever a thread's context says."""


def _remembered_decimal(precision: int, scale: int) -> tuple[dict[str, bytes], Write]:
    """The decimals of `precision` and `scale` written so far, by their text (shared by every writer of
    that type, so at most `REMEMBERED` of them whatever the number of fields), and a writer that adds to them."""
    remembered = _DECIMALS.setdefault((precision, scale), {})
    write = _decimal(precision, scale)

    def write_and_remember(value: Decimal) -> bytes:
        encoded = write(value)
        if type(value) is Decimal:
            _remember(remembered, str(value), encoded)
        return encoded

    return remembered, write_and_remember


def _remembered_instant(value: datetime) -> bytes:
    """`_timestamp_micros(value)`, kept as the last instant written (a tuple: one assignment, so a
    writer on another thread reads an instant with its own bytes, never with another's)."""
    encoded = _timestamp_micros(value)
    _LAST_INSTANT[0] = (value, encoded)
    return encoded


def _remembered_date(value: date) -> bytes:
    """`write_int(days(value))`, remembered among `_DATES`."""
    encoded = write_int(days(value))
    _remember(_DATES, value, encoded)
    return encoded


def _remember(remembered: dict[Any, bytes], value: Any, encoded: bytes) -> None:
    if len(remembered) >= REMEMBERED:  # bounded memory; a fresh start costs only writing them again
        remembered.clear()
    remembered[value] = encoded


_NOTHING = object()
_LAST_INSTANT: list[tuple[Any, bytes]] = [(_NOTHING, b"")]
"""The last instant a record writer wrote, with its bytes (`_RecordSource`)."""
_DATES: dict[date, bytes] = {}
_DECIMALS: dict[tuple[int, int], dict[str, bytes]] = {}


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


SMALL_VARINTS = [write_long(n) for n in range(_SMALL)]
"""The varint of every n in 0..`_SMALL`-1: most lengths and counts, minutes, versions, revisions."""
