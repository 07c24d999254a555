"""Specification of the registry's decisions on new versus stored schemas and of its decimal policy.

`RegistryState` is pure: records in, decisions (and records) out, so these run without Kafka.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from backbone.kafka.wire import SCHEMA_DIR
from backbone.registry.compatibility import CompatibilityLevel, parse
from backbone.registry.store import (
    Config,
    RegistryError,
    RegistryState,
    SchemaVersion,
    candidate_schema,
    owned_by_backbone,
)


def record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def amount(scale: int) -> dict[str, Any]:
    return {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": scale}


def stored(state: RegistryState, subject: str, schema: dict[str, Any], version: int = 1, schema_id: int = 1) -> None:
    """A version as replayed from the log, whatever rules it was registered under."""
    value = SchemaVersion(subject, version, schema_id, json.dumps(schema, separators=(",", ":"))).to_value()
    state.apply({"kind": "SCHEMA", "subject": subject, "version": version}, value)


def register(state: RegistryState, subject: str, schema: dict[str, Any]) -> tuple[SchemaVersion, list[Any]]:
    version, records = state.register(subject, candidate_schema(state, json.dumps(schema)))
    for key, value in records:
        state.apply(key, value)
    return version, records


def refused(state: RegistryState, subject: str, schema: dict[str, Any]) -> RegistryError:
    with pytest.raises(RegistryError) as raised:
        register(state, subject, schema)
    return raised.value


# Valid for fastavro (so it could have been stored before strict validation), invalid by the spec.
LEGACY = record("Entry", f("id", "string"), f("note", ["null", "string", "string"], default=None), namespace="a-b")
LEGACY_EVOLVED = record("Entry", f("id", "string"), namespace="a_b")


class TestStoredSchemasKeepWorking:
    def test_registering_the_stored_schema_again_returns_its_id(self) -> None:
        state = RegistryState()
        stored(state, "legacy", LEGACY, schema_id=7)
        version, records = register(state, "legacy", LEGACY)
        assert (version.schema_id, records) == (7, [])

    def test_lookup_finds_it(self) -> None:
        state = RegistryState()
        stored(state, "legacy", LEGACY)
        assert state.find("legacy", candidate_schema(state, json.dumps(LEGACY))) is not None

    def test_new_versions_are_checked_against_it(self) -> None:
        state = RegistryState()
        stored(state, "legacy", LEGACY)
        assert register(state, "legacy", LEGACY_EVOLVED)[0].version == 2

    def test_compatibility_check_against_it_explains(self) -> None:
        state = RegistryState()
        stored(state, "legacy", LEGACY)
        breaking = record("Entry", f("id", "string"), f("rate", "double"), namespace="a_b")
        candidate = candidate_schema(state, json.dumps(breaking))
        assert any("rate" in m for m in state.compatibility_messages("legacy", candidate, state.versions("legacy")))

    def test_the_same_text_under_a_new_subject_is_a_new_registration(self) -> None:
        state = RegistryState()
        stored(state, "legacy", LEGACY)
        error = refused(state, "fresh", LEGACY)
        assert (error.status, error.error_code) == (422, 42201)
        assert 'namespace: "a-b" is not a valid namespace' in str(error)
        assert 'fields[1].type: duplicate type "string" in union' in str(error)


def test_a_soft_deleted_stored_schema_may_be_registered_again() -> None:
    state = RegistryState()
    stored(state, "legacy", LEGACY)
    (key, value), *_ = state.delete_version("legacy", 1, permanent=False)[1]
    state.apply(key, value)
    assert register(state, "legacy", LEGACY)[0].version == 2


OURS = "dev.backbone.events"
THEIRS = "com.example"


def invoice(namespace: str, scale: int) -> dict[str, Any]:
    return record("Invoice", f("id", "string"), f("amount", amount(scale)), namespace=namespace)


@pytest.mark.parametrize(
    ("namespace", "subject_config", "global_config", "allowed"),
    [
        pytest.param(OURS, None, None, False, id="backbone-namespace-strict-by-default"),
        pytest.param(THEIRS, None, None, True, id="foreign-namespace-confluent-rules-by-default"),
        pytest.param(OURS, False, None, True, id="subject-config-turns-it-off"),
        pytest.param(THEIRS, True, None, False, id="subject-config-turns-it-on"),
        pytest.param(THEIRS, None, True, False, id="global-config-turns-it-on"),
        pytest.param(OURS, None, False, True, id="global-config-turns-it-off"),
        pytest.param(OURS, True, False, False, id="subject-config-wins-over-global"),
    ],
)
def test_decimal_strictness_is_configured_or_follows_ownership(
    namespace: str, subject_config: bool | None, global_config: bool | None, allowed: bool
) -> None:
    state = RegistryState()
    for subject, strict in (("money", subject_config), (None, global_config)):
        if strict is not None:
            for key, value in state.set_config(subject, None, strict):
                state.apply(key, value)
    register(state, "money", invoice(namespace, 4))
    if allowed:
        assert register(state, "money", invoice(namespace, 2))[0].version == 2
    else:
        error = refused(state, "money", invoice(namespace, 2))
        assert error.status == 409
        assert "decimal scale 4 -> 2 would rescale stored values" in str(error)
        assert "amount" in str(error)


def test_config_records_keep_each_setting_and_replay_old_ones() -> None:
    state = RegistryState()
    state.apply({"kind": "CONFIG", "subject": "s"}, {"compatibilityLevel": "FULL"})  # written before decimalStrict
    for key, value in state.set_config("s", None, True):
        state.apply(key, value)
    assert state.config("s") == Config(CompatibilityLevel.FULL, True)
    for key, value in state.set_config("s", CompatibilityLevel.NONE):
        state.apply(key, value)
    assert state.config("s") == Config(CompatibilityLevel.NONE, True)
    assert state.level("other") is CompatibilityLevel.BACKWARD


def test_deleting_a_subject_config_that_does_not_exist_is_40401() -> None:
    with pytest.raises(RegistryError) as raised:
        RegistryState().delete_config("nobody")
    assert raised.value.error_code == 40401


def test_compatibility_with_latest_of_an_empty_subject_compares_with_nothing() -> None:
    state = RegistryState()
    assert state.compatibility_against("empty", "latest") == []
    with pytest.raises(RegistryError) as raised:
        state.compatibility_against("empty", 1)
    assert raised.value.error_code == 40401


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMA_DIR.glob("*.avsc")))
def test_every_catalog_schema_is_decimal_strict_by_default(name: str) -> None:
    """The default rests on the namespace; a schema moved out of it would silently lose the rule."""
    assert owned_by_backbone(parse((SCHEMA_DIR / name).read_text()))
