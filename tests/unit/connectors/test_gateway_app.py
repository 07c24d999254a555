"""The gateway's HTTP contract with a fake publisher: auth, signatures, limits, idempotency, 202-after-delivery."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import structlog
from fastapi.testclient import TestClient

from backbone.domain.models import Event
from producers.emitter import with_envelope_defaults
from producers.gateway import GatewaySettings, create_app
from producers.gateway.security import timestamped_signature, toggl_signature
from tests.support import GATEWAY_TIME_ENTRY as ENTRY

NOW = 1_730_000_000.0
KEY = "k_test_0123456789"
TOGGL_SECRET = "toggl-secret"
HARVEST_SECRET = "harvest-secret"
TOGGL_BODY = json.dumps(
    {
        "event_id": 991,
        "metadata": {"action": "updated", "model": "time_entry"},
        "payload": {
            "id": 3341000001,
            "project_id": 190001,
            "user_id": 501,
            "billable": True,
            "start": "2024-03-04T09:00:00Z",
            "stop": "2024-03-04T10:00:00Z",
            "duration": 3600,
            "description": "Workshop",
            "at": "2024-03-04T10:00:05Z",
        },
    }
).encode()


class FakePublisher:
    """Records sends; each record's delivery is reported at once, as a failure, or when the test says
    (`pending`: one call each), as the test decides."""

    def __init__(self, outcome: str = "deliver") -> None:
        self.outcome = outcome
        self.sent: list[Event] = []
        self.pending: list[Callable[[], None]] = []
        self.lock = threading.Lock()

    def prepare(self, event: Event, headers: Any = None) -> Event:
        return with_envelope_defaults(event)

    def prepare_values(self, event_cls: type[Event], values: Any) -> None:
        return None  # every event as a model; the written records are tests/unit/connectors/test_gateway_encoding.py

    def frames_known(self, records: Any) -> bool:
        return True

    def poll(self, timeout: float) -> int:
        return 0  # reports are made at once, or by the test

    def send_reported(self, events: list[Event], report: Callable[[Any, Any], None]) -> None:
        for event in events:
            self._send(event, report)

    def _send(self, event: Event, report: Callable[[Any, Any], None]) -> None:
        with self.lock:
            self.sent.append(event)
        if self.outcome == "deliver":
            report(None, None)
        elif self.outcome == "fail":
            report(RuntimeError("broker down"), None)
        else:
            self.pending.append(lambda: report(None, None))


def _settings(**overrides: Any) -> GatewaySettings:
    base: dict[str, Any] = {
        "api_keys": {"erp-sync": KEY},
        "webhook_secrets": {"toggl": TOGGL_SECRET, "harvest": HARVEST_SECRET},
        "rate_burst": 1000,
        "rate_per_s": 1000.0,
        "delivery_timeout_s": 2.0,
    }
    return GatewaySettings(**{**base, **overrides})


def _client(publisher: FakePublisher | None = None, **overrides: Any) -> tuple[TestClient, FakePublisher]:
    publisher = publisher or FakePublisher()
    app = create_app(_settings(**overrides), publisher, clock=lambda: NOW)
    return TestClient(app), publisher


AUTH = {"Authorization": f"Bearer {KEY}"}


# --- webhook signatures -----------------------------------------------------------------------------


def _toggl_headers(body: bytes, secret: str = TOGGL_SECRET) -> dict[str, str]:
    return {"X-Webhook-Signature-256": toggl_signature(secret, body)}


def _stamped_headers(body: bytes, *, secret: str = HARVEST_SECRET, at: float = NOW) -> dict[str, str]:
    return {"Backbone-Signature": timestamped_signature(secret, body, int(at))}


HARVEST_BODY = json.dumps(
    {
        "id": 77,
        "spent_date": "2024-03-04",
        "hours": 1.25,
        "billable": True,
        "is_closed": True,
        "updated_at": "2024-03-05T08:00:00Z",
        "user": {"id": 1, "name": "Ann"},
        "project": {"id": 2, "code": "WR-01"},
    }
).encode()

SIGNATURE_CASES: dict[str, tuple[str, bytes, Callable[[bytes], dict[str, str]], int]] = {
    # source, body, headers, expected status (Toggl bodies are one entry; the Harvest one is approved: 2 events)
    "toggl-valid": ("toggl", TOGGL_BODY, _toggl_headers, 202),
    "toggl-wrong-secret": ("toggl", TOGGL_BODY, lambda b: _toggl_headers(b, "guess"), 401),
    "toggl-altered-body": ("toggl", TOGGL_BODY, lambda b: _toggl_headers(b.replace(b"3600", b"7200")), 401),
    "toggl-missing-header": ("toggl", TOGGL_BODY, lambda b: {}, 401),
    "toggl-malformed-header": ("toggl", TOGGL_BODY, lambda b: {"X-Webhook-Signature-256": "md5=abc"}, 401),
    "toggl-uppercase-hex-accepted": (
        "toggl",
        TOGGL_BODY,
        lambda b: {"X-Webhook-Signature-256": toggl_signature(TOGGL_SECRET, b).upper().replace("SHA256=", "sha256=")},
        202,
    ),
    "stamped-valid": ("harvest", HARVEST_BODY, _stamped_headers, 202),
    "stamped-wrong-secret": ("harvest", HARVEST_BODY, lambda b: _stamped_headers(b, secret="guess"), 401),
    "stamped-altered-body": ("harvest", HARVEST_BODY, lambda b: _stamped_headers(b.replace(b"1.25", b"9.25")), 401),
    "stamped-stale-timestamp": ("harvest", HARVEST_BODY, lambda b: _stamped_headers(b, at=NOW - 301), 401),
    "stamped-future-timestamp": ("harvest", HARVEST_BODY, lambda b: _stamped_headers(b, at=NOW + 301), 401),
    "stamped-within-tolerance": ("harvest", HARVEST_BODY, lambda b: _stamped_headers(b, at=NOW - 299), 202),
    "stamped-missing-header": ("harvest", HARVEST_BODY, lambda b: {}, 401),
    "stamped-no-v1": ("harvest", HARVEST_BODY, lambda b: {"Backbone-Signature": f"t={int(NOW)}"}, 401),
    "stamped-rotating-secrets": (
        "harvest",
        HARVEST_BODY,
        lambda b: {
            "Backbone-Signature": (
                _stamped_headers(b, secret="old")["Backbone-Signature"]
                + ",v1="
                + _stamped_headers(b)["Backbone-Signature"].split("v1=")[1]
            )
        },
        202,
    ),
}


@pytest.mark.parametrize(("source", "body", "headers", "status"), SIGNATURE_CASES.values(), ids=SIGNATURE_CASES.keys())
def test_webhook_signatures(source: str, body: bytes, headers: Callable[[bytes], dict[str, str]], status: int) -> None:
    client, publisher = _client()
    response = client.post(f"/v1/webhooks/{source}", content=body, headers=headers(body))
    assert response.status_code == status, response.text
    published = {"toggl": 1, "harvest": 2}[source] if status == 202 else 0
    assert len(publisher.sent) == published, "a refused delivery publishes nothing"


def test_harvest_webhook_publishes_entry_and_approval() -> None:
    client, publisher = _client()
    response = client.post("/v1/webhooks/harvest", content=HARVEST_BODY, headers=_stamped_headers(HARVEST_BODY))
    assert response.status_code == 202
    assert [e.event_type for e in publisher.sent] == ["time-entry", "approval"]
    assert response.json()["event_ids"] == [e.event_id for e in publisher.sent]


def test_replayed_delivery_gets_the_same_answer_and_publishes_once() -> None:
    client, publisher = _client()
    first = client.post("/v1/webhooks/toggl", content=TOGGL_BODY, headers=_toggl_headers(TOGGL_BODY))
    again = client.post("/v1/webhooks/toggl", content=TOGGL_BODY, headers=_toggl_headers(TOGGL_BODY))
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["event_ids"] == first.json()["event_ids"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(publisher.sent) == 1


def test_concurrent_duplicate_deliveries_publish_once() -> None:
    publisher = FakePublisher("hold")
    app = create_app(_settings(), publisher, clock=lambda: NOW)
    store = app.state.gateway.idempotency
    original_begin = store.begin

    async def scenario() -> list[httpx.Response]:
        loop = asyncio.get_running_loop()
        all_arrived, first_sent = asyncio.Event(), asyncio.Event()
        arrivals = []

        def counting_begin(key: str, body_hash: bytes) -> Any:
            arrivals.append(key)
            if len(arrivals) == 5:
                all_arrived.set()
            return original_begin(key, body_hash)

        store.begin = counting_begin
        original_send = publisher.send_reported

        def signalling_send(events: list[Event], report: Callable[[Any, Any], None]) -> None:
            original_send(events, report)
            loop.call_soon_threadsafe(first_sent.set)

        publisher.send_reported = signalling_send  # type: ignore[method-assign]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            tasks = [
                asyncio.ensure_future(
                    client.post("/v1/webhooks/toggl", content=TOGGL_BODY, headers=_toggl_headers(TOGGL_BODY))
                )
                for _ in range(5)
            ]
            await asyncio.wait_for(asyncio.gather(all_arrived.wait(), first_sent.wait()), timeout=10)
            publisher.pending[0]()  # only now does Kafka "confirm" the first delivery
            return await asyncio.gather(*tasks)

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [202] * 5
    assert len(publisher.sent) == 1
    assert len({tuple(r.json()["event_ids"]) for r in responses}) == 1


def test_toggl_validation_ping_is_answered_without_publishing() -> None:
    client, publisher = _client()
    body = b'{"payload": "ping", "validation_code": "abc-123"}'
    response = client.post("/v1/webhooks/toggl", content=body, headers=_toggl_headers(body))
    assert (response.status_code, response.json()["validation_code"]) == (200, "abc-123")
    assert publisher.sent == []


def test_running_entry_is_acknowledged_with_nothing_published() -> None:
    client, publisher = _client()
    body = TOGGL_BODY.replace(b'"duration": 3600', b'"duration": -1')
    response = client.post("/v1/webhooks/toggl", content=body, headers=_toggl_headers(body))
    assert response.status_code == 200 and "still running" in response.json()["note"]
    assert publisher.sent == []


def test_unconfigured_source_is_not_found() -> None:
    client, _ = _client()
    assert client.post("/v1/webhooks/clockify", content=b"{}").status_code == 404


# --- API keys, bodies, limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({"X-API-Key": KEY[:-1]}, 401),
        ({"Authorization": f"Bearer {KEY}"}, 202),
        ({"X-API-Key": KEY}, 202),
    ],
    ids=["missing", "wrong-bearer", "prefix-of-key", "bearer", "x-api-key"],
)
def test_api_keys(headers: dict[str, str], status: int) -> None:
    client, publisher = _client()
    assert client.post("/v1/events/time-entry", json=ENTRY, headers=headers).status_code == status
    assert len(publisher.sent) == (1 if status == 202 else 0)


def test_batch_is_published_whole_and_answered_after_delivery() -> None:
    client, publisher = _client()
    batch = [{**ENTRY, "time_entry_id": f"H-{i}"} for i in range(3)]
    response = client.post("/v1/events/time-entry", json=batch, headers=AUTH)
    assert response.status_code == 202
    assert response.json()["accepted"] == 3 and len(response.json()["event_ids"]) == 3
    assert [e.time_entry_id for e in publisher.sent] == ["H-0", "H-1", "H-2"]  # type: ignore[attr-defined]


def test_invalid_events_are_422_with_places_and_nothing_is_published() -> None:
    client, publisher = _client()
    batch = [ENTRY, {**ENTRY, "duration_seconds": -5}, {**ENTRY, "billable": "perhaps", "extra": 1}]
    response = client.post("/v1/events/time-entry", json=batch, headers=AUTH)
    assert response.status_code == 422
    fields = {(p["index"], p["field"]) for p in response.json()["problems"]}
    assert {(1, "duration_seconds"), (2, "billable"), (2, "extra")} <= fields
    assert publisher.sent == []


@pytest.mark.parametrize("body", [b"not json", b"[]", b'"text"'], ids=["not-json", "empty-batch", "scalar"])
def test_malformed_bodies_are_422(body: bytes) -> None:
    client, _ = _client()
    assert client.post("/v1/events/time-entry", content=body, headers=AUTH).status_code == 422


def test_oversized_bodies_are_413_before_reading() -> None:
    client, publisher = _client(max_body_bytes=1000)
    big = [{**ENTRY, "notes": "x" * 2000}]
    assert client.post("/v1/events/time-entry", json=big, headers=AUTH).status_code == 413

    def chunks():  # no Content-Length: the limit applies while streaming
        yield b"[" + b" " * 900
        yield b" " * 900 + b"]"

    assert client.post("/v1/events/time-entry", content=chunks(), headers=AUTH).status_code == 413
    assert publisher.sent == []


def test_rate_limit_answers_429_with_retry_after_per_key() -> None:
    client, _publisher = _client(rate_burst=3, rate_per_s=0.5, api_keys={"a": KEY, "b": "other-key"})
    statuses = [client.post("/v1/events/time-entry", json=ENTRY, headers=AUTH).status_code for _ in range(5)]
    assert statuses == [202, 202, 202, 429, 429]
    limited = client.post("/v1/events/time-entry", json=ENTRY, headers=AUTH)
    assert int(limited.headers["Retry-After"]) >= 1
    other = client.post("/v1/events/time-entry", json=ENTRY, headers={"X-API-Key": "other-key"})
    assert other.status_code == 202, "one caller's flood does not limit another"


def test_idempotency_key_replays_the_first_response() -> None:
    client, publisher = _client()
    headers = {**AUTH, "Idempotency-Key": "req-1"}
    first = client.post("/v1/events/time-entry", json=ENTRY, headers=headers)
    again = client.post("/v1/events/time-entry", json=ENTRY, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["event_ids"] == again.json()["event_ids"]
    assert len(publisher.sent) == 1
    other = client.post("/v1/events/time-entry", json={**ENTRY, "duration_seconds": 1}, headers=headers)
    assert other.status_code == 422 and "different body" in other.json()["error"]


def test_no_delivery_report_means_503_and_the_key_stays_usable() -> None:
    failing = FakePublisher("fail")
    client, _ = _client(failing)
    headers = {**AUTH, "Idempotency-Key": "req-2"}
    response = client.post("/v1/events/time-entry", json=ENTRY, headers=headers)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    failing.outcome = "deliver"
    assert client.post("/v1/events/time-entry", json=ENTRY, headers=headers).status_code == 202


def test_delivery_timeout_is_503() -> None:
    client, _publisher = _client(FakePublisher("hold"), delivery_timeout_s=0.05)
    assert client.post("/v1/events/time-entry", json=ENTRY, headers=AUTH).status_code == 503


def test_health_readiness_and_metrics() -> None:
    client, _ = _client()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.post("/v1/events/time-entry", json=ENTRY, headers=AUTH)
    text = client.get("/metrics").text
    assert 'gateway_events_published_total{event_type="time-entry"} 1.0' in text
    assert 'gateway_requests_total{route="/v1/events/time-entry",status="202"} 1.0' in text
    not_ready = TestClient(create_app(_settings(), FakePublisher(), ready=lambda: False))
    assert not_ready.get("/readyz").status_code == 503


def test_access_logs_carry_names_never_keys_or_signatures() -> None:
    client, _ = _client()
    with structlog.testing.capture_logs() as logs:
        client.post("/v1/events/time-entry", json=ENTRY, headers=AUTH)
        client.post("/v1/webhooks/toggl", content=TOGGL_BODY, headers=_toggl_headers(TOGGL_BODY, "wrong"))
    text = json.dumps(logs)
    assert KEY not in text and TOGGL_SECRET not in text and toggl_signature("wrong", TOGGL_BODY) not in text
    request_logs = [entry for entry in logs if entry["event"] == "request"]
    assert request_logs[0]["principal"] == "erp-sync" and request_logs[0]["status"] == 202


def test_settings_hide_secrets() -> None:
    settings = _settings()
    assert KEY not in repr(settings) and TOGGL_SECRET not in repr(settings)


# --- the lean path answers as FastAPI did ---------------------------------------------------------


def test_the_lean_routes_stay_in_the_openapi_document() -> None:
    client, _ = _client()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/webhooks/{source}", "/v1/events/time-entry"} <= set(paths)
    assert paths["/v1/webhooks/{source}"]["post"]["parameters"][0]["schema"]["enum"] == [
        "toggl",
        "clockify",
        "harvest",
        "canonical",
    ]


@pytest.mark.parametrize(
    ("method", "path", "status", "route"),
    [
        ("POST", "/v1/webhooks/unknown", 422, "/v1/webhooks/{source}"),
        ("GET", "/v1/webhooks/toggl", 405, "/v1/webhooks/{source}"),
        ("POST", "/v1/events/no-such-type", 404, "unmatched"),
    ],
    ids=["unknown-source-validated-by-fastapi", "wrong-method", "unknown-event-type"],
)
def test_requests_off_the_lean_routes_are_answered_by_fastapi_and_logged_once(
    method: str, path: str, status: int, route: str
) -> None:
    client, publisher = _client()
    with structlog.testing.capture_logs() as logs:
        response = client.request(method, path, content=b"{}", headers=AUTH)
    assert response.status_code == status
    assert [(e["route"], e["status"]) for e in logs if e["event"] == "request"] == [(route, status)]
    assert publisher.sent == []


def test_an_unexpected_error_is_a_json_500_logged_once() -> None:
    def broken() -> bool:
        raise RuntimeError("probe failed")

    app = create_app(_settings(), FakePublisher(), ready=broken)
    with structlog.testing.capture_logs() as logs:
        response = TestClient(app, raise_server_exceptions=False).get("/readyz")
    assert (response.status_code, response.json()) == (500, {"error": "internal error", "problems": []})
    assert [e["status"] for e in logs if e["event"] == "request"] == [500]
    assert [e["error"] for e in logs if e["event"] == "request failed"] == ["probe failed"]


def test_a_repeated_header_counts_with_its_first_value_as_starlette_reads_it() -> None:
    client, publisher = _client()
    good, bad = _toggl_headers(TOGGL_BODY), _toggl_headers(TOGGL_BODY, "guess")
    name = "X-Webhook-Signature-256"
    first_good = client.post("/v1/webhooks/toggl", content=TOGGL_BODY, headers=[(name, good[name]), (name, bad[name])])
    first_bad = client.post(
        "/v1/webhooks/toggl", content=TOGGL_BODY + b" ", headers=[(name, bad[name]), (name, good[name])]
    )
    assert (first_good.status_code, first_bad.status_code) == (202, 401)
    assert len(publisher.sent) == 1
