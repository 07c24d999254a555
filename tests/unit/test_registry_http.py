"""The registry's HTTP routing without Kafka: the app over a store whose log is a list in memory.

The real broker and process are exercised by tests/integration/test_registry*.py; this pins the parts
that are pure routing (subjects holding `/` or `%`, metric labels) so they fail fast.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from backbone.registry.app import create_app
from tests.registry_memory import leading_store

SCHEMA = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]})


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(leading_store()))


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("team/orders-value", id="slash"),
        pytest.param("x/versions", id="slash-then-versions"),
        pytest.param("a%41/b", id="percent-sequence-is-literal"),
        pytest.param("50% off", id="percent-and-space"),
        pytest.param("plain-value", id="no-escapes"),
    ],
)
def test_encoded_subjects_reach_the_handler_decoded_once(client: TestClient, subject: str) -> None:
    encoded = quote(subject, safe="")
    assert client.post(f"/subjects/{encoded}/versions", json={"schema": SCHEMA}).status_code == 200
    assert client.get("/subjects").json() == [subject]
    assert client.get(f"/subjects/{encoded}/versions/1").json()["subject"] == subject
    assert client.post(f"/subjects/{encoded}", json={"schema": SCHEMA}).json()["version"] == 1
    assert client.delete(f"/subjects/{encoded}/versions/1").json() == 1


def test_metric_labels_name_the_route_not_the_convertor(client: TestClient) -> None:
    client.post(f"/subjects/{quote('a/b', safe='')}/versions", json={"schema": SCHEMA})
    assert 'route="/subjects/{subject}/versions",status="200"' in client.get("/metrics").text


def test_invalid_schema_answer_is_confluent_shaped(client: TestClient) -> None:
    schema: dict[str, Any] = {"type": "record", "name": "A", "namespace": "foo-bar-baz", "fields": []}
    response = client.post("/subjects/s/versions", json={"schema": json.dumps(schema)})
    assert response.status_code == 422
    assert response.json()["error_code"] == 42201
    assert response.json()["message"].startswith('Invalid schema: namespace: "foo-bar-baz" is not a valid')
