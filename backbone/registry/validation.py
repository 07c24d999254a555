"""Strict validation of a schema by the Avro specification, before the registry accepts it as new.

fastavro (which `compatibility.parse` uses) is a lenient parser: it accepts namespaces like
`foo-bar-baz`, duplicate field names, duplicate types in a union, a record without `fields`, a
negative fixed size and union defaults that do not match the first branch. Java Avro, and so every
Confluent client on the JVM, refuses such schemas, so a registry that stored them would hand out ids
that other consumers cannot read. `schema_problems` walks the schema's JSON as written and returns
one message per violation, each naming the path in the schema (`fields[2].type: duplicate type
"string" in union`); an empty list means valid.

It only judges new registrations (see `RegistryState.register`); schemas stored before these rules
existed are still read, looked up and compared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
SORT_ORDERS = ("ascending", "descending", "ignore")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)


def schema_problems(schema_text: str, referenced: Sequence[str] = ()) -> list[str]:
    """Every way `schema_text` breaks the Avro specification (empty when it is valid).

    `referenced` are the texts of the schemas it references (dependencies first): their named types
    may be used, but their own problems are not reported (they were judged when registered).
    """
    validator = _Validator()
    for text in referenced:
        validator.check(json.loads(text), "", "")
    validator.problems.clear()
    validator.check(json.loads(schema_text), "", "")
    return validator.problems


def valid_name(name: object) -> bool:
    """A simple name (`Entry`, `amount`): `[A-Za-z_][A-Za-z0-9_]*`."""
    return isinstance(name, str) and NAME.fullmatch(name) is not None


def valid_fullname(name: object) -> bool:
    """A dotted name whose every component is a valid simple name (`dev.backbone.Entry`)."""
    return isinstance(name, str) and all(valid_name(part) for part in name.split("."))


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _quoted(value: object) -> str:
    return json.dumps(value)


class _Validator:
    """Walks a schema's JSON, recording named types as they are defined and problems as they are met."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {}
        self.problems: list[str] = []

    def report(self, path: str, message: str) -> None:
        self.problems.append(f"{path or 'schema'}: {message}")

    # -- types --------------------------------------------------------------------------------------

    def check(self, schema: Any, path: str, namespace: str) -> None:
        if isinstance(schema, str):
            self._check_reference(schema, path, namespace)
        elif isinstance(schema, list):
            self._check_union(schema, path, namespace)
        elif isinstance(schema, dict):
            self._check_complex(schema, path, namespace)
        else:
            self.report(path, f"{_quoted(schema)} is not a schema (expected a name, an object or a union)")

    def _check_reference(self, name: str, path: str, namespace: str) -> None:
        if name not in PRIMITIVES and self.lookup(name, namespace) is None:
            self.report(path, f"unknown type {_quoted(name)}")

    def _check_complex(self, schema: dict[str, Any], path: str, namespace: str) -> None:
        kind = schema.get("type")
        if isinstance(kind, list | dict):
            self.check(kind, _at(path, "type"), namespace)  # {"type": {...}} or {"type": [...]} wrapper
        elif kind in NAMED:
            self._check_named(schema, path, namespace)
        elif kind == "array":
            self._check_child(schema, "items", path, namespace)
        elif kind == "map":
            self._check_child(schema, "values", path, namespace)
        elif isinstance(kind, str):
            self._check_reference(kind, _at(path, "type"), namespace)
        else:
            self.report(path, 'missing "type"')

    def _check_child(self, schema: dict[str, Any], key: str, path: str, namespace: str) -> None:
        if key not in schema:
            self.report(path, f"{schema['type']} without {_quoted(key)}")
            return
        self.check(schema[key], _at(path, key), namespace)

    # -- named types ----------------------------------------------------------------------------------

    def _check_named(self, schema: dict[str, Any], path: str, namespace: str) -> None:
        fullname = self._define(schema, path, namespace)
        own_namespace = fullname.rpartition(".")[0] if fullname else namespace
        self._check_aliases(schema.get("aliases"), _at(path, "aliases"), fullnames=True)
        checker = {"enum": self._check_enum, "fixed": self._check_fixed}.get(schema["type"], self._check_record)
        checker(schema, path, own_namespace)

    def _define(self, schema: dict[str, Any], path: str, namespace: str) -> str | None:
        """Check the name and namespace of a named type and record it; its full name, if it has one."""
        name = schema.get("name")
        if not valid_fullname(name):
            self.report(_at(path, "name"), f"{_quoted(name)} is not a valid Avro name ({NAME.pattern})")
            return None
        declared = schema.get("namespace")
        if declared is not None and not (isinstance(declared, str) and _valid_namespace(declared)):
            self.report(
                _at(path, "namespace"),
                f"{_quoted(declared)} is not a valid namespace (dotted names, each {NAME.pattern})",
            )
            return None
        fullname = self.fullname(schema, namespace) or ""
        if fullname in PRIMITIVES:
            self.report(_at(path, "name"), f"{_quoted(name)} is a primitive type and cannot be redefined")
        self.names[fullname] = schema
        return fullname

    def _check_record(self, schema: dict[str, Any], path: str, namespace: str) -> None:
        fields = schema.get("fields")
        if not isinstance(fields, list):
            message = f'{schema["type"]} without "fields"' if fields is None else '"fields" must be a list'
            self.report(path, message)
            return
        seen: set[str] = set()
        for index, field in enumerate(fields):
            field_path = _at(path, f"fields[{index}]")
            if not isinstance(field, dict):
                self.report(field_path, "a field must be an object")
                continue
            name = field.get("name")
            if isinstance(name, str) and name in seen:
                self.report(_at(field_path, "name"), f"duplicate field name {_quoted(name)}")
            elif isinstance(name, str):
                seen.add(name)
            self._check_field(field, field_path, namespace)

    def _check_field(self, field: dict[str, Any], path: str, namespace: str) -> None:
        if not valid_name(field.get("name")):
            self.report(_at(path, "name"), f"{_quoted(field.get('name'))} is not a valid field name")
        if "type" not in field:
            self.report(path, 'field without "type"')
            return
        self.check(field["type"], _at(path, "type"), namespace)
        if "order" in field and field["order"] not in SORT_ORDERS:
            self.report(_at(path, "order"), f"{_quoted(field['order'])} is not one of {', '.join(SORT_ORDERS)}")
        self._check_aliases(field.get("aliases"), _at(path, "aliases"), fullnames=False)
        if "default" in field:
            self._check_default(field["type"], field["default"], _at(path, "default"), namespace)

    def _check_enum(self, schema: dict[str, Any], path: str, _namespace: str) -> None:
        symbols = schema.get("symbols")
        if not isinstance(symbols, list):
            self.report(path, 'enum without a "symbols" list')
            return
        seen: set[str] = set()
        for index, symbol in enumerate(symbols):
            symbol_path = _at(path, f"symbols[{index}]")
            if not valid_name(symbol):
                self.report(symbol_path, f"{_quoted(symbol)} is not a valid enum symbol ({NAME.pattern})")
            elif symbol in seen:
                self.report(symbol_path, f"duplicate enum symbol {_quoted(symbol)}")
            else:
                seen.add(symbol)
        if "default" in schema and not (isinstance(schema["default"], str) and schema["default"] in seen):
            self.report(_at(path, "default"), f"{_quoted(schema['default'])} is not one of the enum's symbols")

    def _check_fixed(self, schema: dict[str, Any], path: str, _namespace: str) -> None:
        size = schema.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            self.report(_at(path, "size"), f"{_quoted(size)} is not a valid fixed size (a non-negative integer)")

    def _check_aliases(self, aliases: Any, path: str, *, fullnames: bool) -> None:
        if aliases is None:
            return
        if not isinstance(aliases, list):
            self.report(path, f"aliases must be a list of names, not {_quoted(aliases)}")
            return
        valid = valid_fullname if fullnames else valid_name
        for index, alias in enumerate(aliases):
            if not valid(alias):
                self.report(f"{path}[{index}]", f"{_quoted(alias)} is not a valid alias")

    # -- unions -------------------------------------------------------------------------------------

    def _check_union(self, branches: list[Any], path: str, namespace: str) -> None:
        seen: set[str] = set()
        for index, branch in enumerate(branches):
            if isinstance(branch, list):
                self.report(f"{path}[{index}]", "a union may not immediately contain another union")
                continue
            self.check(branch, f"{path}[{index}]", namespace)
            key = self._union_key(branch, namespace)
            if key in seen:
                self.report(path, f"duplicate type {_quoted(key)} in union")
            elif key is not None:
                seen.add(key)

    def _union_key(self, branch: Any, namespace: str) -> str | None:
        """What distinguishes a branch within a union: its type, or its full name when it is named."""
        resolved = self.resolve(branch, namespace)
        if resolved is None:
            return None
        kind = resolved.get("type")
        if kind in NAMED:
            return self.fullname(resolved, namespace)
        return kind if isinstance(kind, str) else None

    # -- defaults -----------------------------------------------------------------------------------

    def _check_default(self, schema: Any, value: Any, path: str, namespace: str) -> None:
        reason = self.default_mismatch(schema, value, namespace)
        if reason:
            self.report(path, reason)

    def default_mismatch(self, schema: Any, value: Any, namespace: str) -> str | None:
        """Why `value` is not a valid JSON default for `schema` (None when it is)."""
        if isinstance(schema, list):
            if not schema:
                return "a default is not allowed for an empty union"
            first = self.default_mismatch(schema[0], value, namespace)
            return f"{first} (a union's default must match its first branch)" if first else None
        if isinstance(schema, dict) and isinstance(schema.get("type"), list):
            return self.default_mismatch(schema["type"], value, namespace)  # {"type": [...]} wrapper
        resolved = self.resolve(schema, namespace)
        if resolved is None:
            return None  # an unknown type is reported where it is used
        kind = resolved.get("type")
        if kind in PRIMITIVES:
            return None if _fits_primitive(kind, value) else f"{_quoted(value)} is not a valid {kind}"
        if kind == "enum":
            ok = value in (resolved.get("symbols") or [])
            return None if ok else f"{_quoted(value)} is not a symbol of enum {resolved.get('name')}"
        if kind == "fixed":
            ok = isinstance(value, str) and len(value) == resolved.get("size")
            return None if ok else f"{_quoted(value)} is not a {resolved.get('size')}-byte string"
        return self._complex_default_mismatch(resolved, value, namespace)

    def _complex_default_mismatch(self, schema: dict[str, Any], value: Any, namespace: str) -> str | None:
        kind = schema.get("type")
        if kind == "array":
            if not isinstance(value, list):
                return f"{_quoted(value)} is not an array"
            return next(filter(None, (self.default_mismatch(schema.get("items"), v, namespace) for v in value)), None)
        if kind == "map":
            if not isinstance(value, dict):
                return f"{_quoted(value)} is not a map"
            values = value.values()
            return next(filter(None, (self.default_mismatch(schema.get("values"), v, namespace) for v in values)), None)
        if kind in ("record", "error"):
            return self._record_default_mismatch(schema, value, namespace)
        return None

    def _record_default_mismatch(self, schema: dict[str, Any], value: Any, namespace: str) -> str | None:
        if not isinstance(value, dict):
            return f"{_quoted(value)} is not a record"
        inner = (self.fullname(schema, namespace) or "").rpartition(".")[0]
        for field in schema.get("fields") or []:
            if not isinstance(field, dict) or "type" not in field:
                continue
            name = field.get("name")
            if isinstance(name, str) and name in value:
                reason = self.default_mismatch(field["type"], value[name], inner)
            else:
                reason = None if "default" in field else f"field {_quoted(name)} is missing"
            if reason:
                return f"{reason} (record {schema.get('name')} field {name})"
        return None

    # -- names --------------------------------------------------------------------------------------

    def resolve(self, schema: Any, namespace: str) -> dict[str, Any] | None:
        """A non-union schema as an object with a `type`, following named references; None if unknown."""
        if isinstance(schema, str):
            return {"type": schema} if schema in PRIMITIVES else self.lookup(schema, namespace)
        if isinstance(schema, dict):
            kind = schema.get("type")
            if isinstance(kind, dict):
                return self.resolve(kind, namespace)
            if isinstance(kind, str) and kind not in PRIMITIVES | NAMED | {"array", "map"}:
                return self.lookup(kind, namespace)
            return schema if isinstance(kind, str) else None
        return None

    def lookup(self, name: str, namespace: str) -> dict[str, Any] | None:
        """A named type by full name, or by a name relative to the enclosing namespace."""
        if "." not in name and namespace and f"{namespace}.{name}" in self.names:
            return self.names[f"{namespace}.{name}"]
        return self.names.get(name)

    def fullname(self, schema: dict[str, Any], namespace: str) -> str | None:
        name = schema.get("name")
        if not isinstance(name, str):
            return None
        if "." in name:
            return name
        space = schema.get("namespace", namespace) or ""
        return f"{space}.{name}" if space else name


def _valid_namespace(namespace: str) -> bool:
    return namespace == "" or valid_fullname(namespace)


def _fits_primitive(kind: str, value: Any) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # JSON true/false are not numbers
    if kind in ("int", "long"):
        low, high = INT_RANGE if kind == "int" else LONG_RANGE
        return isinstance(value, int) and low <= value <= high
    if kind in ("float", "double"):
        return isinstance(value, int | float)
    return isinstance(value, str)  # bytes and string defaults are JSON strings
