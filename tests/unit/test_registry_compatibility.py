"""Specification of the registry's Avro compatibility rules (the Avro schema resolution rules)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backbone.registry.compatibility import (
    CompatibilityLevel,
    InvalidSchemaError,
    check_compatibility,
    incompatibilities,
    normalize,
    parse,
)


def record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(name: str, *symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": name, "symbols": list(symbols), **extra}


def fixed(name: str, size: int) -> dict[str, Any]:
    return {"type": "fixed", "name": name, "size": size}


def can_read(reader: Any, writer: Any) -> bool:
    return not incompatibilities(parse(json.dumps(reader)), parse(json.dumps(writer)))


V1 = record("Entry", f("id", "string"))
V1_WITH_MINUTES = record("Entry", f("id", "string"), f("minutes", "int", default=0))
POINT = record("Point", f("x", "int"))

# (reader, writer, reader can read writer's data)
RESOLUTION_RULES = [
    pytest.param("int", "int", True, id="same-primitive"),
    pytest.param("long", "int", True, id="promote-int-to-long"),
    pytest.param("float", "int", True, id="promote-int-to-float"),
    pytest.param("double", "int", True, id="promote-int-to-double"),
    pytest.param("float", "long", True, id="promote-long-to-float"),
    pytest.param("double", "long", True, id="promote-long-to-double"),
    pytest.param("double", "float", True, id="promote-float-to-double"),
    pytest.param("bytes", "string", True, id="promote-string-to-bytes"),
    pytest.param("string", "bytes", True, id="promote-bytes-to-string"),
    pytest.param("int", "long", False, id="no-demotion-long-to-int"),
    pytest.param("long", "double", False, id="no-demotion-double-to-long"),
    pytest.param("float", "double", False, id="no-demotion-double-to-float"),
    pytest.param("string", "int", False, id="unrelated-primitives"),
    pytest.param("null", "null", True, id="null-reads-null"),
    pytest.param("boolean", "int", False, id="boolean-is-not-int"),
    # records
    pytest.param(V1_WITH_MINUTES, V1, True, id="record-field-added-with-default"),
    pytest.param(
        record("Entry", f("id", "string"), f("minutes", "int")),
        V1,
        False,
        id="record-field-added-without-default",
    ),
    pytest.param(V1, V1_WITH_MINUTES, True, id="record-field-removed"),
    pytest.param(record("Entry", f("key", "string", aliases=["id"])), V1, True, id="record-field-renamed-via-alias"),
    pytest.param(record("Entry", f("key", "string")), V1, False, id="record-field-renamed-without-alias"),
    pytest.param(
        record("Entry", f("id", "long")),
        record("Entry", f("id", "int")),
        True,
        id="record-field-type-promoted",
    ),
    pytest.param(
        record("Entry", f("id", "int")),
        record("Entry", f("id", "long")),
        False,
        id="record-field-type-narrowed",
    ),
    pytest.param(record("Other", f("id", "string")), V1, False, id="record-name-mismatch"),
    pytest.param(record("Other", f("id", "string"), aliases=["Entry"]), V1, True, id="record-name-via-alias"),
    pytest.param(
        record("Entry", f("id", "string"), namespace="new.ns"),
        record("Entry", f("id", "string"), namespace="old.ns"),
        True,
        id="record-name-matches-unqualified",
    ),
    pytest.param(
        record("Outer", f("p", record("Point", f("x", "int"), f("y", "int", default=0)))),
        record("Outer", f("p", POINT)),
        True,
        id="nested-record-field-added-with-default",
    ),
    pytest.param(
        record("Outer", f("p", record("Point", f("x", "int"), f("y", "int")))),
        record("Outer", f("p", POINT)),
        False,
        id="nested-record-field-added-without-default",
    ),
    pytest.param(
        record("Outer", f("a", POINT), f("b", "Point")),
        record("Outer", f("a", POINT), f("b", "Point")),
        True,
        id="named-type-reference",
    ),
    pytest.param(
        record("Outer", f("a", record("Point", f("x", "long"))), f("b", "Point")),
        record("Outer", f("a", POINT), f("b", "Point")),
        True,
        id="named-type-reference-promoted",
    ),
    pytest.param(
        record("Node", f("next", ["null", "Node"])),
        record("Node", f("next", ["null", "Node"])),
        True,
        id="recursive-record",
    ),
    # enums
    pytest.param(
        enum("Status", "OPEN", "DONE", "VOID"),
        enum("Status", "OPEN", "DONE"),
        True,
        id="enum-symbol-added-in-reader",
    ),
    pytest.param(
        enum("Status", "OPEN"),
        enum("Status", "OPEN", "DONE"),
        False,
        id="enum-writer-symbol-missing-in-reader",
    ),
    pytest.param(
        enum("Status", "OPEN", "UNKNOWN", default="UNKNOWN"),
        enum("Status", "OPEN", "DONE"),
        True,
        id="enum-writer-symbol-missing-but-reader-default",
    ),
    pytest.param(enum("State", "OPEN"), enum("Status", "OPEN"), False, id="enum-name-mismatch"),
    # arrays and maps
    pytest.param(
        {"type": "array", "items": "long"}, {"type": "array", "items": "int"}, True, id="array-items-promoted"
    ),
    pytest.param(
        {"type": "array", "items": "int"},
        {"type": "array", "items": "string"},
        False,
        id="array-items-incompatible",
    ),
    pytest.param(
        {"type": "map", "values": "double"},
        {"type": "map", "values": "float"},
        True,
        id="map-values-promoted",
    ),
    pytest.param(
        {"type": "map", "values": "int"},
        {"type": "map", "values": "long"},
        False,
        id="map-values-incompatible",
    ),
    pytest.param({"type": "map", "values": "int"}, {"type": "array", "items": "int"}, False, id="map-is-not-array"),
    # fixed
    pytest.param(fixed("Hash", 16), fixed("Hash", 16), True, id="fixed-same-name-and-size"),
    pytest.param(fixed("Hash", 32), fixed("Hash", 16), False, id="fixed-size-mismatch"),
    pytest.param(fixed("Digest", 16), fixed("Hash", 16), False, id="fixed-name-mismatch"),
    # unions
    pytest.param(["null", "string"], "string", True, id="reader-union-has-writer-branch"),
    pytest.param(["null", "long"], "int", True, id="reader-union-branch-by-promotion"),
    pytest.param(["null", "string"], "int", False, id="reader-union-lacks-writer-branch"),
    pytest.param("string", ["null", "string"], False, id="writer-union-branch-unreadable"),
    pytest.param(["null", "string", "int"], ["null", "string"], True, id="writer-union-subset-of-reader-union"),
    pytest.param(["null", "string"], ["null", "string", "int"], False, id="writer-union-branch-removed"),
    pytest.param("long", ["int", "long"], True, id="writer-union-all-branches-readable"),
    # logical types are judged by their underlying type
    pytest.param(
        {"type": "long", "logicalType": "timestamp-millis"},
        {"type": "int", "logicalType": "date"},
        True,
        id="logical-types-use-underlying-promotion",
    ),
    pytest.param({"type": "int", "logicalType": "date"}, "int", True, id="logical-type-reads-underlying"),
    pytest.param(
        {"type": "int", "logicalType": "date"},
        {"type": "string", "logicalType": "uuid"},
        False,
        id="logical-types-incompatible-underlying",
    ),
    pytest.param(
        {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        "string",
        True,
        id="logical-decimal-on-bytes-reads-string",
    ),
]


@pytest.mark.parametrize(("reader", "writer", "expected"), RESOLUTION_RULES)
def test_resolution_rules(reader: Any, writer: Any, expected: bool) -> None:
    assert can_read(reader, writer) is expected


def test_incompatibility_messages_name_the_field() -> None:
    reader = parse(json.dumps(record("Entry", f("id", "string"), f("minutes", "int"))))
    messages = incompatibilities(reader, parse(json.dumps(V1)))
    assert len(messages) == 1
    assert "minutes" in messages[0]


# Three versions of a subject: v1; v2 gives `minutes` a default and adds `note` with one; v3 drops `minutes`.
T1 = record("Entry", f("id", "string"), f("minutes", "int"))
T2 = record("Entry", f("id", "string"), f("minutes", "int", default=0), f("note", "string", default=""))
T3 = record("Entry", f("id", "string"), f("note", "string", default=""))
ADDED_NO_DEFAULT = record("Entry", f("id", "string"), f("minutes", "int"), f("rate", "double"))
REMOVED_NO_DEFAULT = record("Entry", f("id", "string"))

L = CompatibilityLevel
# (level, existing versions oldest first, new schema, allowed)
LEVEL_RULES = [
    pytest.param(L.BACKWARD, [T1], T2, True, id="backward-new-field-with-default"),
    pytest.param(L.BACKWARD, [T1], ADDED_NO_DEFAULT, False, id="backward-new-field-without-default"),
    pytest.param(L.BACKWARD, [T1], REMOVED_NO_DEFAULT, True, id="backward-field-removed"),
    pytest.param(L.BACKWARD, [T1, T2], T3, True, id="backward-checks-only-latest"),
    pytest.param(L.BACKWARD_TRANSITIVE, [T1, T2], T3, True, id="backward-transitive-all-readable"),
    pytest.param(
        L.BACKWARD_TRANSITIVE,
        [T1, T2],
        record("Entry", f("id", "string"), f("note", "string")),
        False,
        id="backward-transitive-fails-against-first-version",
    ),
    pytest.param(
        L.BACKWARD,
        [T1, T2],
        record("Entry", f("id", "string"), f("note", "string")),
        True,
        id="backward-ignores-older-than-latest",
    ),
    pytest.param(L.FORWARD, [T1], REMOVED_NO_DEFAULT, False, id="forward-old-needs-removed-field"),
    pytest.param(L.FORWARD, [T1], ADDED_NO_DEFAULT, True, id="forward-new-field-without-default"),
    pytest.param(L.FORWARD, [T2], T3, True, id="forward-removed-field-had-default"),
    pytest.param(L.FORWARD, [T1, T2], T3, True, id="forward-checks-only-latest"),
    pytest.param(L.FORWARD_TRANSITIVE, [T1, T2], T3, False, id="forward-transitive-first-version-needs-field"),
    pytest.param(L.FULL, [T1], T2, True, id="full-field-added-with-default"),
    pytest.param(L.FULL, [T1], ADDED_NO_DEFAULT, False, id="full-field-added-without-default"),
    pytest.param(L.FULL, [T1], REMOVED_NO_DEFAULT, False, id="full-field-removed-without-default"),
    pytest.param(L.FULL, [T1, T2], T3, True, id="full-checks-only-latest"),
    pytest.param(L.FULL_TRANSITIVE, [T1, T2], T3, False, id="full-transitive-fails-against-first"),
    pytest.param(L.FULL_TRANSITIVE, [T2], T3, True, id="full-transitive-single-version"),
    pytest.param(L.NONE, [T1], "string", True, id="none-allows-anything"),
    pytest.param(L.BACKWARD, [], "string", True, id="first-version-always-allowed"),
]


@pytest.mark.parametrize(("level", "existing", "new", "allowed"), LEVEL_RULES)
def test_compatibility_levels(level: CompatibilityLevel, existing: list[Any], new: Any, allowed: bool) -> None:
    parsed = [parse(json.dumps(schema)) for schema in existing]
    messages = check_compatibility(level, parse(json.dumps(new)), parsed)
    assert (not messages) is allowed, messages


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{not json", id="invalid-json"),
        pytest.param('{"type": "record", "name": "A", "fields": [{"name": "x"}]}', id="field-without-type"),
        pytest.param('{"type": "nope"}', id="unknown-type"),
        pytest.param('{"type": "enum", "name": "E", "symbols": ["A", "A"]}', id="duplicate-enum-symbols"),
    ],
)
def test_invalid_schemas_are_rejected(text: str) -> None:
    with pytest.raises(InvalidSchemaError):
        parse(text)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param(
            record("A", f("x", "int"), namespace="n"),
            record("n.A", f("x", "int")),
            True,
            id="normalize-qualifies-names",
        ),
        pytest.param(
            record("A", f("x", "int"), doc="about A"),
            record("A", f("x", "int")),
            True,
            id="normalize-drops-docs",
        ),
        pytest.param(
            {"fields": [f("x", "int")], "name": "A", "type": "record"},
            record("A", f("x", "int")),
            True,
            id="normalize-sorts-keys",
        ),
        pytest.param(
            record("A", f("x", "int"), f("y", "int")),
            record("A", f("y", "int"), f("x", "int")),
            False,
            id="normalize-keeps-field-order",
        ),
        pytest.param(
            record("A", f("x", "int", default=1)),
            record("A", f("x", "int", default=2)),
            False,
            id="normalize-keeps-defaults",
        ),
    ],
)
def test_normalize(a: Any, b: Any, same: bool) -> None:
    assert (normalize(json.dumps(a)) == normalize(json.dumps(b))) is same


@pytest.mark.parametrize(
    ("reader", "writer", "expected"),
    [
        pytest.param(
            record("Other", f("id", "string"), aliases="Entry"),
            V1,
            True,
            id="type-alias-string-stored-earlier-is-one-whole-name",
        ),
        pytest.param(
            record("Other", f("id", "string"), aliases="EntryPoint"),
            V1,
            False,
            id="type-alias-string-never-matches-a-substring",
        ),
        pytest.param(
            record("Other", f("id", "string"), aliases=["Entries"]),
            V1,
            False,
            id="type-alias-must-equal-the-whole-name",
        ),
    ],
)
def test_aliases_match_whole_names_only(reader: Any, writer: Any, expected: bool) -> None:
    assert can_read(reader, writer) is expected


def money(precision: int, scale: int | None, base: str = "bytes") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": base, "logicalType": "decimal", "precision": precision}
    if base == "fixed":
        schema.update(name="Amount", size=16)
    return schema if scale is None else {**schema, "scale": scale}


def invoice(amount: Any) -> dict[str, Any]:
    return record("Invoice", f("id", "string"), f("amount", amount))


# (old type of `amount`, new type, strict verdict, message fragment when refused)
DECIMAL_RULES = [
    pytest.param(money(18, 4), money(18, 4), True, None, id="decimal-unchanged"),
    pytest.param(money(18, 4), money(18, 2), False, "decimal scale 4 -> 2 would rescale", id="decimal-scale-narrowed"),
    pytest.param(money(18, 2), money(18, 4), False, "decimal scale 2 -> 4 would rescale", id="decimal-scale-widened"),
    pytest.param(money(18, 4), money(10, 4), False, "decimal precision 18 -> 10", id="decimal-precision-narrowed"),
    pytest.param(money(10, 4), money(18, 4), False, "decimal precision 10 -> 18", id="decimal-precision-widened"),
    pytest.param(money(9, None), money(9, 0), True, None, id="decimal-missing-scale-is-zero"),
    pytest.param(
        money(18, 4, "fixed"), money(18, 2, "fixed"), False, "decimal scale 4 -> 2", id="fixed-decimal-scale-changed"
    ),
    pytest.param(money(18, 4), "bytes", False, "decimal(18,4) -> bytes", id="decimal-dropped-to-bytes"),
    pytest.param("bytes", money(18, 4), False, "bytes -> decimal(18,4)", id="bytes-became-decimal"),
    pytest.param(
        ["null", money(18, 4)],
        ["null", money(18, 2)],
        False,
        "decimal scale 4 -> 2",
        id="decimal-in-union-scale-changed",
    ),
    pytest.param(["null", money(18, 4)], ["null", money(18, 4)], True, None, id="decimal-in-union-unchanged"),
]


@pytest.mark.parametrize(("old", "new", "allowed", "fragment"), DECIMAL_RULES)
def test_decimal_strict_freezes_precision_and_scale(old: Any, new: Any, allowed: bool, fragment: str | None) -> None:
    for level in (L.BACKWARD, L.FORWARD, L.FULL):
        messages = check_compatibility(
            level, parse(json.dumps(invoice(new))), [parse(json.dumps(invoice(old)))], decimal_strict=True
        )
        assert (not messages) is allowed, (level, messages)
    backward = check_compatibility(
        L.BACKWARD, parse(json.dumps(invoice(new))), [parse(json.dumps(invoice(old)))], decimal_strict=True
    )
    if fragment:
        assert any(fragment in m and "amount" in m for m in backward), backward


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(money(18, 4), money(18, 2), id="scale-change-allowed-like-confluent"),
        pytest.param(money(18, 4), money(10, 4), id="precision-change-allowed-like-confluent"),
    ],
)
def test_without_decimal_strict_decimals_resolve_like_their_bytes(old: Any, new: Any) -> None:
    messages = check_compatibility(L.FULL, parse(json.dumps(invoice(new))), [parse(json.dumps(invoice(old)))])
    assert messages == []
