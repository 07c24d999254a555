"""The registry against Confluent's documented Schema Registry API: status codes and error codes.

Derived from Confluent's "Schema Registry API Reference" for Confluent Platform: each
test id names the endpoint it holds to (`POST /subjects/{subject}/versions` is
`post-subjects-versions`) and the documented code it expects. Codes: 40401 subject not found,
40402 version not found, 40403 schema not found, 40404 subject soft-deleted, 40405 subject not
soft-deleted before a permanent delete, 40406 version soft-deleted, 40407 version not soft-deleted
before a permanent delete, 40408 subject has no compatibility config, 409 incompatible schema,
42201 invalid schema, 42202 invalid version, 42203 invalid compatibility level.

Runs against the session registry (`registry_url`, tests/conftest.py) over plain HTTP, so what is
checked is the wire answer, not a client's interpretation (one test drives confluent-kafka's client
with a `/` in the subject); every test uses subjects of its own. Requests carry the `admin` role's
credentials, since the API covers config and permanent deletes (who may do what is
tests/unit/test_registry_auth.py's subject).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from tests.conftest import registry_client_config
from tests.support import unique_name

pytestmark = pytest.mark.integration

ENTRY_V1 = {
    "type": "record",
    "name": "Entry",
    "namespace": "conformance.test",
    "fields": [{"name": "id", "type": "string"}, {"name": "minutes", "type": "int"}],
}
ENTRY_V2 = {**ENTRY_V1, "fields": [*ENTRY_V1["fields"], {"name": "note", "type": "string", "default": ""}]}
ENTRY_BREAKING = {**ENTRY_V1, "fields": [*ENTRY_V1["fields"], {"name": "rate", "type": "double"}]}


class Registry:
    """Plain HTTP against the registry; subjects are URL-encoded as Confluent's clients send them."""

    def __init__(self, url: str, user_info: str) -> None:
        self.url = url
        self.user_info = user_info
        user, _, password = user_info.partition(":")
        self._auth = (user, password)

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
        return httpx.request(method, self.url + path, json=body, params=query, timeout=30, auth=self._auth)

    def register(self, subject: str, schema: Any, **params: Any) -> httpx.Response:
        return self.call("POST", f"/subjects/{_enc(subject)}/versions", _body(schema), **params)

    def registered(self, schema: Any = ENTRY_V1, prefix: str = "conformance") -> str:
        subject = unique_name(prefix)
        response = self.register(subject, schema)
        assert response.status_code == 200, response.text
        return subject


def _enc(subject: str) -> str:
    return quote(subject, safe="")


def _body(schema: Any) -> dict[str, str]:
    return {"schema": schema if isinstance(schema, str) else json.dumps(schema)}


def assert_error(response: httpx.Response, status: int, error_code: int) -> str:
    assert (response.status_code, response.json().get("error_code")) == (status, error_code), response.text
    assert response.json()["message"]
    return str(response.json()["message"])


@pytest.fixture(scope="module")
def registry(registry_url: str, registry_credentials: dict[str, str]) -> Registry:
    return Registry(registry_url, registry_credentials["admin"])


# -- POST /subjects/{subject}/versions ----------------------------------------------------------------


def test_post_subjects_versions_returns_the_id_and_is_idempotent(registry: Registry) -> None:
    subject = unique_name("register")
    first = registry.register(subject, ENTRY_V1)
    again = registry.register(subject, json.dumps(ENTRY_V1, indent=2))  # whitespace is not a new schema
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and set(first.json()) == {"id"}
    assert first.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")


def test_post_subjects_versions_incompatible_409(registry: Registry) -> None:
    subject = registry.registered()
    message = assert_error(registry.register(subject, ENTRY_BREAKING), 409, 409)
    assert "rate" in message


INVALID = [
    pytest.param(
        {**ENTRY_V1, "fields": [*ENTRY_V1["fields"], {"name": "n", "type": ["null", "string", "string"]}]},
        'fields[2].type: duplicate type "string" in union',
        id="post-subjects-versions-42201-duplicate-union-type",
    ),
    pytest.param(
        {**ENTRY_V1, "namespace": "foo-bar-baz"},
        'namespace: "foo-bar-baz" is not a valid namespace',
        id="post-subjects-versions-42201-invalid-namespace",
    ),
    pytest.param(
        {**ENTRY_V1, "fields": [*ENTRY_V1["fields"], {"name": "n", "type": ["null", "string"], "default": "x"}]},
        "fields[2].default:",
        id="post-subjects-versions-42201-union-default-not-first-branch",
    ),
    pytest.param('{"type": "nope"}', "nope", id="post-subjects-versions-42201-unknown-type"),
    pytest.param("{not json", "", id="post-subjects-versions-42201-not-json"),
]


@pytest.mark.parametrize(("schema", "fragment"), INVALID)
def test_post_subjects_versions_invalid_schema_42201(registry: Registry, schema: Any, fragment: str) -> None:
    subject = unique_name("invalid")
    message = assert_error(registry.register(subject, schema), 422, 42201)
    assert fragment in message
    assert_error(registry.call("GET", f"/subjects/{subject}/versions"), 404, 40401)  # nothing was stored


def test_post_subjects_versions_unsupported_schema_type_42201(registry: Registry) -> None:
    body = {"schema": '{"type": "object"}', "schemaType": "JSON"}
    assert_error(registry.call("POST", f"/subjects/{unique_name('json')}/versions", body), 422, 42201)


def test_post_subjects_versions_normalize_gives_equivalent_schemas_one_id(registry: Registry) -> None:
    subject = unique_name("normalize")
    plain = registry.register(subject, ENTRY_V1)
    documented = {**ENTRY_V1, "doc": "docs and key order do not change the schema"}
    normalized = registry.register(subject, json.dumps(documented, sort_keys=True), normalize=True)
    assert normalized.status_code == 200
    assert normalized.json() == plain.json()
    assert registry.call("GET", f"/subjects/{subject}/versions").json() == [1]


# -- POST /subjects/{subject} (lookup) -------------------------------------------------------------------


def test_post_subjects_lookup_returns_the_version(registry: Registry) -> None:
    subject = registry.registered()
    found = registry.call("POST", f"/subjects/{subject}", _body(ENTRY_V1))
    assert found.status_code == 200
    assert {k: found.json()[k] for k in ("subject", "version")} == {"subject": subject, "version": 1}
    assert json.loads(found.json()["schema"]) == ENTRY_V1


def test_post_subjects_lookup_unknown_subject_40401(registry: Registry) -> None:
    assert_error(registry.call("POST", f"/subjects/{unique_name('nobody')}", _body(ENTRY_V1)), 404, 40401)


def test_post_subjects_lookup_unknown_schema_40403(registry: Registry) -> None:
    subject = registry.registered()
    assert_error(registry.call("POST", f"/subjects/{subject}", _body(ENTRY_V2)), 404, 40403)


def test_post_subjects_lookup_normalize_finds_an_equivalent_schema(registry: Registry) -> None:
    subject = registry.registered()
    equivalent = json.dumps({**ENTRY_V1, "doc": "ignored when normalized"}, sort_keys=True)
    assert_error(registry.call("POST", f"/subjects/{subject}", _body(equivalent)), 404, 40403)
    found = registry.call("POST", f"/subjects/{subject}", _body(equivalent), normalize=True)
    assert (found.status_code, found.json()["version"]) == (200, 1)


def test_post_subjects_lookup_soft_deleted_subject_40401_unless_deleted_true(registry: Registry) -> None:
    subject = registry.registered()
    assert registry.call("DELETE", f"/subjects/{subject}").json() == [1]
    assert_error(registry.call("POST", f"/subjects/{subject}", _body(ENTRY_V1)), 404, 40401)
    found = registry.call("POST", f"/subjects/{subject}", _body(ENTRY_V1), deleted=True)
    assert (found.status_code, found.json()["version"]) == (200, 1)


# -- GET /subjects/{subject}/versions/{version} ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "error_code"),
    [
        pytest.param("/subjects/nobody-{subject}/versions/1", 404, 40401, id="get-subjects-versions-40401"),
        pytest.param("/subjects/{subject}/versions/2", 404, 40402, id="get-subjects-versions-40402"),
        pytest.param("/subjects/{subject}/versions/0", 422, 42202, id="get-subjects-versions-42202-zero"),
        pytest.param("/subjects/{subject}/versions/first", 422, 42202, id="get-subjects-versions-42202-word"),
        pytest.param("/subjects/{subject}/versions/2/schema", 404, 40402, id="get-subjects-versions-schema-40402"),
        pytest.param("/subjects/nobody-{subject}/versions", 404, 40401, id="get-subjects-versions-list-40401"),
        pytest.param("/schemas/ids/2147483647", 404, 40403, id="get-schemas-ids-40403"),
    ],
)
def test_get_subjects_versions_and_schemas_errors(registry: Registry, path: str, status: int, error_code: int) -> None:
    subject = registry.registered()
    assert_error(registry.call("GET", path.format(subject=subject)), status, error_code)


def test_get_subjects_versions_latest_and_minus_one(registry: Registry) -> None:
    subject = registry.registered()
    registry.register(subject, ENTRY_V2)
    latest = registry.call("GET", f"/subjects/{subject}/versions/latest").json()
    assert latest["version"] == registry.call("GET", f"/subjects/{subject}/versions/-1").json()["version"] == 2


# -- DELETE /subjects/{subject} and /subjects/{subject}/versions/{version} -----------------------------------


def test_delete_subjects_soft_then_hard(registry: Registry) -> None:
    subject = registry.registered()
    registry.register(subject, ENTRY_V2)
    assert_error(registry.call("DELETE", f"/subjects/{subject}", permanent=True), 404, 40405)
    assert registry.call("DELETE", f"/subjects/{subject}").json() == [1, 2]
    assert_error(registry.call("DELETE", f"/subjects/{subject}"), 404, 40404)
    assert registry.call("DELETE", f"/subjects/{subject}", permanent=True).json() == [1, 2]
    assert_error(registry.call("DELETE", f"/subjects/{subject}", permanent=True), 404, 40401)


def test_delete_subjects_unknown_40401(registry: Registry) -> None:
    assert_error(registry.call("DELETE", f"/subjects/{unique_name('nobody')}"), 404, 40401)


def test_delete_subjects_versions_soft_then_hard(registry: Registry) -> None:
    subject = registry.registered()
    registry.register(subject, ENTRY_V2)
    assert_error(registry.call("DELETE", f"/subjects/{subject}/versions/1", permanent=True), 404, 40407)
    assert registry.call("DELETE", f"/subjects/{subject}/versions/1").json() == 1
    assert_error(registry.call("DELETE", f"/subjects/{subject}/versions/1"), 404, 40406)
    assert registry.call("DELETE", f"/subjects/{subject}/versions/1", permanent=True).json() == 1
    assert_error(registry.call("GET", f"/subjects/{subject}/versions/1", deleted=True), 404, 40402)
    assert registry.call("GET", f"/subjects/{subject}/versions").json() == [2]


@pytest.mark.parametrize(
    ("path", "status", "error_code"),
    [
        pytest.param("/subjects/nobody-{subject}/versions/1", 404, 40401, id="delete-subjects-versions-40401"),
        pytest.param("/subjects/{subject}/versions/9", 404, 40402, id="delete-subjects-versions-40402"),
        pytest.param("/subjects/{subject}/versions/zero", 422, 42202, id="delete-subjects-versions-42202"),
    ],
)
def test_delete_subjects_versions_errors(registry: Registry, path: str, status: int, error_code: int) -> None:
    subject = registry.registered()
    assert_error(registry.call("DELETE", path.format(subject=subject)), status, error_code)


# -- POST /compatibility/subjects/{subject}/versions[/{version}] ---------------------------------------------


def test_post_compatibility_versions_latest_without_versions_is_compatible(registry: Registry) -> None:
    subject = unique_name("empty")
    response = registry.call("POST", f"/compatibility/subjects/{subject}/versions/latest", _body(ENTRY_V1))
    assert (response.status_code, response.json()) == (200, {"is_compatible": True})


def test_post_compatibility_versions_latest_verbose_explains(registry: Registry) -> None:
    subject = registry.registered()
    path = f"/compatibility/subjects/{subject}/versions/latest"
    quiet = registry.call("POST", path, _body(ENTRY_BREAKING))
    verbose = registry.call("POST", path, _body(ENTRY_BREAKING), verbose=True)
    assert quiet.json() == {"is_compatible": False}
    assert verbose.json()["is_compatible"] is False
    assert any("rate" in m for m in verbose.json()["messages"])
    fine = registry.call("POST", path, _body(ENTRY_V2), verbose=True)
    assert fine.json() == {"is_compatible": True, "messages": []}


def test_post_compatibility_versions_all_verbose(registry: Registry) -> None:
    subject = registry.registered()
    response = registry.call("POST", f"/compatibility/subjects/{subject}/versions", _body(ENTRY_BREAKING), verbose=True)
    assert response.json()["is_compatible"] is False and response.json()["messages"]


@pytest.mark.parametrize(
    ("path", "schema", "status", "error_code"),
    [
        pytest.param("nobody-{subject}/versions/1", ENTRY_V1, 404, 40401, id="post-compatibility-versions-40401"),
        pytest.param("{subject}/versions/5", ENTRY_V1, 404, 40402, id="post-compatibility-versions-40402"),
        pytest.param("{subject}/versions/zero", ENTRY_V1, 422, 42202, id="post-compatibility-versions-42202"),
        pytest.param("{subject}/versions/latest", '{"type": "nope"}', 422, 42201, id="post-compatibility-42201"),
        pytest.param(
            "{subject}/versions",
            {**ENTRY_V2, "namespace": "foo-bar-baz"},
            422,
            42201,
            id="post-compatibility-all-42201-strict-validation",
        ),
    ],
)
def test_post_compatibility_errors(registry: Registry, path: str, schema: Any, status: int, error_code: int) -> None:
    subject = registry.registered()
    response = registry.call("POST", "/compatibility/subjects/" + path.format(subject=subject), _body(schema))
    assert_error(response, status, error_code)


# -- /config -----------------------------------------------------------------------------------------------


def test_get_put_delete_config_subject_lifecycle(registry: Registry) -> None:
    subject = registry.registered()
    assert_error(registry.call("GET", f"/config/{subject}"), 404, 40408)
    assert registry.call("GET", f"/config/{subject}", defaultToGlobal=True).json()["compatibilityLevel"]
    put = registry.call("PUT", f"/config/{subject}", {"compatibility": "full_transitive"})
    assert (put.status_code, put.json()) == (200, {"compatibility": "FULL_TRANSITIVE"})
    assert registry.call("GET", f"/config/{subject}").json() == {"compatibilityLevel": "FULL_TRANSITIVE"}
    deleted = registry.call("DELETE", f"/config/{subject}")
    assert (deleted.status_code, deleted.json()["compatibilityLevel"]) == (200, "FULL_TRANSITIVE")
    assert_error(registry.call("GET", f"/config/{subject}"), 404, 40408)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error_code"),
    [
        pytest.param(
            "PUT", "/config/{subject}", {"compatibility": "SIDEWAYS"}, 422, 42203, id="put-config-subject-42203"
        ),
        pytest.param("PUT", "/config", {"compatibility": "SIDEWAYS"}, 422, 42203, id="put-config-42203"),
        pytest.param("PUT", "/config/{subject}", {}, 422, 42203, id="put-config-subject-empty-body-42203"),
        pytest.param("DELETE", "/config/{subject}", None, 404, 40401, id="delete-config-subject-40401"),
        pytest.param("GET", "/config/{subject}", None, 404, 40408, id="get-config-subject-40408"),
    ],
)
def test_config_errors(registry: Registry, method: str, path: str, body: Any, status: int, error_code: int) -> None:
    subject = registry.registered()
    assert_error(registry.call(method, path.format(subject=subject), body), status, error_code)
    assert registry.call("GET", "/config").json()["compatibilityLevel"] == "BACKWARD"  # nothing changed


# -- subjects containing "/" (URL-encoded as %2F) --------------------------------------------------------------


SLASHED = [
    pytest.param("team/{name}-value", id="subjects-config-slash"),
    pytest.param("a/b/c/{name}", id="subjects-config-several-slashes"),
    pytest.param("{name}/versions", id="subjects-config-slash-then-versions"),
    pytest.param("100%/{name}", id="subjects-config-percent-and-slash"),
]


@pytest.mark.parametrize("pattern", SLASHED)
def test_subject_and_config_endpoints_route_encoded_slashes(registry: Registry, pattern: str) -> None:
    subject = pattern.format(name=unique_name("slash"))
    encoded = _enc(subject)
    schema_id = registry.register(subject, ENTRY_V1).json()["id"]

    assert subject in registry.call("GET", "/subjects").json()
    assert registry.call("GET", f"/subjects/{encoded}/versions").json() == [1]
    assert registry.call("GET", f"/subjects/{encoded}/versions/latest").json()["subject"] == subject
    assert registry.call("GET", f"/subjects/{encoded}/versions/1/schema").status_code == 200
    assert registry.call("POST", f"/subjects/{encoded}", _body(ENTRY_V1)).json()["id"] == schema_id
    check = registry.call("POST", f"/compatibility/subjects/{encoded}/versions/latest", _body(ENTRY_BREAKING))
    assert check.json() == {"is_compatible": False}
    assert registry.call("PUT", f"/config/{encoded}", {"compatibility": "NONE"}).status_code == 200
    assert registry.call("GET", f"/config/{encoded}").json() == {"compatibilityLevel": "NONE"}
    assert registry.call("DELETE", f"/subjects/{encoded}").json() == [1]


def test_subject_endpoints_with_slashed_subject_via_confluent_client(registry: Registry) -> None:
    client = SchemaRegistryClient(registry_client_config(registry.url, registry.user_info))
    subject = f"team/{unique_name('client')}-value"
    schema_id = client.register_schema(subject, Schema(json.dumps(ENTRY_V1), "AVRO"))
    assert client.get_latest_version(subject).schema_id == schema_id
    assert client.lookup_schema(subject, Schema(json.dumps(ENTRY_V1), "AVRO")).version == 1
    assert client.test_compatibility(subject, Schema(json.dumps(ENTRY_V2), "AVRO")) is True
    assert client.delete_subject(subject) == [1]


# -- backbone's decimal rule (stricter than Confluent on purpose; README "The schema registry") -----------------


def invoice(namespace: str, scale: int) -> dict[str, Any]:
    amount = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": scale}
    return {
        "type": "record",
        "name": "Invoice",
        "namespace": namespace,
        "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": amount}],
    }


def test_post_subjects_versions_decimal_scale_change_409_for_backbone_schemas(registry: Registry) -> None:
    subject = registry.registered(invoice("dev.backbone.events.conformance", 4), prefix="money")
    message = assert_error(registry.register(subject, invoice("dev.backbone.events.conformance", 2)), 409, 409)
    assert "amount" in message and "decimal scale 4 -> 2 would rescale stored values" in message

    put = registry.call("PUT", f"/config/{subject}", {"decimalStrict": False})
    assert put.json() == {"decimalStrict": False}
    assert registry.call("GET", f"/config/{subject}").json() == {
        "compatibilityLevel": "BACKWARD",
        "decimalStrict": False,
    }
    assert registry.register(subject, invoice("dev.backbone.events.conformance", 2)).status_code == 200


def test_post_subjects_versions_decimal_scale_change_follows_confluent_for_foreign_schemas(registry: Registry) -> None:
    subject = registry.registered(invoice("com.example.billing", 4), prefix="foreign-money")
    assert registry.register(subject, invoice("com.example.billing", 2)).status_code == 200
    strict = registry.registered(invoice("com.example.billing", 4), prefix="foreign-money-strict")
    registry.call("PUT", f"/config/{strict}", {"decimalStrict": True})
    assert_error(registry.register(strict, invoice("com.example.billing", 2)), 409, 409)
