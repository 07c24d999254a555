"""Clockify webhooks: the static per-webhook token, entry events, deletions as terminal revisions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backbone.domain.models import TimeEntry
from producers.gateway import GatewaySettings, create_app
from tests.unit.connectors.test_gateway_app import FakePublisher

NOW = 1_730_000_000.0  # 2024-10-27T03:33:20Z
TOKEN = "clockify-webhook-token-0123456789"
ENTRY = {
    "id": "65f1c0ffee",
    "description": "Workshop",
    "userId": "u-1",
    "projectId": "p-1",
    "billable": True,
    "timeInterval": {"start": "2024-10-21T09:00:00Z", "end": "2024-10-21T10:30:00Z", "duration": "PT1H30M"},
    "workspaceId": "ws-1",
}


def _client() -> tuple[TestClient, FakePublisher]:
    publisher = FakePublisher()
    settings = GatewaySettings(webhook_secrets={"clockify": TOKEN}, rate_burst=1000, rate_per_s=1000.0)
    return TestClient(create_app(settings, publisher, clock=lambda: NOW)), publisher


def _post(client: TestClient, body: Any, event: str, token: str | None = TOKEN) -> Any:
    headers = {"Clockify-Webhook-Event-Type": event}
    if token is not None:
        headers["Clockify-Signature"] = token
    return client.post("/v1/webhooks/clockify", content=json.dumps(body).encode(), headers=headers)


TOKEN_CASES = {
    "valid-token": (TOKEN, 202),
    "valid-token-with-whitespace": (f" {TOKEN} ", 202),
    "wrong-token": ("clockify-webhook-token-0123456780", 401),
    "prefix-of-token": (TOKEN[:-1], 401),
    "empty-token": ("", 401),
    "missing-header": (None, 401),
}


@pytest.mark.parametrize(("token", "status"), TOKEN_CASES.values(), ids=TOKEN_CASES.keys())
def test_clockify_signature_is_the_webhooks_token(token: str | None, status: int) -> None:
    client, publisher = _client()
    response = _post(client, ENTRY, "NEW_TIME_ENTRY", token)
    assert response.status_code == status, response.text
    assert len(publisher.sent) == (1 if status == 202 else 0), "a refused delivery publishes nothing"


@pytest.mark.parametrize("event", ["NEW_TIME_ENTRY", "TIME_ENTRY_UPDATED", "TIMER_STOPPED"])
def test_entry_events_publish_the_entry(event: str) -> None:
    client, publisher = _client()
    assert _post(client, ENTRY, event).status_code == 202
    [entry] = publisher.sent
    assert isinstance(entry, TimeEntry)
    assert (entry.time_entry_id, entry.duration_seconds, entry.deleted) == ("clockify-65f1c0ffee", 5400, False)


def test_deletion_is_a_terminal_revision_after_the_last_update() -> None:
    client, publisher = _client()
    updated = {**ENTRY, "updatedAt": "2024-10-27T03:33:20Z"}  # updated in the very second it is deleted
    _post(client, updated, "TIME_ENTRY_UPDATED")
    _post(client, updated, "TIME_ENTRY_DELETED")
    update, deletion = publisher.sent
    assert isinstance(update, TimeEntry) and isinstance(deletion, TimeEntry)
    assert (update.deleted, deletion.deleted) == (False, True)
    assert deletion.time_entry_id == update.time_entry_id
    assert deletion.revision > update.revision, "the deletion outranks every earlier revision"


def test_deleting_a_running_timer_is_still_a_deletion() -> None:
    client, publisher = _client()
    running = {**ENTRY, "timeInterval": {"start": "2024-10-27T03:00:00Z", "end": None, "duration": None}}
    assert _post(client, running, "TIME_ENTRY_DELETED").status_code == 202
    assert [e.deleted for e in publisher.sent] == [True]


def test_approved_entry_carries_its_decision() -> None:
    client, publisher = _client()
    assert _post(client, {**ENTRY, "approvalStatus": "APPROVED"}, "TIME_ENTRY_UPDATED").status_code == 202
    assert [e.event_type for e in publisher.sent] == ["time-entry", "approval"]


@pytest.mark.parametrize(
    ("event", "body"),
    [
        ("APPROVAL_REQUEST_STATUS_UPDATED", {"id": "ar-1", "status": {"state": "APPROVED"}}),
        ("NEW_APPROVAL_REQUEST", {"id": "ar-1", "dateRange": {"start": "2024-10-21", "end": "2024-10-27"}}),
        ("NEW_PROJECT", {"id": "p-9", "name": "Relaunch"}),
        ("NEW_TIMER_STARTED", {**ENTRY, "timeInterval": {"start": "2024-10-27T03:00:00Z", "end": None}}),
    ],
    ids=["approval-status-covers-a-date-range", "approval-request", "other-event", "timer-started"],
)
def test_events_without_a_finished_entry_are_acknowledged_without_publishing(event: str, body: Any) -> None:
    client, publisher = _client()
    response = _post(client, body, event)
    assert response.status_code == 200 and response.json()["note"], response.text
    assert publisher.sent == []
