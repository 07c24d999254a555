"""Compiled line writers: an event's Avro body straight from a parsed JSON line, without a model.

`backbone emit` spent most of each line in pydantic validation, the model's envelope defaults, the
event id's plumbing and one writer call per Avro field (docs/benchmarks.md, "Publishing paths"). A
compiled line writer is Python source generated once per event class: straight-line code that takes
the dict `orjson.loads` made of a line, checks every field against the model's rules with cheap tests
that are sufficient, never necessary, for the model to accept it (the same rules the compiled readers
of `backbone.kafka.compiled` use), fills in the envelope defaults the emitter promises (the correlation
id, the event id derived from the payload by `backbone.domain.ids`) and writes the Avro body inline,
the bytes `wire.body_writer` writes for the model the same line validates into.

It never decides alone that a line is bad. A line it cannot vouch for (a missing or unknown field, a
value of another JSON type, a value that might break a rule, a date or instant in any but the common
RFC 3339 shapes) gives None, and the caller validates it the full way, through the model, which
accepts it or says exactly why not. An event class it does not know how to write (nested models, a
key that is not a field, a rule it cannot check cheaply) gets no compiled writer (`CannotCompile`).
tests/unit/test_compiled_writer.py holds both ways to the same bytes and ids.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from backbone.domain.ids import ADDED_LATER, event_id_from_sorted
from backbone.domain.models import ID_MAX_LENGTH, Event, _decimal_from_text, _fits_scale
from backbone.kafka import avro_writer, wire
from backbone.kafka.compiled import _ID_CHECK, _NOT_BLANK, CannotCompile, Rule, _length_checks, model_rules
from backbone.kafka.compiled import _RUNTIME as _READER_RUNTIME
from backbone.kafka.generated import define

Written = tuple[bytes, bytes, bytes, bytes]
"""(key, Avro body, source_system, correlation_id or b"" when none): what the emitter spools."""

LineWriter = Callable[[Any], Written | None]
"""Writes one parsed line; None when only the model can say whether it is valid."""
IdentifiedWriter = Callable[[Any], tuple[bytes, bytes, bytes, bytes, str] | None]
"""A `LineWriter` whose result also carries the event id it wrote (`compile_identified_writer`)."""

CACHE_LIMIT = 4096
"""Distinct date and instant texts remembered (exports repeat them: a day's entries share a work date)."""

_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INSTANT_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
"""The instants vouched for: RFC 3339 with `T`, at most microseconds, `Z` or an offset, every clock and
offset part in its range (`datetime.fromisoformat` takes an offset of `+12:60`, pydantic does not).
pydantic takes more shapes (a space, lower case, more digits); those lines take the model's way."""


class _Unfit(Exception):
    """Raised inside a compiled writer for a line it cannot vouch for."""


def compile_writer(event_cls: type[Event], *, correlate_with: str | None = None) -> LineWriter:
    """A writer of `event_cls` lines; `correlate_with` names the field a missing correlation id takes
    (the emitter's envelope default). `CannotCompile` when the class is beyond it."""
    return _compile(event_cls, correlate_with, with_event_id=False)


def compile_identified_writer(event_cls: type[Event], *, correlate_with: str | None = None) -> IdentifiedWriter:
    """`compile_writer`'s writer that also gives the event id it wrote (derived or given): the HTTP
    gateway answers each request with its events' ids (docs/gateway.md, "Speed")."""
    return _compile(event_cls, correlate_with, with_event_id=True)


def _compile(event_cls: type[Event], correlate_with: str | None, *, with_event_id: bool) -> Callable[[Any], Any]:
    rules = model_rules(event_cls)
    if nested := [rule.name for rule in rules if rule.kind not in _CHECKS]:
        raise CannotCompile(f"{event_cls.__name__}: no compiled writing of {nested} (records in an array)")
    schema = wire.schema_for(event_cls)
    avro_types = {field["name"]: field["type"] for field in schema["fields"]}
    names = [rule.name for rule in rules]
    if set(names) != set(avro_types):
        raise CannotCompile(f"{event_cls.__name__}'s fields are not its Avro schema's")
    if event_cls.key_field not in avro_types or "event_id" not in avro_types or "correlation_id" not in avro_types:
        raise CannotCompile(f"{event_cls.__name__}'s key or envelope is not among its fields")
    local = {name: f"f{index}" for index, name in enumerate(names)}
    constants: dict[str, Any] = {"_TYPE": event_cls.event_type}
    required = [name for name in names if event_cls.model_fields[name].is_required()]
    if len(required) < 2:
        raise CannotCompile(f"{event_cls.__name__} has fewer than two required fields")
    constants[_REQUIRED_NAME] = frozenset(required)
    constants[_ALLOWED_NAME] = frozenset(names)
    constants["_take_required"] = operator.itemgetter(*required)
    lines = [
        f"if not ({_REQUIRED_NAME} <= d.keys() <= {_ALLOWED_NAME}):",
        "    return None",
        f"{', '.join(local[name] for name in required)} = _take_required(d)",
    ]
    ids = [rule for rule in rules if rule.name in required and rule.kind == "string" and rule.checks == _ID_RULE]
    if len(ids) > 1:
        lines += _ids_at_once([local[rule.name] for rule in ids])
    for rule in rules:
        if rule not in ids or len(ids) < 2:
            lines += _read(rule, event_cls, local[rule.name], constants)
    lines += _envelope(names, local, correlate_with)
    writes = [_write(avro_types[name], local[name], constants) for name in avro_types]
    lines += [f"body = b''.join(({', '.join(writes)},))"]
    key, corr = local[event_cls.key_field], local["correlation_id"]
    identified = f", {local['event_id']}" if with_event_id else ""
    lines += [
        f"return ({key}.encode(), body, {local['source_system']}.encode(), "
        f"b'' if {corr} is None else {corr}.encode(){identified})"
    ]
    return _build(lines, constants)


_REQUIRED_NAME, _ALLOWED_NAME = "_REQUIRED", "_ALLOWED"


_ID_CHECKS = (f"1 <= len(v) <= {ID_MAX_LENGTH}", _ID_CHECK)
"""What the model demands of an identifier (`models.Id`), as this writer tests it."""
_ID_RULE = (*_length_checks(1, ID_MAX_LENGTH), _NOT_BLANK)
"""The checks `model_rules` gives an identifier (the reader's: lengths tested on `n` where that decides)."""


def _ids_at_once(targets: list[str]) -> list[str]:
    """One test vouching for several required identifiers, each checked alone only when it fails: all
    non-empty, their text together printable (no control, separator or bidirectional-format character)
    and without a space (so none is blank) and no longer than one id may be."""
    together = f"len(j := ''.join(({', '.join(targets)},))) <= {ID_MAX_LENGTH} and j.isprintable() and ' ' not in j"
    alone = [f"    if not (type(v := {target}) is str and {' and '.join(_ID_CHECKS)}):" for target in targets]
    return [
        f"if not ({' and '.join(targets)} and {together}):",
        *(line for a in alone for line in (a, "        raise _Unfit")),
    ]


def _read(rule: Rule, event_cls: type[Event], target: str, constants: dict[str, Any]) -> list[str]:
    """Lines taking one field's value into `target`, as the model would hold it, or raising `_Unfit`."""
    info = event_cls.model_fields[rule.name]
    if info.is_required():
        lines = [f"v = {target}"]  # taken from the line with the other required fields
    else:
        if info.default_factory is not None:
            raise CannotCompile(f"field {rule.name}: a default factory")
        default = info.default
        if default is not None and type(default) not in (bool, int, str):
            raise CannotCompile(f"field {rule.name}: no compiled default {default!r}")
        lines = [f"v = d.get({rule.name!r}, {default!r})"]
    check = _CHECKS[rule.kind](rule, target, constants)
    if rule.optional:
        return [*lines, "if v is None:", f"    {target} = None", "else:", *(f"    {line}" for line in check)]
    return lines + check


def _check_string(rule: Rule, target: str, constants: dict[str, Any]) -> list[str]:
    # `model_rules` tests some lengths on `n`, a string's length in bytes as the reader knows it before
    # decoding; a line's string has no bytes, and with `n` its length in characters each test means
    # exactly the model's bound (`compiled._length_checks`)
    return _checked(rule, "type(v) is str and (n := len(v)) >= 0" if rule.checks else "type(v) is str", target)


def _check_int(rule: Rule, target: str, constants: dict[str, Any]) -> list[str]:
    return _checked(rule, "type(v) is int", target)


def _check_boolean(rule: Rule, target: str, constants: dict[str, Any]) -> list[str]:
    return _checked(rule, "type(v) is bool", target)


def _checked(rule: Rule, type_test: str, target: str) -> list[str]:
    tests = " and ".join((type_test, *rule.checks))
    return [f"if not ({tests}):", "    raise _Unfit", f"{target} = v"]


def _check_enum(rule: Rule, target: str, constants: dict[str, Any]) -> list[str]:
    # held as its value (a plain string): the Avro writer and the event id treat both alike
    constants[f"_symbols_{target}"] = rule.symbols
    return [f"if not (type(v) is str and v in _symbols_{target}):", "    raise _Unfit", f"{target} = v"]


def _check_date(rule: Rule, target: str, constants: dict[str, Any]) -> list[str]:
    return _cached("_dates", "_date", target)


def _check_instant(rule: Rule, target: str, constants: dict[str, Any]) -> list[str]:
    return _cached("_instants", "_instant", target)


def _cached(cache: str, parse: str, target: str) -> list[str]:
    return [
        f"{target} = {cache}.get(v) if type(v) is str else None",
        f"if {target} is None:",
        f"    {target} = {parse}(v)",
    ]


def _check_decimal(rule: Rule, target: str, constants: dict[str, Any]) -> list[str]:
    return [f"{target} = _decimal(v)"]


_CHECKS: dict[str, Callable[[Rule, str, dict[str, Any]], list[str]]] = {
    "string": _check_string,
    "int": _check_int,
    "boolean": _check_boolean,
    "enum": _check_enum,
    "date": _check_date,
    "instant": _check_instant,
    "decimal": _check_decimal,
}


def _envelope(names: list[str], local: dict[str, str], correlate_with: str | None) -> list[str]:
    """The emitter's envelope defaults: correlation id from `correlate_with`, then the event id derived
    from the payload as published (everything but the event id, the later-added fields only when set;
    `backbone.domain.ids`)."""
    corr, event_id = local["correlation_id"], local["event_id"]
    lines = [f"if {corr} is None:", f"    {corr} = {local[correlate_with]}"] if correlate_with else []
    # In sorted order, whichever later-added fields are set: the id's canonical JSON then needs no sorting.
    always = [name for name in names if name != "event_id" and name not in ADDED_LATER]
    later = [name for name in names if name in ADDED_LATER]
    lines += [f"if {event_id} is None:"]
    for number, given in enumerate(_subsets(later)):
        test = " and ".join(f"{local[name]} is {'not ' if name in given else ''}None" for name in later)
        payload = ", ".join(f"{name!r}: {local[name]}" for name in sorted([*always, *given]))
        lines += [f"    {'if' if number == 0 else 'elif'} {test}:"] if test else []
        lines += [f"    {'    ' if test else ''}{event_id} = _event_id_sorted(_TYPE, {{{payload}}})"]
    return lines


def _subsets(names: list[str]) -> list[list[str]]:
    """Every subset of `names`, the empty one first."""
    subsets: list[list[str]] = [[]]
    for name in names:
        subsets += [[*subset, name] for subset in subsets]
    return subsets


def _write(avro_type: Any, target: str, constants: dict[str, Any]) -> str:
    """An expression writing `target` as `avro_type` (the bytes `avro_writer` writes)."""
    if isinstance(avro_type, list):
        others = [branch for branch in avro_type if branch != "null"]
        if len(avro_type) != 2 or len(others) != 1:
            raise CannotCompile(f"union {avro_type!r} is more than an optional value")
        null = avro_writer._BRANCH[avro_type.index("null")]
        branch = avro_writer._BRANCH[avro_type.index(others[0])]
        value = _write(others[0], target, constants)
        return f"({null!r} if {target} is None else {branch!r} + {value})"
    kind = avro_type if isinstance(avro_type, str) else avro_type.get("logicalType") or avro_type["type"]
    if kind == "enum":
        name = f"_enum_{target}"
        constants[name] = {symbol: avro_writer.write_long(i) for i, symbol in enumerate(avro_type["symbols"])}
        return f"{name}[{target}]"
    if kind in _WRITES:
        return _WRITES[kind].format(v=target)
    if kind == "decimal" and (avro_type.get("precision"), avro_type.get("scale")) == (18, 4):
        constants["_write_decimal"] = avro_writer._decimal(18, 4)
        return f"_write_decimal({target})"
    raise CannotCompile(f"no compiled writing of Avro {avro_type!r}")


_WRITES = {
    "string": "((_LENGTHS[n] if (n := len(e := {v}.encode())) < _SHORT else _long(n)) + e)",
    "long": "(_ONE[{v} + {v}] if 0 <= {v} < 64 else _longs.get({v}) or _long_kept({v}))",
    "int": "(_ONE[{v} + {v}] if 0 <= {v} < 64 else _ints.get({v}) or _int_kept({v}))",
    "boolean": "(b'\\x01' if {v} else b'\\x00')",
    "date": "_date_bytes[{v}]",
    "timestamp-micros": "_instant_bytes[{v}]",
}


_LENGTHS = avro_writer.SMALL_VARINTS  # the record writers' table: one copy in memory
"""The length prefix of every string shorter than `_SHORT` bytes (ids, names, most notes)."""
_SHORT = len(_LENGTHS)


def _date(text: str) -> date:
    """A work date vouched for: `YYYY-MM-DD` that `date.fromisoformat` (and so pydantic) reads."""
    if type(text) is not str or not _DATE_TEXT.fullmatch(text):
        raise _Unfit
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise _Unfit from None
    _remember(_DATES, text, value)
    _DATE_BYTES[value] = avro_writer.write_int(avro_writer.days(value))
    return value


def _instant(text: str) -> datetime:
    """An instant vouched for, in UTC as the model holds it (`models._utc`)."""
    if type(text) is not str or not _INSTANT_TEXT.fullmatch(text):
        raise _Unfit
    try:
        value = datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _Unfit from None
    _remember(_INSTANTS, text, value)
    _INSTANT_BYTES[value] = avro_writer.write_long(avro_writer.micros(value))
    return value


def _long_kept(value: int) -> bytes:
    """`write_long(value)`, remembered: an import's revisions are one number, its durations a few."""
    return _kept(_LONG_BYTES, value, avro_writer.write_long(value))


def _int_kept(value: int) -> bytes:
    return _kept(_INT_BYTES, value, avro_writer.write_int(value))


def _kept(cache: dict[int, bytes], value: int, written: bytes) -> bytes:
    if len(cache) >= CACHE_LIMIT:  # bounded memory; a fresh start costs only writing them again
        cache.clear()
    cache[value] = written
    return written


def _remember(cache: dict[Any, Any], text: str, value: Any) -> None:
    if len(cache) >= CACHE_LIMIT:  # bounded memory; a fresh start costs only re-parsing
        cache.clear()
        _DATE_BYTES.clear() if cache is _DATES else _INSTANT_BYTES.clear()
    cache[text] = value


def _decimal(value: Any) -> Decimal:
    """A decimal as `models.Dec` takes it (decimal strings in ASCII digits, integers), within its scale
    and range; anything else is left to the model."""
    if type(value) is not str and type(value) is not int:
        raise _Unfit
    try:
        return _fits_scale(_decimal_from_text(value))
    except (ValueError, ArithmeticError):
        raise _Unfit from None


_DATES: dict[str, date] = {}
_INSTANTS: dict[str, datetime] = {}
_DATE_BYTES: dict[date, bytes] = {}
_INSTANT_BYTES: dict[datetime, bytes] = {}
_LONG_BYTES: dict[int, bytes] = {}
_INT_BYTES: dict[int, bytes] = {}


def _build(lines: list[str], constants: dict[str, Any]) -> LineWriter:
    source = "\n".join(
        [
            "def write(d):",
            "    try:",
            *(f"        {line}" for line in lines),
            "    except Exception:",
            "        return None",
        ]
    )
    writer: LineWriter = define(source, "write", _RUNTIME | constants, "compiled line writer")
    return writer


_RUNTIME: dict[str, Any] = {
    "_Unfit": _Unfit,
    "_ONE": avro_writer._ONE_BYTE,
    "_long": avro_writer.write_long,
    "_LENGTHS": _LENGTHS,
    "_SHORT": _SHORT,
    "_date": _date,
    "_instant": _instant,
    "_decimal": _decimal,
    "_dates": _DATES,
    "_instants": _INSTANTS,
    "_date_bytes": _DATE_BYTES,
    "_instant_bytes": _INSTANT_BYTES,
    "_longs": _LONG_BYTES,
    "_long_kept": _long_kept,
    "_ints": _INT_BYTES,
    "_int_kept": _int_kept,
    "_event_id_sorted": event_id_from_sorted,
    "_currency": _READER_RUNTIME["_currency"],  # the checks `model_rules` writes may call it
}
"""What generated writers see as globals."""
