"""Avro schema compatibility: can a reader schema read data written with a writer schema?

Pure functions (no I/O) implementing the Avro specification's schema resolution rules
(https://avro.apache.org/docs/current/specification/#schema-resolution) and the compatibility levels of
the Confluent Schema Registry on top of them. Every check returns a list of human-readable messages;
an empty list means compatible, so callers can both decide and explain (the registry's `verbose=true`).

Schemas are parsed with fastavro, which fully qualifies every name and turns repeated named types into
references; `_Resolver` follows those references, so nested and recursive named types work.
Logical types are judged by their underlying type, as the specification says readers must, with one
deliberate exception: with `decimal_strict`, a decimal's precision or scale may not change (nor may a
decimal become plain bytes, or the reverse), because Avro stores a decimal as an unscaled integer and
a reader with another scale would silently rescale every stored amount (README, "The schema registry").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException, UnknownType

from backbone.errors import BackboneError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
TYPE_KEYWORDS = PRIMITIVES | {"record", "error", "enum", "fixed", "array", "map"}

# Writer type -> reader types that can read it (the specification's promotions).
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


class CompatibilityLevel(StrEnum):
    """The Confluent compatibility levels. BACKWARD: the new schema reads data written with old ones."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def is_transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def checks_backward(self) -> bool:
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def checks_forward(self) -> bool:
        return self.value.startswith(("FORWARD", "FULL"))


class InvalidSchemaError(BackboneError):
    """The schema text is not a valid Avro schema."""


@dataclass(frozen=True)
class ParsedSchema:
    """A validated Avro schema: the fastavro-parsed form plus every named type it can refer to."""

    schema: Any
    names: dict[str, Any] = field(default_factory=dict)


def parse(schema_text: str, referenced: Sequence[str] = ()) -> ParsedSchema:
    """Validate `schema_text` (after the texts of the schemas it references) or raise InvalidSchemaError."""
    names: dict[str, Any] = {}
    try:
        for text in referenced:
            fastavro.parse_schema(json.loads(text), named_schemas=names)
        parsed = fastavro.parse_schema(json.loads(schema_text), named_schemas=names)
    except (ValueError, TypeError, KeyError, AttributeError, SchemaParseException, UnknownType) as e:
        raise InvalidSchemaError(f"Invalid Avro schema: {e}") from e
    return ParsedSchema(schema=_strip_fastavro_keys(parsed), names=names)


def compact(schema_text: str) -> str:
    """The schema text without insignificant whitespace: how the registry stores and compares schemas."""
    return json.dumps(json.loads(schema_text), separators=(",", ":"), ensure_ascii=False)


def normalize(schema_text: str, referenced: Sequence[str] = ()) -> str:
    """A canonical text for `normalize=true`: names fully qualified, docs dropped, keys sorted.

    Equivalent schemas (differing in namespace spelling, docs, key order or whitespace) get the same
    text, so they get the same id. Field order and defaults are kept: they change the meaning.
    """
    parsed = parse(schema_text, referenced).schema
    return json.dumps(_without_docs(parsed), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def incompatibilities(reader: ParsedSchema, writer: ParsedSchema, *, decimal_strict: bool = False) -> list[str]:
    """Why `reader` cannot read data written with `writer` (empty when it can).

    `decimal_strict` also refuses any change of a decimal's precision or scale (see the module doc).
    """
    resolver = _Resolver(reader.names, writer.names, decimal_strict=decimal_strict)
    return resolver.check(reader.schema, writer.schema, "/")


def check_compatibility(
    level: CompatibilityLevel,
    new: ParsedSchema,
    existing: Sequence[ParsedSchema],
    *,
    decimal_strict: bool = False,
) -> list[str]:
    """Messages explaining why `new` breaks `level` against `existing` (oldest first); empty = allowed."""
    if level is CompatibilityLevel.NONE or not existing:
        return []
    against = existing if level.is_transitive else existing[-1:]
    messages: list[str] = []
    for old in reversed(against):
        if level.checks_backward:
            found = incompatibilities(new, old, decimal_strict=decimal_strict)
            messages += [f"new schema cannot read old data: {m}" for m in found]
        if level.checks_forward:
            found = incompatibilities(old, new, decimal_strict=decimal_strict)
            messages += [f"old schema cannot read new data: {m}" for m in found]
    return messages


class _Resolver:
    """Walks a reader and a writer schema together, collecting resolution failures."""

    def __init__(
        self, reader_names: dict[str, Any], writer_names: dict[str, Any], *, decimal_strict: bool = False
    ) -> None:
        self._reader_names = reader_names
        self._writer_names = writer_names
        self._decimal_strict = decimal_strict
        # Pairs of named types being compared; meeting one again means recursion, assumed fine.
        self._in_progress: set[tuple[str, str]] = set()

    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        reader = _resolve(reader, self._reader_names)
        writer = _resolve(writer, self._writer_names)
        if isinstance(writer, list):
            return self._check_writer_union(reader, writer, path)
        if isinstance(reader, list):
            return self._check_reader_union(reader, writer, path)
        return self._check_same_kind(reader, writer, path)

    def _check_writer_union(self, reader: Any, writer: list[Any], path: str) -> list[str]:
        # Any branch may have been written, so every branch must be readable.
        messages: list[str] = []
        for index, branch in enumerate(writer):
            messages += self.check(reader, branch, f"{path}[{index}]")
        return messages

    def _check_reader_union(self, reader: list[Any], writer: Any, path: str) -> list[str]:
        failures = [self.check(branch, writer, path) for branch in reader]
        if any(not messages for messages in failures):
            return []
        # The branch of the writer's own type says best why it cannot read (a field, a decimal scale).
        writer_type = writer.get("type")
        for branch, messages in zip(reader, failures, strict=True):
            resolved = _resolve(branch, self._reader_names)
            if isinstance(resolved, dict) and resolved.get("type") == writer_type:
                return messages
        return [f"{path}: reader union {_describe(reader)} has no branch for writer type {_describe(writer)}"]

    def _check_same_kind(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        if self._decimal_strict and (_decimal(reader) or _decimal(writer)):
            changed = _decimal_change(reader, writer, path)
            if changed:
                return [changed]
        reader_type, writer_type = reader["type"], writer["type"]
        if reader_type != writer_type:
            if reader_type in PROMOTIONS.get(writer_type, ()):
                return []
            return [f"{path}: reader type {reader_type} cannot read writer type {writer_type}"]
        checker = {
            "record": self._check_record,
            "enum": self._check_enum,
            "fixed": self._check_fixed,
            "array": self._check_array,
            "map": self._check_map,
        }.get(reader_type)
        return checker(reader, writer, path) if checker else []

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        if not _names_match(reader, writer):
            return [f"{path}: reader record {reader['name']} does not match writer record {writer['name']}"]
        pair = (reader["name"], writer["name"])
        if pair in self._in_progress:
            return []
        self._in_progress.add(pair)
        try:
            return [m for f in reader["fields"] for m in self._check_field(f, writer["fields"], path)]
        finally:
            self._in_progress.discard(pair)

    def _check_field(self, reader_field: dict[str, Any], writer_fields: list[Any], path: str) -> list[str]:
        name = reader_field["name"]
        writer_field = _find_writer_field(reader_field, writer_fields)
        if writer_field is not None:
            return self.check(reader_field["type"], writer_field["type"], f"{path}{name}/")
        if "default" in reader_field:
            return []  # Fields the writer never had are filled from the reader's default.
        return [f"{path}: reader field '{name}' has no default value and is missing from the writer"]

    def _check_enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        if not _names_match(reader, writer):
            return [f"{path}: reader enum {reader['name']} does not match writer enum {writer['name']}"]
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if not missing or "default" in reader:
            return []
        return [f"{path}: reader enum {reader['name']} lacks writer symbols {missing} and has no default"]

    def _check_fixed(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        if not _names_match(reader, writer):
            return [f"{path}: reader fixed {reader['name']} does not match writer fixed {writer['name']}"]
        if reader["size"] != writer["size"]:
            return [f"{path}: fixed {reader['name']} size {reader['size']} differs from writer {writer['size']}"]
        return []

    def _check_array(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        return self.check(reader["items"], writer["items"], f"{path}items/")

    def _check_map(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        return self.check(reader["values"], writer["values"], f"{path}values/")


def _resolve(schema: Any, names: dict[str, Any]) -> Any:
    """A schema as a dict with a `type` (or a list for a union), following named references."""
    if isinstance(schema, str):
        return {"type": schema} if schema in PRIMITIVES else _resolve(names[schema], names)
    if isinstance(schema, dict) and not isinstance(schema["type"], str):
        return _resolve(schema["type"], names)  # {"type": {...}} or {"type": [...]} wrappers
    if isinstance(schema, dict) and schema["type"] not in TYPE_KEYWORDS:
        return _resolve(names[schema["type"]], names)
    if isinstance(schema, dict) and schema["type"] == "error":
        return {**schema, "type": "record"}
    return schema


def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Unqualified names equal, or the writer's name is one of the reader's aliases (whole names only)."""
    if _short(reader["name"]) == _short(writer["name"]):
        return True
    aliases = _aliases(reader)
    return writer["name"] in aliases or _short(writer["name"]) in {_short(a) for a in aliases}


def _find_writer_field(reader_field: dict[str, Any], writer_fields: list[Any]) -> dict[str, Any] | None:
    """The writer field with the reader field's name, else one named by the reader field's aliases."""
    by_name = {f["name"]: f for f in writer_fields}
    for candidate in [reader_field["name"], *_aliases(reader_field)]:
        if candidate in by_name:
            return by_name[candidate]
    return None


def _aliases(schema: dict[str, Any]) -> list[str]:
    """The aliases as a list of names. New schemas must give a list (`validation`); a schema stored
    before that rule may hold one alias as a bare string, which is one name, never its substrings."""
    aliases = schema.get("aliases")
    if isinstance(aliases, str):
        return [aliases]
    if isinstance(aliases, list):
        return [a for a in aliases if isinstance(a, str)]
    return []


def _decimal(schema: dict[str, Any]) -> bool:
    return schema.get("logicalType") == "decimal" and schema.get("type") in ("bytes", "fixed")


def _decimal_shape(schema: dict[str, Any]) -> str:
    if not _decimal(schema):
        return str(schema.get("type"))
    return f"decimal({schema.get('precision')},{schema.get('scale', 0)})"


def _decimal_change(reader: dict[str, Any], writer: dict[str, Any], path: str) -> str | None:
    """Why reading `writer`'s decimals as `reader` would change stored amounts (None when it would not)."""
    if not (_decimal(reader) and _decimal(writer)):
        return f"{path}: {_decimal_shape(writer)} -> {_decimal_shape(reader)} would reinterpret stored amounts"
    old_scale, new_scale = writer.get("scale", 0), reader.get("scale", 0)
    if old_scale != new_scale:
        return f"{path}: decimal scale {old_scale} -> {new_scale} would rescale stored values"
    old_precision, new_precision = writer.get("precision"), reader.get("precision")
    if old_precision != new_precision:
        return (
            f"{path}: decimal precision {old_precision} -> {new_precision} would change which stored values are valid"
        )
    return None


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_describe(b) for b in schema) + "]"
    if isinstance(schema, dict):
        return str(schema.get("name", schema.get("type")))
    return str(schema)


def _strip_fastavro_keys(schema: Any) -> Any:
    """fastavro adds bookkeeping keys (`__fastavro_parsed`, ...) that are not part of the schema."""
    if isinstance(schema, dict):
        return {
            k: _strip_fastavro_keys(v)
            for k, v in schema.items()
            if not k.startswith("__fastavro") and k != "__named_schemas"
        }
    if isinstance(schema, list):
        return [_strip_fastavro_keys(item) for item in schema]
    return schema


def _without_docs(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_docs(v) for k, v in schema.items() if k != "doc"}
    if isinstance(schema, list):
        return [_without_docs(item) for item in schema]
    return schema
