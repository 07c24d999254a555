"""The registry service against confluent-kafka's own client, serializer and deserializer.

A registry process of this module's own (free port, unique `_schemas` topic, users of its own) runs
on the session's real broker, so the module can stop and restart it and check that state survives in
the topic. Clients use the admin role, since these tests change config and delete permanently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.registry_process import RegistryProcess, RegistryUsers
from tests.support import create_topic, unique_name

pytestmark = pytest.mark.integration

ENTRY_V1 = {
    "type": "record",
    "name": "Entry",
    "namespace": "backbone.test",
    "fields": [{"name": "id", "type": "string"}, {"name": "minutes", "type": "int"}],
}
ENTRY_V2 = {**ENTRY_V1, "fields": [*ENTRY_V1["fields"], {"name": "note", "type": "string", "default": ""}]}
ENTRY_BREAKING = {**ENTRY_V1, "fields": [*ENTRY_V1["fields"], {"name": "rate", "type": "double"}]}


def avro(schema: dict) -> Schema:
    return Schema(json.dumps(schema), "AVRO")


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> RegistryUsers:
    return RegistryUsers(tmp_path_factory.mktemp("registry-users"))


@pytest.fixture(scope="module")
def registry(bootstrap: str, users: RegistryUsers) -> Iterator[RegistryProcess]:
    process = RegistryProcess(bootstrap, unique_name("_schemas-test"), users)
    process.start()
    yield process
    process.stop()
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the deletion is confirmed
    admin.delete_topics([process.topic])[process.topic].result(timeout=30)


def test_serializer_registers_and_deserializer_reads_back(registry: RegistryProcess) -> None:
    client = registry.client()
    topic = unique_name("entries")
    serializer = AvroSerializer(client, json.dumps(ENTRY_V1))
    context = SerializationContext(topic, MessageField.VALUE)

    payload = serializer({"id": "e-1", "minutes": 90}, context)

    latest = client.get_latest_version(f"{topic}-value")
    assert latest.version == 1
    assert latest.schema_id is not None
    assert payload[1:5] == latest.schema_id.to_bytes(4, "big")  # Confluent wire format: magic, id
    assert AvroDeserializer(registry.client())(payload, context) == {"id": "e-1", "minutes": 90}


def test_registering_the_same_schema_again_returns_the_same_id(registry: RegistryProcess) -> None:
    client = registry.client()
    subject = unique_name("same")
    first = client.register_schema(subject, avro(ENTRY_V1))
    assert registry.client().register_schema(subject, avro(ENTRY_V1)) == first
    assert client.get_versions(subject) == [1]


def test_same_schema_under_two_subjects_shares_its_id(registry: RegistryProcess) -> None:
    schema = {**ENTRY_V1, "name": unique_name("Shared").replace("-", "_")}
    first = registry.client().register_schema(unique_name("a"), avro(schema))
    assert registry.client().register_schema(unique_name("b"), avro(schema)) == first


def test_compatible_evolution_gets_a_new_version_and_id(registry: RegistryProcess) -> None:
    client = registry.client()
    subject = unique_name("evolve")
    first = client.register_schema(subject, avro(ENTRY_V1))
    second = client.register_schema(subject, avro(ENTRY_V2))

    assert second != first
    assert client.get_versions(subject) == [1, 2]
    assert client.get_version(subject, 2).schema_id == second
    assert json.loads(client.get_schema(second).schema_str or "")["fields"][-1]["name"] == "note"
    assert client.get_schema_versions(second)[0].version == 2


def test_incompatible_schema_is_rejected_with_409(registry: RegistryProcess) -> None:
    client = registry.client()
    subject = unique_name("breaking")
    client.register_schema(subject, avro(ENTRY_V1))

    assert client.test_compatibility(subject, avro(ENTRY_BREAKING)) is False
    with pytest.raises(SchemaRegistryError) as raised:
        client.register_schema(subject, avro(ENTRY_BREAKING))
    assert raised.value.error_code == 409
    assert "rate" in raised.value.error_message


def test_invalid_schema_is_rejected_with_42201(registry: RegistryProcess) -> None:
    with pytest.raises(SchemaRegistryError) as raised:
        registry.client().register_schema(unique_name("invalid"), Schema('{"type": "nope"}', "AVRO"))
    assert (raised.value.http_status_code, raised.value.error_code) == (422, 42201)


def test_lookup_finds_registered_schema_and_reports_missing_ones(registry: RegistryProcess) -> None:
    client = registry.client()
    subject = unique_name("lookup")
    schema_id = client.register_schema(subject, avro(ENTRY_V1))

    found = client.lookup_schema(subject, avro(ENTRY_V1))
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, subject)
    with pytest.raises(SchemaRegistryError) as missing_schema:
        client.lookup_schema(subject, avro(ENTRY_V2))
    assert missing_schema.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as missing_subject:
        client.lookup_schema(unique_name("nobody"), avro(ENTRY_V1))
    assert missing_subject.value.error_code == 40401
    with pytest.raises(SchemaRegistryError) as missing_id:
        client.get_schema(10_000_000)
    assert missing_id.value.error_code == 40403


def test_compatibility_config_per_subject(registry: RegistryProcess) -> None:
    client = registry.client()
    subject = unique_name("config")
    client.register_schema(subject, avro(ENTRY_V1))

    with pytest.raises(SchemaRegistryError) as unset:
        client.get_compatibility(subject)
    assert unset.value.error_code == 40408
    assert client.set_compatibility(subject, "NONE") == {"compatibility": "NONE"}
    assert client.get_compatibility(subject) == "NONE"
    assert client.register_schema(subject, avro(ENTRY_BREAKING)) > 0  # NONE lets anything through
    with pytest.raises(SchemaRegistryError) as invalid:
        client.set_compatibility(subject, "SIDEWAYS")
    assert invalid.value.error_code == 42203
    assert client.get_compatibility() == "BACKWARD"


def test_soft_delete_hides_versions_and_subjects(registry: RegistryProcess) -> None:
    client = registry.client()
    subject = unique_name("delete")
    client.register_schema(subject, avro(ENTRY_V1))
    client.register_schema(subject, avro(ENTRY_V2))

    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject) == [1]
    assert client.get_version(subject, 2, deleted=True).version == 2
    assert client.delete_subject(subject) == [1]
    assert subject not in client.get_subjects()
    assert subject in client.get_subjects(deleted=True)
    with pytest.raises(SchemaRegistryError) as gone:
        client.get_latest_version(subject)
    assert gone.value.error_code == 40401
    assert client.delete_subject(subject, permanent=True) == [1, 2]
    assert subject not in client.get_subjects(deleted=True)


def test_state_survives_a_restart(registry: RegistryProcess) -> None:
    client = registry.client()
    evolved, deleted = unique_name("kept"), unique_name("kept-deleted")
    ids = [client.register_schema(evolved, avro(ENTRY_V1)), client.register_schema(evolved, avro(ENTRY_V2))]
    client.register_schema(deleted, avro(ENTRY_V1))
    client.delete_subject(deleted)
    client.set_compatibility(evolved, "FULL")
    before = {"subjects": client.get_subjects(), "deleted": client.get_subjects(deleted=True)}

    assert registry.stop() == 0
    registry.start()

    after = registry.client()
    assert {"subjects": after.get_subjects(), "deleted": after.get_subjects(deleted=True)} == before
    assert after.get_versions(evolved) == [1, 2]
    assert [after.get_version(evolved, v).schema_id for v in (1, 2)] == ids
    assert after.get_compatibility(evolved) == "FULL"
    fresh = {**ENTRY_V1, "name": unique_name("Fresh").replace("-", "_")}
    assert after.register_schema(unique_name("fresh"), avro(fresh)) > max(ids)  # ids are not reused


@pytest.mark.parametrize(
    ("method", "path", "status", "error_code"),
    [
        pytest.param("GET", "/subjects/{subject}/versions/7", 404, 40402, id="unknown-version-40402"),
        pytest.param("GET", "/subjects/{subject}/versions/zero", 422, 42202, id="invalid-version-42202"),
        pytest.param("GET", "/subjects/nobody-{subject}/versions/latest", 404, 40401, id="unknown-subject-40401"),
        pytest.param("GET", "/schemas/ids/999999999", 404, 40403, id="unknown-id-40403"),
        pytest.param("GET", "/config/{subject}", 404, 40408, id="subject-without-config-40408"),
        pytest.param("DELETE", "/subjects/{subject}?permanent=true", 404, 40405, id="hard-delete-needs-soft-40405"),
    ],
)
def test_error_bodies_follow_confluent(
    registry: RegistryProcess, method: str, path: str, status: int, error_code: int
) -> None:
    subject = unique_name("errors")
    registry.client().register_schema(subject, avro(ENTRY_V1))
    response = httpx.request(method, registry.url + path.format(subject=subject), auth=registry.users.auth("admin"))
    assert response.status_code == status
    assert response.json()["error_code"] == error_code
    assert response.json()["message"]


def test_plain_json_normalize_and_metrics(registry: RegistryProcess) -> None:
    subject = unique_name("http")
    spaced = {"schema": json.dumps(ENTRY_V1, indent=2)}
    reordered = {"schema": json.dumps({**ENTRY_V1, "doc": "docs do not matter"}, sort_keys=True)}

    http = httpx.Client(base_url=registry.url, auth=registry.users.auth("writer"))
    first = http.post(f"/subjects/{subject}/versions?normalize=true", json=spaced)
    again = http.post(f"/subjects/{subject}/versions?normalize=true", json=reordered)

    assert first.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
    assert again.json() == first.json()
    assert http.get(f"/subjects/{subject}/versions").json() == [1]
    assert http.get(f"/config/{subject}?defaultToGlobal=true").json() == {"compatibilityLevel": "BACKWARD"}
    metrics = httpx.get(f"{registry.url}/metrics").text
    assert 'route="/subjects/{subject}/versions",status="200"' in metrics


def test_schemas_stored_before_strict_validation_keep_working(bootstrap: str, users: RegistryUsers) -> None:
    """A schema fastavro accepted but the Avro specification refuses, already in the log, still serves."""
    legacy = {**ENTRY_V1, "namespace": "legacy-ns", "fields": [{"name": "id", "type": ["null", "string", "string"]}]}
    subject, topic = unique_name("legacy"), unique_name("_schemas-legacy")
    create_topic(bootstrap, topic, config={"cleanup.policy": "compact"})
    key = {"kind": "SCHEMA", "subject": subject, "version": 1}
    value = {"subject": subject, "version": 1, "id": 42, "schema": json.dumps(legacy, separators=(",", ":"))}
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=json.dumps(key, sort_keys=True), value=json.dumps(value), partition=0)
    assert producer.flush(30) == 0
    process = RegistryProcess(bootstrap, topic, users)
    process.start()
    try:
        client = process.client()
        assert client.register_schema(subject, avro(legacy)) == 42  # the serializer's auto-register still works
        assert client.lookup_schema(subject, avro(legacy)).schema_id == 42
        assert json.loads(client.get_schema(42).schema_str or "") == legacy
        evolved = {**ENTRY_V1, "namespace": "legacy_ns", "fields": [{"name": "id", "type": ["null", "string"]}]}
        assert client.test_compatibility(subject, avro(evolved)) is True
        with pytest.raises(SchemaRegistryError) as fresh:
            client.register_schema(unique_name("fresh"), avro(legacy))
        assert (fresh.value.error_code, 'duplicate type "string" in union' in fresh.value.error_message) == (
            42201,
            True,
        )
    finally:
        process.stop()
        admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the deletion is confirmed
        admin.delete_topics([topic])[topic].result(timeout=30)
