"""`PlainRegistry` (the emitter's schema ids over plain HTTP) against the real registry and confluent's client.

The emitter frames every record with the id `PlainRegistry` answers, so it must be the id confluent-kafka's
`SchemaRegistryClient` answers for the same schema and subject, and its failures must be the errors
`backbone.kafka.serde` gives for the client's.
"""

from __future__ import annotations

import json

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from backbone.errors import BackboneError, ServiceUnavailableError
from backbone.kafka.schema_ids import PlainRegistry
from tests.conftest import registry_client_config
from tests.support import unique_name

pytestmark = pytest.mark.integration

ENTRY = {
    "type": "record",
    "name": "Entry",
    "namespace": "backbone.test",
    "fields": [{"name": "id", "type": "string"}, {"name": "minutes", "type": "int"}],
}
ENTRY_V2 = {**ENTRY, "fields": [*ENTRY["fields"], {"name": "note", "type": "string", "default": ""}]}
BREAKING = {**ENTRY, "fields": [*ENTRY["fields"], {"name": "rate", "type": "double"}]}


def plain(registry_url: str, user_info: str) -> PlainRegistry:
    return PlainRegistry(registry_client_config(registry_url, user_info))


def test_registering_answers_the_id_confluents_client_answers(
    registry_url: str, registry_credentials: dict[str, str]
) -> None:
    subject = unique_name("ids") + "-value"
    writer = plain(registry_url, registry_credentials["writer"])
    client = SchemaRegistryClient(registry_client_config(registry_url, registry_credentials["writer"]))

    first = writer.schema_id(subject, json.dumps(ENTRY), register=True)

    assert client.register_schema(subject, Schema(json.dumps(ENTRY), "AVRO")) == first
    assert writer.schema_id(subject, json.dumps(ENTRY), register=True) == first  # registering again: same id
    assert writer.schema_id(subject, json.dumps(ENTRY), register=False) == first
    second = writer.schema_id(subject, json.dumps(ENTRY_V2), register=True)
    assert client.lookup_schema(subject, Schema(json.dumps(ENTRY_V2), "AVRO")).schema_id == second != first


def test_looking_up_an_unregistered_schema_is_an_error_not_a_registration(
    registry_url: str, registry_credentials: dict[str, str]
) -> None:
    subject = unique_name("ids") + "-value"
    writer = plain(registry_url, registry_credentials["writer"])

    with pytest.raises(BackboneError, match="refused the schema \\(404\\)"):
        writer.schema_id(subject, json.dumps(ENTRY), register=False)
    client = SchemaRegistryClient(registry_client_config(registry_url, registry_credentials["writer"]))
    assert subject not in client.get_subjects()


def test_an_incompatible_schema_is_refused_with_the_hint_to_check(
    registry_url: str, registry_credentials: dict[str, str]
) -> None:
    subject = unique_name("ids") + "-value"
    writer = plain(registry_url, registry_credentials["writer"])
    writer.schema_id(subject, json.dumps(ENTRY), register=True)

    with pytest.raises(BackboneError, match="refused the schema as incompatible") as refused:
        writer.schema_id(subject, json.dumps(BREAKING), register=True)
    assert "backbone schemas check" in (refused.value.hint or "")


@pytest.mark.parametrize("user_info", ["", "writer:wrong-password"], ids=["no-credentials", "wrong-password"])
def test_refused_credentials_say_how_to_set_them(registry_url: str, user_info: str) -> None:
    with pytest.raises(ServiceUnavailableError, match="schema registry refused this client") as refused:
        plain(registry_url, user_info).schema_id(unique_name("ids") + "-value", json.dumps(ENTRY), register=True)
    assert "BASIC_AUTH_USER_INFO" in (refused.value.hint or "")


def test_an_unreachable_registry_is_unavailable_and_the_next_url_is_tried(
    registry_url: str, registry_credentials: dict[str, str]
) -> None:
    subject = unique_name("ids") + "-value"
    with pytest.raises(ServiceUnavailableError, match="schema registry unreachable") as unreachable:
        plain("http://127.0.0.1:1", registry_credentials["writer"]).schema_id(subject, json.dumps(ENTRY), register=True)
    assert "backbone up" in (unreachable.value.hint or "")

    both = plain(f"http://127.0.0.1:1,{registry_url}", registry_credentials["writer"])
    assert both.schema_id(subject, json.dumps(ENTRY), register=True) > 0
