"""Compiled Avro readers: an event's field values straight from its Avro body, without a dict or a model.

The PostgreSQL sink stores every field of every record it reads. Going through fastavro's dict and a
pydantic model cost it about four times what PostgreSQL spends storing the row (docs/benchmarks.md,
"The PostgreSQL sink"). A compiled reader is Python source generated once per writer schema (the
schema id a record names) and event class: straight-line code that reads the Avro binary encoding field
by field, resolves the writer's schema to the working tree's as Avro schema resolution does (a field
the writer lacks takes the reader's default, a field the reader lacks is read and dropped), converts
decimals, dates and instants as fastavro does, and tests each value against the model's rules with
cheap checks that are sufficient, never necessary, for the model to accept it.

It never decides alone that a record is bad. A record it cannot vouch for (a value that might break a
rule, a truncated body, invalid UTF-8, an enum symbol the reader does not know) reads as None, and the
caller decodes it the full way, through fastavro and the model, which accepts it or says why not
(`TopicSerde.decode`). A writer schema it does not know how to read (a type it does not handle, a rule
of the model it cannot check cheaply) gets no compiled reader at all, with the same outcome for each
of its records. tests/unit/test_compiled_reader.py holds both ways to the same values.

A row reader (`compile_row_reader`) is the same lines returning the row a consumer stores instead of
the values: the PostgreSQL sink reads each record with one call, its decimals and dates shared.

Arrays of records (a contract's rate card) are read item by item into their model. The fields a model
names in `shared_values` are given one copy per distinct value: strings interned, decimals, dates and
instants from bounded caches keyed by their raw Avro value (a decimal's bytes, a date's or an instant's
number), arrays by their bytes (per writer schema).
That is for master data, which every topology worker keeps whole (docs/topology-performance.md,
"Seventh session").
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic.fields import FieldInfo
from pydantic.types import Strict

from backbone.domain.construction import construct_from, key_sharing_dict
from backbone.domain.models import (
    CURRENCY_PATTERN,
    DECIMAL_LIMIT,
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    ID_PATTERN,
    Canonical,
    Dec,
    Event,
    Instant,
)
from backbone.kafka.generated import define

C = typing.TypeVar("C", bound=Canonical)
Values = tuple[Any, ...]
"""An event's field values in the model's field order, as the model holds them except that enums are
their values (plain strings)."""

ValuesReader = Callable[[bytes], Values | None]
"""Reads one record; None when only the model can say what it holds."""

RowReader = Callable[..., tuple[Any, ...] | None]
"""Reads one record (its bytes, then the arguments a row ends with) into a row; None as `ValuesReader`."""


class CannotCompile(Exception):
    """A writer schema or a model rule the compiled reader does not handle: the model reads every record."""


class _Unfit(Exception):
    """Raised inside a compiled reader for a record it cannot vouch for."""


# --- what the model demands of each field ------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One model field as the compiled reader sees it: the Avro value it takes and the checks (Python
    expressions over the decoded value `v`) under which the model surely accepts that value."""

    name: str
    kind: str
    """string, int, boolean, decimal, date, instant, enum or array (of records)."""
    optional: bool
    checks: tuple[str, ...] = ()
    symbols: frozenset[str] = frozenset()
    """Enum values the model takes."""
    shared: bool = False
    """One copy of each value serves every record (the model's `shared_values`)."""
    item: type[Canonical] | None = None
    """The model of an array's items."""
    items_schema: dict[str, Any] | None = None
    """The reader's Avro record of an array's items (namespace filled in)."""


_DEC_RULES = typing.get_args(Dec)[1:]
_INSTANT_RULES = typing.get_args(Instant)[1:]
_ID_CHECK = "v.isprintable() and not v.isspace() and v != ''"
"""ID_PATTERN: no control, separator or bidirectional-format character, and not blank. Every character
the pattern forbids is unprintable to Python, and the only printable white space is the ASCII space."""
_NOT_BLANK = "v.isprintable() and not v.isspace()"
"""_ID_CHECK of a string known not to be empty."""
_PATTERN_CHECKS = {ID_PATTERN: _ID_CHECK, CURRENCY_PATTERN: "_currency(v) is not None"}
_BOUNDS = {
    MinLen: ("min_length", 0), MaxLen: ("max_length", 0), Ge: ("ge", 0), Gt: ("gt", 1), Le: ("le", 0), Lt: ("lt", -1),
}  # fmt: skip
"""Constraint -> (its attribute, what to add to make it an inclusive integer bound)."""
_NEUTRAL_CONFIG = {"frozen", "extra", "use_enum_values", "title"}
"""Model settings that change no value a record can give (`use_enum_values` only what the model holds)."""


def model_rules(event_cls: type[Canonical]) -> tuple[Rule, ...]:
    """The rules of every field of `event_cls`, in field order; `CannotCompile` when one is unknown."""
    decorators = event_cls.__pydantic_decorators__
    if decorators.validators or decorators.field_validators or decorators.model_validators:
        raise CannotCompile(f"{event_cls.__name__} has validators of its own")
    if set(event_cls.model_config) - _NEUTRAL_CONFIG:  # e.g. str_max_length would constrain every string
        raise CannotCompile(f"{event_cls.__name__}'s configuration {event_cls.model_config} may add rules")
    if unknown := event_cls.shared_values - event_cls.model_fields.keys():
        raise CannotCompile(f"{event_cls.__name__} shares values of fields it lacks: {sorted(unknown)}")
    return tuple(
        replace(_rule(name, info), shared=name in event_cls.shared_values)
        for name, info in event_cls.model_fields.items()
    )


def event_builder(event_cls: type[C]) -> Callable[[Values], C]:
    """The event a compiled reader's values stand for, built without validating them again.

    The reader vouched for every value (the model would accept it as it is), so the event is put
    together as the model would hold it: enum fields get their members back, nothing else changes.
    Its fields live in a key-sharing dict when that is smaller (`construction.key_sharing_dict`).
    Generated like the readers: the values are unpacked into the fields one store each, a third of
    what `dict.update(zip(names, values))` took (docs/topology-performance.md, "Twelfth session").
    `TopicSerde.decode` uses it; tests/unit/test_compiled_reader.py compares it with the model's own
    reading."""
    rules = model_rules(event_cls)
    template = key_sharing_dict(event_cls)
    constants: dict[str, Any] = {"_model": event_cls, "_construct_from": construct_from, "_template": template}
    lines = [
        "def build(values):",
        "    fields = {}" if template is None else "    fields = _template.copy()",
        f"    {', '.join(f'fields[{name!r}]' for name in event_cls.model_fields)}, = values",
    ]
    for rule, info in zip(rules, event_cls.model_fields.values(), strict=True):
        if rule.kind == "enum":  # value -> member, as Enum(value) looks up
            constants[f"_members_{rule.name}"] = _unoptional(info.annotation)[0]._value2member_map_
            lines += _member_lines(rule)
    lines.append("    return _construct_from(_model, fields)")
    build: Callable[[Values], C] = define("\n".join(lines), "build", constants, f"{event_cls.__name__} builder")
    return build


def _member_lines(rule: Rule) -> list[str]:
    """`event_builder`'s lines turning an enum field's value into its member (an optional one's None stays)."""
    field = f"fields[{rule.name!r}]"
    member = f"{field} = _members_{rule.name}[{field}]"
    return [f"    if {field} is not None:", f"        {member}"] if rule.optional else [f"    {member}"]


def _rule(name: str, info: FieldInfo) -> Rule:
    annotation, optional = _unoptional(info.annotation)
    metadata = list(info.metadata)
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata += _flattened(extra)
    if isinstance(annotation, type) and issubclass(annotation, Enum) and not metadata:
        return Rule(name, "enum", optional, symbols=frozenset(str(member.value) for member in annotation))
    if annotation is Decimal and _same(metadata, _DEC_RULES):
        return Rule(name, "decimal", optional)
    if annotation is datetime and _same(metadata, _INSTANT_RULES):
        return Rule(name, "instant", optional)
    if annotation is date and not metadata:
        return Rule(name, "date", optional)
    if item := _record_of_tuple(annotation):
        if metadata:
            raise CannotCompile(f"field {name}: no compiled check for {metadata!r}")
        return Rule(name, "array", optional, item=item)
    kind = {str: "string", int: "int", bool: "boolean"}.get(annotation)  # type: ignore[call-overload]
    if kind is None:
        raise CannotCompile(f"field {name}: no compiled reading of {annotation}")
    return Rule(name, kind, optional, _checks(name, kind, metadata))


def _record_of_tuple(annotation: Any) -> type[Canonical] | None:
    """The model of `tuple[Model, ...]`'s items (an Avro array of records), else None."""
    if typing.get_origin(annotation) is not tuple:
        return None
    args = typing.get_args(annotation)
    if len(args) == 2 and args[1] is Ellipsis and isinstance(args[0], type) and issubclass(args[0], Canonical):
        return args[0]
    return None


def _unoptional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return annotation, False
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(members) != 1:
        raise CannotCompile(f"union {annotation} is more than an optional value")
    return members[0], True


def _flattened(extra: list[Any]) -> Iterator[Any]:
    for item in extra:
        if isinstance(item, FieldInfo):
            yield from item.metadata
        else:
            yield item


def _same(metadata: list[Any], expected: tuple[Any, ...]) -> bool:
    return len(metadata) == len(expected) and all(a is b for a, b in zip(metadata, expected, strict=True))


def _checks(name: str, kind: str, metadata: list[Any]) -> tuple[str, ...]:
    """Checks for the constraints of a string (lengths, a known pattern) or an integer (bounds); one
    chained comparison for the bounds. `Strict` needs none: Avro values have exact types."""
    lowest: int | None = None
    highest: int | None = None
    checks: list[str] = []
    for item in metadata:
        if isinstance(item, Strict):
            continue
        if isinstance(item, (MinLen, Ge, Gt)) and (kind == "string") is isinstance(item, MinLen):
            bound = _bound(item)
            lowest = bound if lowest is None else max(lowest, bound)
        elif isinstance(item, (MaxLen, Le, Lt)) and (kind == "string") is isinstance(item, MaxLen):
            bound = _bound(item)
            highest = bound if highest is None else min(highest, bound)
        elif kind == "string" and getattr(item, "pattern", None) in _PATTERN_CHECKS:
            checks.append(_PATTERN_CHECKS[item.pattern])
        else:
            raise CannotCompile(f"field {name}: no compiled check for {item!r}")
    if kind == "string":
        if lowest is not None and lowest > 0:  # not empty: the pattern's test of it is implied
            checks = [_NOT_BLANK if check == _ID_CHECK else check for check in checks]
        return (*_length_checks(lowest, highest), *checks)
    bounds = f"{'' if lowest is None else f'{lowest} <= '}v{'' if highest is None else f' <= {highest}'}"
    return (bounds, *checks) if bounds != "v" else tuple(checks)


def _length_checks(lowest: int | None, highest: int | None) -> tuple[str, ...]:
    """A string's length bounds, tested on its length in bytes (`n`, read before it was decoded) where
    that decides: a character takes one to four bytes of UTF-8, so at most `highest` bytes is at most
    `highest` characters, and at least one byte at least one character. Only a string the bytes leave
    in doubt is measured (`len(v)`)."""
    checks = []
    if lowest is not None and lowest > 0:
        checks.append("n > 0" if lowest == 1 else f"(n >= {4 * lowest} or len(v) >= {lowest})")
    if highest is not None:
        checks.append(f"(n <= {highest} or len(v) <= {highest})")
    return tuple(checks)


def _bound(item: Any) -> int:
    """The inclusive integer bound a length or comparison constraint sets."""
    for constraint, (attribute, shift) in _BOUNDS.items():
        if isinstance(item, constraint):
            bound = getattr(item, attribute)
            if type(bound) is not int:  # a fractional bound on an integer would be rounded the wrong way
                raise CannotCompile(f"bound {bound!r} is not an integer")
            return bound + shift
    raise CannotCompile(f"no bound in {item!r}")


# --- writer schema to Python source --------------------------------------------------------------------


def compile_reader(
    writer: dict[str, Any], reader: dict[str, Any], event_cls: type[Event], *, start: int = 0
) -> ValuesReader:
    """A reader of records written with `writer` (an Avro record schema as parsed JSON) into the values
    of `event_cls`, whose Avro schema is `reader`, from byte `start` of a record (after the framing);
    `CannotCompile` when it cannot be had."""
    if not isinstance(writer, dict) or writer.get("type") != "record" or _fullname(writer, "") != _fullname(reader, ""):
        raise CannotCompile(f"the writer schema is not a {reader['name']} record")
    constants: dict[str, Any] = {}
    body, outputs = _record(writer, reader, event_cls, "f", constants)
    return _build(body, outputs, constants, start)


def compile_row_reader(
    writer: dict[str, Any],
    reader: dict[str, Any],
    event_cls: type[Event],
    fields: tuple[str, ...],
    *,
    extra: tuple[str, ...] = (),
    complete: tuple[str, ...] = (),
    start: int = 0,
) -> RowReader:
    """A reader of records written with `writer` straight into a row: the values of `fields` (fields of
    `event_cls`, in any order) as `compile_reader` reads them, then the reader's own arguments after the
    record's bytes, named `extra`, as they are. It reads a record as `compile_reader` does (the same
    lines; what it cannot vouch for, None), and also returns None when a field of `complete` is null (a
    row that needs more than these values). Decimals and dates come from `_made`'s shared caches
    whatever the model shares: a consumer that only stores them (the PostgreSQL sink) pays one dict
    lookup for a rate or a day it has met before, instead of building it again (docs/benchmarks.md,
    "The PostgreSQL sink")."""
    if not isinstance(writer, dict) or writer.get("type") != "record" or _fullname(writer, "") != _fullname(reader, ""):
        raise CannotCompile(f"the writer schema is not a {reader['name']} record")
    names = tuple(event_cls.model_fields)
    if unknown := set(fields + complete) - set(names):
        raise CannotCompile(f"{event_cls.__name__} has no fields {sorted(unknown)}")
    constants: dict[str, Any] = {}
    body, outputs = _record(writer, reader, event_cls, "f", constants, share=_SHARED_IN_ROWS)
    row = [outputs[names.index(name)] for name in fields] + list(extra)
    for name in complete:
        body += [f"if {outputs[names.index(name)]} is None:", "    return None"]
    return _build(body, row, constants, start, params=("data", *extra))  # type: ignore[return-value]


_SHARED_IN_ROWS = frozenset({"decimal", "date"})
"""Kinds of values a row reader takes from the shared caches."""


def _record(
    writer: dict[str, Any],
    reader: dict[str, Any],
    model: type[Canonical],
    prefix: str,
    constants: dict[str, Any],
    share: frozenset[str] = frozenset(),
) -> tuple[list[str], list[str]]:
    """Lines reading one record written with `writer` into the values of `model` (whose Avro record is
    `reader`), each field into a variable named `prefix` and its index; and those names in field order.
    Values of the kinds in `share` are shared as those of the model's `shared_values` are."""
    rules = {rule.name: replace(rule, shared=True) if rule.kind in share else rule for rule in model_rules(model)}
    readers = {f["name"]: f for f in reader["fields"]}
    if any("aliases" in f for f in reader["fields"]):
        raise CannotCompile("reader fields with aliases: fastavro matches writer fields by them")  # none so far
    if set(rules) != set(readers):
        raise CannotCompile(f"{model.__name__}'s fields are not its Avro schema's")
    names = {name: f"{prefix}{i}" for i, name in enumerate(rules)}
    body: list[str] = []
    written: set[str] = set()
    for index, field in enumerate(writer["fields"]):
        name = field["name"]
        written.add(name)
        if name in rules:
            rule = _resolved(rules[name], readers[name]["type"], reader.get("namespace", ""))
            accepted = _shapes(readers[name]["type"], reader)
            body += _field(field["type"], writer, rule, accepted, names[name], constants)
        else:  # read and dropped, as strictly as fastavro would read it
            body += _field(field["type"], writer, None, (), f"{prefix}_skipped{index}", constants)
    for name in rules.keys() - written:
        body += [f"{names[name]} = {_default(readers[name], rules[name])!r}"]
    return body, list(names.values())


def _build(
    body: list[str], outputs: list[str], constants: dict[str, Any], start: int, params: tuple[str, ...] = ("data",)
) -> ValuesReader:
    source = "\n".join(
        [
            f"def read({', '.join(params)}):",
            "    try:",
            f"        pos = {start}",
            *(f"        {line}" for line in body),
            "        if pos > len(data):",
            "            raise _Unfit",
            f"        return ({', '.join(outputs)},)",
            "    except Exception:",
            "        return None",
        ]
    )
    reader: ValuesReader = define(source, "read", _RUNTIME | constants, "compiled avro reader")
    return reader


def _field(
    avro_type: Any, schema: dict[str, Any], rule: Rule | None, accepted: tuple[Any, ...], target: str,
    constants: dict[str, Any],
) -> list[str]:  # fmt: skip
    """Lines that read one writer field into `target` (a record it cannot vouch for raises `_Unfit`)."""
    members = avro_type if isinstance(avro_type, list) else [avro_type]
    branches = []
    for member in members:
        shape = _shape(member, schema)
        if shape == "null":
            nullable = rule is None or rule.optional
            branches.append([f"{target} = None"] if nullable else ["raise _Unfit"])
            continue
        if rule is not None and shape not in accepted:
            raise CannotCompile(f"field {rule.name}: writer type {member} does not resolve to the reader's")
        branches.append(_value(member, shape, schema, rule, target, constants))
    if not isinstance(avro_type, list):
        return branches[0]
    # The branch's index as one byte (raw zig-zag 2i): what writers write for a union of fewer than 64
    # branches; any other encoding of it is left to the model.
    lines = ["n = data[pos]", "pos += 1"]
    for i, branch in enumerate(branches):
        lines += [f"{'if' if i == 0 else 'elif'} n == {2 * i}:", *(f"    {line}" for line in branch)]
    return [*lines, "else:", "    raise _Unfit"]


def _value(
    avro_type: Any, shape: Any, schema: dict[str, Any], rule: Rule | None, target: str, constants: dict[str, Any]
) -> list[str]:
    """Lines reading one non-null value into `v`, checking it against `rule`, then into `target`."""
    kind = shape[0] if isinstance(shape, tuple) else shape
    if kind == "array":
        lines = _read_array(avro_type, schema, rule, constants, target)
    else:
        lines = _READS[kind](avro_type, rule, constants, target)
    if rule is not None:
        expected = {"long": "int", "int": "int", "string": "string", "boolean": "boolean", "enum": "enum"}.get(
            kind, kind
        )
        if expected != rule.kind:
            raise CannotCompile(f"field {rule.name}: writer type {kind} is not a model {rule.kind}")
        if rule.checks:
            lines += [f"if not ({' and '.join(rule.checks)}):", "    raise _Unfit"]
    return [*lines, f"{target} = v"]


def _varint_lines(into: str) -> list[str]:
    """A varint's raw (zig-zag encoded) value into `into`; one byte, the common case, inline."""
    return [f"{into} = data[pos]", "pos += 1", f"if {into} > 127:", f"    {into}, pos = _varint(data, pos, {into})"]


def _count_lines() -> list[str]:
    """A non-negative varint (a length, an enum symbol's index) into `n`; a negative one
    raises `_Unfit`. One byte of an even raw value, the common case, is read inline: `n & 129` tests both
    for a continuation bit and for a sign in one go."""
    return ["n = data[pos]", "if n & 129:", "    n, pos = _count(data, pos)", "else:", "    pos += 1", "    n >>= 1"]


def _length_lines() -> list[str]:
    """Where a value of a non-negative length ends, into `end` (its length in bytes stays in `n`)."""
    return [*_count_lines(), "end = pos + n"]


def _read_long(*_: Any) -> list[str]:
    return [*_varint_lines("n"), "v = (n >> 1) ^ -(n & 1)"]


def _read_string(avro_type: Any, rule: Rule | None, *_: Any) -> list[str]:
    lines = [*_length_lines(), "v = data[pos:end].decode()", "pos = end"]
    return [*lines, "v = _intern(v)"] if rule is not None and rule.shared else lines


def _read_boolean(*_: Any) -> list[str]:
    return ["v = data[pos]", "pos += 1", "if v > 1:", "    raise _Unfit", "v = v == 1"]


def _read_decimal(avro_type: Any, rule: Rule | None, *_: Any) -> list[str]:
    # fastavro reads with a context of the schema's precision; below that many digits the value is exact
    made = [
        "n = _from_bytes(k, 'big', signed=True)",
        "if not -_UNSCALED_LIMIT < n < _UNSCALED_LIMIT:",
        "    raise _Unfit",
        f"v = _Decimal(n).scaleb({-DECIMAL_SCALE})",
    ]
    read = [*_length_lines(), "k = data[pos:end]", "pos = end"]
    if rule is None or not rule.shared:
        return [*read, *made]
    # shared: looked up by its bytes, before they are turned into a number (checked once, when first met)
    return [*read, "v = _DECIMALS.get(k)", "if v is None:", *(f"    {line}" for line in made),
            "    v = _share(_DECIMALS, k, v)"]  # fmt: skip


def _read_date(avro_type: Any, rule: Rule | None, *_: Any) -> list[str]:
    return [*_read_long(), *_made(rule, "_DATES", "_fromordinal(v + _EPOCH_ORDINAL)")]


def _read_instant(avro_type: Any, rule: Rule | None, *_: Any) -> list[str]:
    # timedelta(0, 0, v) is timedelta(microseconds=v) without parsing a keyword (0.1-0.3 us of ~1.3)
    return [*_read_eight_byte_long(), *_made(rule, "_INSTANTS", "_EPOCH + _timedelta(0, 0, v)")]


def _read_eight_byte_long() -> list[str]:
    """`_read_long` for a long that usually takes eight bytes: an instant from 1978 to 2541 in microseconds.
    Those bytes are read as one little-endian integer and their seven-bit groups put together by three
    masks and shifts (pairs, quads, then the two halves), instead of a byte at a time; any other length
    is read by `_read_long`. A record cut short is still caught by the reader's final `pos > len(data)`."""
    return [
        "x = _from_bytes(data[pos:pos + 8], 'little')",
        "if x & 0x8080808080808080 == 0x0080808080808080:",  # seven continuation bits, then the last byte
        "    pos += 8",
        "    x = (x & 0x007F007F007F007F) | (x & 0x7F007F007F007F00) >> 1",
        "    x = (x & 0x00003FFF00003FFF) | (x & 0x3FFF00003FFF0000) >> 2",
        "    n = (x & 0x000000000FFFFFFF) | (x & 0x0FFFFFFF00000000) >> 4",
        "else:",
        *(f"    {line}" for line in _varint_lines("n")),
        "v = (n >> 1) ^ -(n & 1)",
    ]


def _made(rule: Rule | None, cache: str, make: str) -> list[str]:
    """`v = make`, an expression of the raw value `n` (or of `v` read from it); for a shared field, the
    copy `cache` keeps of that value when it has one (values of the same `n` are the same value)."""
    if rule is None or not rule.shared:
        return [f"v = {make}"]
    return ["s = " + cache + ".get(n)", f"v = s if s is not None else _share({cache}, n, {make})"]


def _read_array(
    avro_type: dict[str, Any], schema: dict[str, Any], rule: Rule | None, constants: dict[str, Any], target: str
) -> list[str]:
    """An array of records, as Avro writes it (blocks of items, a block of none ends it; a block with
    a negative count also gives its size in bytes), into a tuple of the item model. A shared array is
    the same tuple for the same bytes of the same writer schema (this reader's cache)."""
    if rule is None or rule.item is None or rule.items_schema is None:
        raise CannotCompile("no compiled reading of an array the reader drops")
    items = avro_type["items"]
    writer_items = {**items, "namespace": items.get("namespace", schema.get("namespace", ""))}
    if all(f["type"] == "null" for f in items["fields"]):  # a union reads its branch: a byte at least
        raise CannotCompile("an array of records that take no bytes")  # a large count would loop for nothing
    lines, outputs = _record(writer_items, rule.items_schema, rule.item, f"{target}_", constants)
    constants[f"_build_{target}"] = event_builder(rule.item)
    count, built, begin = f"{target}_count", f"{target}_items", f"{target}_begin"
    loop = [
        *_varint_lines("n"),
        f"{count} = (n >> 1) ^ -(n & 1)",
        f"if not {count}:",
        "    break",
        f"if {count} < 0:",
        f"    {count} = -{count}",
        *(f"    {line}" for line in _varint_lines("n")),  # the block's size in bytes, not needed
        f"for _ in range({count}):",
        *(f"    {line}" for line in lines),
        f"    {built}.append(_build_{target}(({', '.join(outputs)},)))",
    ]
    read = [f"{begin} = pos", f"{built} = []", "while True:", *(f"    {line}" for line in loop)]
    if not rule.shared:
        return [*read, f"v = tuple({built})"]
    cache, key = f"_shared_{target}", f"{target}_bytes"
    constants[cache] = {}
    return [
        *read,
        f"{key} = data[{begin}:pos]",
        f"s = {cache}.get({key})",
        f"v = s if s is not None else _share({cache}, {key}, tuple({built}))",
    ]


def _read_enum(avro_type: Any, rule: Rule | None, constants: dict[str, Any], target: str) -> list[str]:
    # the writer's symbols by index; None where the reader (model and Avro schema) does not take one
    symbols = f"_symbols_{target}"
    taken = rule.symbols if rule is not None else frozenset(avro_type["symbols"])
    constants[symbols] = tuple(s if s in taken else None for s in avro_type["symbols"])
    lines = [*_count_lines(), f"v = {symbols}[n]"]
    return [*lines, "if v is None:", "    raise _Unfit"]


_READS: dict[str, Callable[[Any, Rule | None, dict[str, Any], str], list[str]]] = {
    "long": _read_long,
    "int": _read_long,
    "string": _read_string,
    "boolean": _read_boolean,
    "decimal": _read_decimal,
    "date": _read_date,
    "instant": _read_instant,
    "enum": _read_enum,
}


def _shape(avro_type: Any, schema: dict[str, Any]) -> Any:
    """What a writer or reader type is, as far as resolution between the two goes."""
    if isinstance(avro_type, str):
        if avro_type in ("null", "boolean", "int", "long", "string"):
            return avro_type
        raise CannotCompile(f"no compiled reading of Avro {avro_type}")
    if not isinstance(avro_type, dict):
        raise CannotCompile(f"no compiled reading of Avro {avro_type}")
    base, logical = avro_type.get("type"), avro_type.get("logicalType")
    if base == "enum":
        return ("enum", _fullname(avro_type, schema.get("namespace", "")))
    if base == "array":
        items = avro_type.get("items")
        if not isinstance(items, dict) or items.get("type") != "record":
            raise CannotCompile(f"no compiled reading of an array of {items}")
        return ("array", _fullname(items, schema.get("namespace", "")))
    if logical is None:
        return _shape(base, schema)
    if (base, logical) == ("bytes", "decimal") and _decimal_fits(avro_type):
        return "decimal"
    if (base, logical) == ("int", "date"):
        return "date"
    if (base, logical) == ("long", "timestamp-micros"):
        return "instant"
    raise CannotCompile(f"no compiled reading of Avro {base} as {logical}")


def _decimal_fits(avro_type: dict[str, Any]) -> bool:
    return avro_type.get("scale", 0) == DECIMAL_SCALE and avro_type.get("precision") == DECIMAL_PRECISION


def _shapes(avro_type: Any, schema: dict[str, Any]) -> tuple[Any, ...]:
    members = avro_type if isinstance(avro_type, list) else [avro_type]
    return tuple(_shape(member, schema) for member in members)


def _fullname(named: dict[str, Any], namespace: str) -> str:
    name = str(named.get("name", ""))
    if "." in name:
        return name
    space = named.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def _resolved(rule: Rule, reader_type: Any, namespace: str) -> Rule:
    """`rule` with the enum symbols both the model and the reader's Avro schema take, or with the
    reader's record of an array's items (in the reader's `namespace` unless it names its own)."""
    members = reader_type if isinstance(reader_type, list) else [reader_type]
    if rule.kind == "array":
        items = [m["items"] for m in members if isinstance(m, dict) and m.get("type") == "array"]
        if len(items) != 1 or not isinstance(items[0], dict):
            raise CannotCompile(f"field {rule.name}: the reader's array is not one array of records")
        return replace(rule, items_schema={**items[0], "namespace": items[0].get("namespace", namespace)})
    if rule.kind != "enum":
        return rule
    avro = {s for m in members if isinstance(m, dict) and m.get("type") == "enum" for s in m["symbols"]}
    return replace(rule, symbols=rule.symbols & avro)


def _default(reader_field: dict[str, Any], rule: Rule) -> Any:
    """The reader's default of a field the writer lacks (null, a boolean or an empty array: what the
    contract's optional fields default to, but for a few numbers and enum symbols)."""
    if "default" not in reader_field:
        raise CannotCompile(f"field {rule.name} is missing from the writer and has no default")
    value = reader_field["default"]
    if (value is None and rule.optional) or (isinstance(value, bool) and rule.kind == "boolean"):
        return value
    if value == [] and rule.kind == "array":
        return ()
    raise CannotCompile(f"field {rule.name}: no compiled reading of default {value!r}")


def _varint(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The raw value of a varint of several bytes whose first byte was `first`, and the position after it
    (at most ten bytes in all). Unrolled: an instant takes eight bytes, and a loop kept a shift and its
    bound for each of them (every record of every event has an instant)."""
    value = first & 0x7F
    byte = data[pos]
    if byte < 0x80:
        return value | byte << 7, pos + 1
    value |= (byte & 0x7F) << 7
    byte = data[pos + 1]
    if byte < 0x80:
        return value | byte << 14, pos + 2
    value |= (byte & 0x7F) << 14
    byte = data[pos + 2]
    if byte < 0x80:
        return value | byte << 21, pos + 3
    value |= (byte & 0x7F) << 21
    byte = data[pos + 3]
    if byte < 0x80:
        return value | byte << 28, pos + 4
    value |= (byte & 0x7F) << 28
    byte = data[pos + 4]
    if byte < 0x80:
        return value | byte << 35, pos + 5
    value |= (byte & 0x7F) << 35
    byte = data[pos + 5]
    if byte < 0x80:
        return value | byte << 42, pos + 6
    value |= (byte & 0x7F) << 42
    byte = data[pos + 6]
    if byte < 0x80:
        return value | byte << 49, pos + 7
    value |= (byte & 0x7F) << 49
    byte = data[pos + 7]
    if byte < 0x80:
        return value | byte << 56, pos + 8
    value |= (byte & 0x7F) << 56
    byte = data[pos + 8]
    if byte < 0x80:
        return value | byte << 63, pos + 9
    raise _Unfit


def _count(data: bytes, pos: int) -> tuple[int, int]:
    """The non-negative varint at `pos` (zig-zag decoded) and the position after it; `_Unfit` when negative."""
    n = data[pos]
    n, pos = _varint(data, pos + 1, n) if n > 127 else (n, pos + 1)
    if n & 1:
        raise _Unfit
    return n >> 1, pos


SHARED_LIMIT = 4096
"""Distinct values of each kind a shared cache keeps (decimals, dates, instants, and each reader's rate
cards): master data repeats a few rates and dates; beyond the limit a value is simply not shared."""


def _share(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    """`value`, kept in `cache` under `key` while the cache has room."""
    if len(cache) < SHARED_LIMIT:
        cache[key] = value
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RUNTIME: dict[str, Any] = {
    "_Unfit": _Unfit,
    "_varint": _varint,
    "_count": _count,
    "_from_bytes": int.from_bytes,
    "_Decimal": Decimal,
    "_UNSCALED_LIMIT": int(DECIMAL_LIMIT.scaleb(DECIMAL_SCALE)),
    "_fromordinal": date.fromordinal,
    "_EPOCH_ORDINAL": _EPOCH.date().toordinal(),
    "_EPOCH": _EPOCH,
    "_timedelta": timedelta,
    "_currency": re.compile(CURRENCY_PATTERN.removeprefix("^").removesuffix("$")).fullmatch,
    "_intern": sys.intern,
    "_share": _share,
    "_DECIMALS": {},
    "_DATES": {},
    "_INSTANTS": {},
}
"""What generated readers see as globals."""
