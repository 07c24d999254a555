"""Specification of the strict Avro validation every newly registered schema passes (422/42201 otherwise).

Each refused case names the rule it breaks and the path the message must point at; each accepted
case is a near miss of one rule, so a validator that refused too much fails here too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.kafka.wire import SCHEMA_DIR
from backbone.registry.validation import schema_problems


def record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(name: str, *symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": name, "symbols": list(symbols), **extra}


def problems(schema: Any, *referenced: Any) -> list[str]:
    return schema_problems(json.dumps(schema), [json.dumps(r) for r in referenced])


POINT = record("Point", f("x", "int"))
COLOUR = enum("Colour", "RED", "GREEN")
DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4}

# (schema, the message's expected start: "<path>: <what is wrong>")
REFUSED = [
    # names and namespaces
    pytest.param(
        record("A", namespace="foo-bar-baz"),
        'namespace: "foo-bar-baz" is not a valid namespace',
        id="namespace-with-hyphens",
    ),
    pytest.param(
        record("A", namespace="a..b"), 'namespace: "a..b" is not a valid namespace', id="namespace-empty-part"
    ),
    pytest.param(record("A."), 'name: "A." is not a valid Avro name', id="name-ending-in-dot"),
    pytest.param(record(".A"), 'name: ".A" is not a valid Avro name', id="name-starting-with-dot"),
    pytest.param(record("1A"), 'name: "1A" is not a valid Avro name', id="name-starting-with-digit"),
    pytest.param(record("a-b.A"), 'name: "a-b.A" is not a valid Avro name', id="fullname-with-hyphen"),
    pytest.param({"type": "record", "fields": []}, "name: null is not a valid Avro name", id="named-type-without-name"),
    pytest.param(record("A", f("x", POINT | {"name": "P-2"})), 'fields[0].type.name: "P-2"', id="nested-name-invalid"),
    pytest.param(
        record("A", f("x-y", "int")), 'fields[0].name: "x-y" is not a valid field name', id="field-name-invalid"
    ),
    pytest.param(
        record("A", f("a.b", "int")), 'fields[0].name: "a.b" is not a valid field name', id="field-name-dotted"
    ),
    # records
    pytest.param({"type": "record", "name": "A"}, 'schema: record without "fields"', id="record-without-fields"),
    pytest.param({"type": "error", "name": "E"}, 'schema: error without "fields"', id="error-without-fields"),
    pytest.param(
        record("A", f("x", {"type": "record", "name": "B"})),
        'fields[0].type: record without "fields"',
        id="nested-record-without-fields",
    ),
    pytest.param(
        record("A", f("x", "int"), f("x", "long")), 'fields[1].name: duplicate field name "x"', id="duplicate-field"
    ),
    pytest.param(record("A", f("x", "int", order="up")), 'fields[0].order: "up" is not one of', id="order-unknown"),
    pytest.param(record("A", f("x", "int", order="ASCENDING")), "fields[0].order:", id="order-is-case-sensitive"),
    # enums
    pytest.param(enum("E", "A", "B", "A"), 'symbols[2]: duplicate enum symbol "A"', id="duplicate-enum-symbol"),
    pytest.param(enum("E", "A", "b-c"), 'symbols[1]: "b-c" is not a valid enum symbol', id="enum-symbol-invalid"),
    pytest.param(enum("E", "A", default="Z"), 'default: "Z" is not one of the enum', id="enum-default-not-a-symbol"),
    # fixed
    pytest.param(
        {"type": "fixed", "name": "F", "size": -1}, "size: -1 is not a valid fixed size", id="fixed-negative-size"
    ),
    pytest.param(
        {"type": "fixed", "name": "F", "size": 1.5}, "size: 1.5 is not a valid fixed size", id="fixed-fractional-size"
    ),
    pytest.param(
        {"type": "fixed", "name": "F", "size": "16"}, 'size: "16" is not a valid fixed size', id="fixed-string-size"
    ),
    pytest.param(
        {"type": "fixed", "name": "F", "size": True}, "size: true is not a valid fixed size", id="fixed-boolean-size"
    ),
    # unions
    pytest.param(
        record("A", f("a", "int"), f("b", "int"), f("c", ["null", "string", "string"])),
        'fields[2].type: duplicate type "string" in union',
        id="union-duplicate-primitive",
    ),
    pytest.param(
        record("A", f("x", ["int", {"type": "int", "logicalType": "date"}])),
        'fields[0].type: duplicate type "int" in union',
        id="union-duplicate-via-logical-type",
    ),
    pytest.param(
        record("A", f("x", [{"type": "array", "items": "int"}, {"type": "array", "items": "string"}])),
        'fields[0].type: duplicate type "array" in union',
        id="union-two-arrays",
    ),
    pytest.param(
        record("A", f("x", [{"type": "map", "values": "int"}, {"type": "map", "values": "long"}])),
        'fields[0].type: duplicate type "map" in union',
        id="union-two-maps",
    ),
    pytest.param(
        record("A", f("x", [POINT, "Point"])),
        'fields[0].type: duplicate type "Point" in union',
        id="union-same-named-type-twice",
    ),
    pytest.param(
        record("A", f("x", ["null", ["int", "string"]])),
        "fields[0].type[1]: a union may not immediately contain another union",
        id="union-inside-union",
    ),
    pytest.param(
        ["null", ["int"]], "[1]: a union may not immediately contain another union", id="top-level-union-in-union"
    ),
    # aliases
    pytest.param(
        record("A", aliases="B"), 'aliases: aliases must be a list of names, not "B"', id="aliases-string-on-type"
    ),
    pytest.param(
        record("A", f("x", "int", aliases="y")),
        'fields[0].aliases: aliases must be a list of names, not "y"',
        id="aliases-string-on-field",
    ),
    pytest.param(record("A", aliases=["B-1"]), 'aliases[0]: "B-1" is not a valid alias', id="alias-invalid-name"),
    pytest.param(
        record("A", f("x", "int", aliases=["a.b"])),
        'fields[0].aliases[0]: "a.b" is not a valid alias',
        id="field-alias-dotted",
    ),
    # defaults
    pytest.param(
        record("A", f("x", "int", default="1")),
        'fields[0].default: "1" is not a valid int',
        id="default-string-for-int",
    ),
    pytest.param(
        record("A", f("x", "int", default=2**31)),
        "fields[0].default: 2147483648 is not a valid int",
        id="default-int-out-of-range",
    ),
    pytest.param(
        record("A", f("x", "long", default=1.5)),
        "fields[0].default: 1.5 is not a valid long",
        id="default-fraction-for-long",
    ),
    pytest.param(
        record("A", f("x", "double", default=True)),
        "fields[0].default: true is not a valid double",
        id="default-boolean-for-double",
    ),
    pytest.param(
        record("A", f("x", "boolean", default=0)),
        "fields[0].default: 0 is not a valid boolean",
        id="default-number-for-boolean",
    ),
    pytest.param(
        record("A", f("x", "string", default=None)),
        "fields[0].default: null is not a valid string",
        id="default-null-for-string",
    ),
    pytest.param(
        record("A", f("x", "null", default=0)), "fields[0].default: 0 is not a valid null", id="default-number-for-null"
    ),
    pytest.param(
        record("A", f("x", ["null", "string"], default="a")),
        'fields[0].default: "a" is not a valid null (a union\'s default must match its first branch)',
        id="union-default-matches-second-branch-only",
    ),
    pytest.param(
        record("A", f("x", ["string", "null"], default=None)),
        "fields[0].default: null is not a valid string (a union's default must match its first branch)",
        id="union-default-null-but-null-second",
    ),
    pytest.param(
        record("A", f("c", COLOUR, default="BLUE")),
        'fields[0].default: "BLUE" is not a symbol of enum',
        id="default-unknown-enum-symbol",
    ),
    pytest.param(
        record("A", f("h", {"type": "fixed", "name": "H", "size": 2}, default="abc")),
        'fields[0].default: "abc" is not a 2-byte string',
        id="default-fixed-wrong-length",
    ),
    pytest.param(
        record("A", f("xs", {"type": "array", "items": "int"}, default=[1, "2"])),
        'fields[0].default: "2" is not a valid int',
        id="default-array-item-wrong",
    ),
    pytest.param(
        record("A", f("m", {"type": "map", "values": "long"}, default=[])),
        "fields[0].default: [] is not a map",
        id="default-map-not-object",
    ),
    pytest.param(
        record("A", f("p", POINT, default={})),
        'fields[0].default: field "x" is missing (record Point field x)',
        id="default-record-missing-field",
    ),
    pytest.param(
        record("A", f("p", POINT, default={"x": "one"})),
        'fields[0].default: "one" is not a valid int (record Point field x)',
        id="default-record-field-wrong-type",
    ),
    pytest.param(
        record("A", f("amount", DECIMAL, default=1.5)),
        "fields[0].default: 1.5 is not a valid bytes",
        id="default-decimal-not-bytes-string",
    ),
    pytest.param(
        record("A", f("p", POINT), f("q", "Point", default={"x": None})),
        "fields[1].default: null is not a valid int (record Point field x)",
        id="default-for-named-reference",
    ),
]


@pytest.mark.parametrize(("schema", "expected"), REFUSED)
def test_invalid_schemas_are_refused_with_the_path(schema: Any, expected: str) -> None:
    found = problems(schema)
    assert any(p.startswith(expected) for p in found), found


ACCEPTED = [
    pytest.param(record("A", namespace="dev.backbone.events"), id="dotted-namespace"),
    pytest.param(record("A", namespace=""), id="empty-namespace-is-the-null-namespace"),
    pytest.param(record("dev.backbone.A"), id="fullname-as-name"),
    pytest.param(record("_A1", f("_x9", "int")), id="underscores-and-digits"),
    pytest.param(record("A", f("x", ["null", "string"], default=None)), id="union-default-matches-first-branch"),
    pytest.param(record("A", f("x", ["string", "null"], default="")), id="union-default-string-first"),
    pytest.param(record("A", f("x", "int", order="descending"), f("y", "int", order="ignore")), id="valid-orders"),
    pytest.param(record("A", f("x", "int", aliases=["y", "z"]), aliases=["old.B", "C"]), id="alias-lists"),
    pytest.param(
        record("A", f("p", POINT), f("q", ["null", "Point"], default=None)), id="named-type-referenced-in-union"
    ),
    pytest.param(
        record(
            "A",
            f("a", record("P", f("x", "int"), namespace="one")),
            f("b", record("P", f("x", "int"), namespace="two")),
        ),
        id="same-short-name-in-two-namespaces",
    ),
    pytest.param(
        record("A", f("x", [record("P", f("x", "int"), namespace="one"), record("P", f("y", "int"), namespace="two")])),
        id="union-named-types-distinguished-by-full-name",
    ),
    pytest.param(
        record("A", f("x", ["null", "int", "string", {"type": "array", "items": "int"}])), id="union-of-distinct-types"
    ),
    pytest.param({"type": "fixed", "name": "F", "size": 0}, id="fixed-size-zero"),
    pytest.param(enum("E", "A", "B", default="B"), id="enum-default-is-a-symbol"),
    pytest.param(record("A", f("c", COLOUR, default="RED")), id="field-default-enum-symbol"),
    pytest.param(record("A", f("amount", DECIMAL, default="\u0000")), id="decimal-default-is-a-bytes-string"),
    pytest.param(record("A", f("p", POINT, default={"x": 1})), id="record-default"),
    pytest.param(record("A", f("d", "double", default=1)), id="integer-default-for-double"),
    pytest.param(record("A", f("m", {"type": "map", "values": "long"}, default={"a": 1})), id="map-default"),
    pytest.param(record("Node", f("next", ["null", "Node"], default=None)), id="recursive-record"),
    pytest.param(["null", "string"], id="top-level-union"),
    pytest.param("string", id="primitive"),
]


@pytest.mark.parametrize("schema", ACCEPTED)
def test_valid_schemas_pass(schema: Any) -> None:
    assert problems(schema) == []


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMA_DIR.glob("*.avsc")))
def test_backbone_own_schemas_pass(name: str) -> None:
    assert problems(json.loads((SCHEMA_DIR / name).read_text())) == []


def test_referenced_named_types_resolve_without_judging_the_referenced_schema() -> None:
    legacy = record("Money", f("amount", "long"), f("amount", "long"), namespace="shared")  # duplicate: not ours
    assert problems(record("A", f("m", "shared.Money")), legacy) == []
    assert problems(record("A", f("m", ["shared.Money", "shared.Money"])), legacy) == [
        'fields[0].type: duplicate type "shared.Money" in union'
    ]


def test_every_problem_is_reported() -> None:
    found = problems(record("A.", f("x", "int"), f("x", ["null", "null"]), namespace="a-b"))
    assert len(found) == 3, found


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(
        ["int", "string", "null", "record", "enum", "fixed", "array", "map", "error", "A", "a.b", "x-y", ""]
    ),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "name",
                    "namespace",
                    "fields",
                    "symbols",
                    "size",
                    "items",
                    "values",
                    "default",
                    "aliases",
                    "order",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_any_json_gets_an_answer_never_a_crash(schema: Any) -> None:
    """Whatever a client sends, the validator answers with problems (never an exception, i.e. a 500)."""
    assert isinstance(problems(schema), list)
