"""The gateway under hostile input (issue 10, point 8), against the real broker and registry, over real HTTP.

Every case asserts the status and its reason, what reached the topic (nothing, or everything), and that
the process still serves a valid request afterwards. "Nothing reached the topic" is proved without
waiting out a timeout: the topics have one partition and the gateway one idempotent producer, so once a
valid *sentinel* event sent afterwards has arrived, anything an earlier request produced is before it.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from backbone.kafka import topics as catalog
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.settings import Settings
from producers.emitter import Emitter
from producers.gateway import GatewaySettings, create_app
from producers.gateway.security import timestamped_signature, toggl_signature
from producers.gateway.server import server_config
from tests.support import GATEWAY_TIME_ENTRY as ENTRY
from tests.support import unique_name, wait_until

pytestmark = pytest.mark.integration

KEY = "k_hostile_key"
TOGGL_SECRET = "toggl-hostile-secret"
STAMPED_SECRET = "stamped-hostile-secret"
WORKER = {
    "occurred_at": "2024-03-05T08:00:00Z",
    "source_system": "hr",
    "worker_id": "W-1",
    "name": "Ann",
    "role": "consultant",
    "employment_type": "EMPLOYEE",
    "cost_rate": "80.00",
    "cost_currency": "EUR",
    "active": True,
}


def toggl_body(**payload: Any) -> bytes:
    entry = {
        "id": 42,
        "project_id": 7,
        "user_id": 9,
        "billable": True,
        "start": "2024-03-04T09:00:00Z",
        "duration": 1800,
        "at": "2024-03-04T09:30:00Z",
        **payload,
    }
    return json.dumps({"metadata": {"action": "updated"}, "payload": entry}).encode()


def harvest_body(**fields: Any) -> bytes:
    entry = {
        "id": 77,
        "spent_date": "2024-03-04",
        "hours": 1.25,
        "billable": True,
        "updated_at": "2024-03-05T08:00:00Z",
        "user": {"id": 1},
        "project": {"id": 2},
        **fields,
    }
    return json.dumps(entry).encode()


def toggl_headers(body: bytes) -> dict[str, str]:
    return {"X-Webhook-Signature-256": toggl_signature(TOGGL_SECRET, body)}


def stamped_headers(body: bytes) -> dict[str, str]:
    return {"Backbone-Signature": timestamped_signature(STAMPED_SECRET, body, int(time.time()))}


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def topics(bootstrap: str) -> Iterator[dict[str, catalog.Topic]]:
    """A fresh one-partition topic per input event type (one partition: see the module docstring)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    made = {
        t.event_type: dataclasses.replace(t, name=unique_name(f"hostile-{t.event_type}"), partitions=1)
        for t in catalog.EVENT_TOPICS
        if t.event_type in ("time-entry", "worker", "approval")
    }
    for future in admin.create_topics([NewTopic(t.name, 1, 1) for t in made.values()]).values():
        future.result(timeout=30)
    yield made
    admin.delete_topics([t.name for t in made.values()])


class Live:
    """The gateway app served by uvicorn as `backbone run gateway` serves it, on a free loopback port."""

    def __init__(self, settings: Settings, topics: dict[str, catalog.Topic], **overrides: Any) -> None:
        self.settings, self.topics = settings, topics
        config = GatewaySettings(
            **{
                "api_keys": {"it": KEY},
                "webhook_secrets": {"toggl": TOGGL_SECRET, "harvest": STAMPED_SECRET, "canonical": STAMPED_SECRET},
                "webhook_schemes": {"toggl": "toggl"},
                "rate_per_s": 1000.0,
                "rate_burst": 1000,
                **overrides,
            }
        )
        # As `run_gateway` makes it: no polling thread, the event loop serves the delivery reports.
        self.emitter = Emitter(settings, topics=topics, delivery_timeout_s=20, poll_thread=False)
        self.app = create_app(config, self.emitter)
        self.server = uvicorn.Server(server_config(self.app, config, port=0))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.sentinels = 0

    def __enter__(self) -> Live:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=15, message="gateway started")
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.emitter.close()

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", {"X-API-Key": KEY})
        return self.http.post(path, **kwargs)

    def healthy_then_topic(self, event_type: str = "time-entry") -> list[Any]:
        """Assert the process still answers and publishes; the topic's events up to that sentinel, without it."""
        assert self.http.get("/healthz").status_code == 200
        self.sentinels += 1
        sentinel = {**ENTRY, "time_entry_id": f"SENTINEL-{self.sentinels}"}
        body = sentinel if event_type == "time-entry" else {**WORKER, "worker_id": f"SENTINEL-{self.sentinels}"}
        response = self.post(f"/v1/events/{event_type}", json=body)
        assert response.status_code == 202, response.text
        events = read_until(self.settings, self.topics[event_type], lambda e: e.key == f"SENTINEL-{self.sentinels}")
        return [e for e in events if not e.key.startswith("SENTINEL-")]

    def metric(self, route: str, status: int) -> float:
        line = f'gateway_requests_total{{route="{route}",status="{status}"}} '
        found = [row for row in self.http.get("/metrics").text.splitlines() if row.startswith(line)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def read_until(settings: Settings, topic: catalog.Topic, last: Any, timeout: float = 30) -> list[Any]:
    """Every event of a one-partition topic from the start up to the first one `last` accepts."""
    serde = SerdeCache(registry_client(settings.registry.client_config())).for_topic(topic)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.servers, "group.id": unique_name("hostile"), "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic.name, 0, 0)])
    events: list[Any] = []

    def reached() -> bool:
        for message in consumer.consume(500, timeout=0.5):
            if message.error() is None:
                events.append(serde.decode(message))
        return any(last(e) for e in events)

    try:
        wait_until(reached, timeout=timeout, message=f"the sentinel on {topic.name}")
    finally:
        consumer.close()
    return events[: next(i for i, e in enumerate(events) if last(e)) + 1]


@pytest.fixture
def live(settings: Settings, topics: dict[str, catalog.Topic]) -> Iterator[Live]:
    with Live(settings, topics) as gateway:
        yield gateway


# --- all or nothing -------------------------------------------------------------------------------


ALL_OR_NOTHING = {
    "cost-rate-1e30": ("worker", [WORKER, {**WORKER, "worker_id": "W-2", "cost_rate": "1E+30"}], "cost_rate"),
    "duration-2^63": ("time-entry", [ENTRY, {**ENTRY, "time_entry_id": "H-2", "duration_seconds": 2**63}], "duration"),
    "revision-2^31": ("time-entry", [ENTRY, {**ENTRY, "time_entry_id": "H-2", "revision": 2**31}], "revision"),
}


@pytest.mark.parametrize(("event_type", "batch", "field"), ALL_OR_NOTHING.values(), ids=ALL_OR_NOTHING.keys())
def test_a_batch_with_one_event_out_of_avro_range_publishes_none_of_it(
    live: Live, event_type: str, batch: list[dict[str, Any]], field: str
) -> None:
    response = live.post(f"/v1/events/{event_type}", json=batch)
    assert response.status_code == 422
    assert [p["index"] for p in response.json()["problems"]] == [1]
    assert field in response.json()["problems"][0]["field"]
    assert live.healthy_then_topic(event_type) == [], "the valid first event was not published either"


def test_a_canonical_webhook_batch_is_all_or_nothing_and_capped_like_the_events_api(
    settings: Settings, topics: dict[str, catalog.Topic]
) -> None:
    with Live(settings, topics, max_batch_events=3) as live:
        good = {"event_type": "time-entry", "event": ENTRY}
        bad = {"event_type": "time-entry", "event": {**ENTRY, "time_entry_id": "H-9", "revision": 2**31}}
        for items in ([good, bad], [good] * 4):
            body = json.dumps(items).encode()
            response = live.post("/v1/webhooks/canonical", content=body, headers=stamped_headers(body))
            assert response.status_code == 422, response.text
        assert "1 to 3 events" in response.json()["error"]
        assert live.healthy_then_topic() == []


def test_a_retry_after_503_waits_for_the_first_attempt_instead_of_publishing_again(
    settings: Settings, topics: dict[str, catalog.Topic]
) -> None:
    # The gateway waits 1 ms for the broker's acknowledgement, which cannot come that soon: the emitter
    # lingers 10 ms before it even sends. A first request learns the topic's schema id (a registry call off
    # the event loop, during which its acknowledgement could arrive); the batch after it is sent inline.
    with Live(settings, topics, delivery_timeout_s=0.001) as live:
        live.post("/v1/events/time-entry", json={**ENTRY, "time_entry_id": "WARM-UP"})
        batch = [{**ENTRY, "time_entry_id": f"R-{i}"} for i in range(3)]
        first = live.post("/v1/events/time-entry", json=batch)
        assert first.status_code == 503 and first.headers["Retry-After"] == "1"
        retried = wait_until(
            lambda: (r := live.post("/v1/events/time-entry", json=batch)).status_code == 202 and r,
            timeout=30,
            message="a retry answered 202",
        )
        assert retried.json()["replayed"] is True
        on_topic = read_until(settings, topics["time-entry"], lambda e: e.key == "R-2")
        published = [e.key for e in on_topic if e.key.startswith("R-")]
        assert published == ["R-0", "R-1", "R-2"], "published once, not once per attempt"


# --- no 500 from hostile input --------------------------------------------------------------------


def _raw_headers(**headers: bytes) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value) for name, value in headers.items()]


HOSTILE = {
    "t-with-400-digits": (
        "/v1/webhooks/harvest",
        harvest_body(),
        _raw_headers(Backbone_Signature=b"t=" + b"9" * 400 + b",v1=00"),
        401,
        "signature",
    ),
    "non-ascii-byte-in-toggl-signature": (
        "/v1/webhooks/toggl",
        toggl_body(),
        _raw_headers(X_Webhook_Signature_256=b"sha256=\xff\xfe"),
        401,
        "signature",
    ),
    "non-ascii-byte-in-api-key": (
        "/v1/events/time-entry",
        json.dumps(ENTRY).encode(),
        _raw_headers(X_API_Key=b"k_\xe9"),
        401,
        "API key",
    ),
    "decimal-1e30": (
        "/v1/events/worker",
        json.dumps({**WORKER, "cost_rate": "1E+30"}).encode(),
        None,
        422,
        "out of range",
    ),
    "decimal-in-arabic-indic-digits": (
        "/v1/events/worker",
        json.dumps({**WORKER, "cost_rate": "\u0668\u0660"}).encode(),
        None,
        422,
        "ASCII digits",
    ),
    "year-1-instant-with-offset": (
        "/v1/events/time-entry",
        json.dumps({**ENTRY, "occurred_at": "0001-01-01T00:30:00+01:00"}).encode(),
        None,
        422,
        "out of range",
    ),
    "toggl-duration-1e20": ("/v1/webhooks/toggl", toggl_body(duration=1e20), "toggl", 422, "duration"),
    "toggl-start-year-1-with-offset": (
        "/v1/webhooks/toggl",
        toggl_body(start="0001-01-01T00:00:00+05:00"),
        "toggl",
        422,
        "out of range",
    ),
    "harvest-hours-1e300": ("/v1/webhooks/harvest", harvest_body(hours=1e300), "stamped", 422, "out of range"),
    "harvest-hours-text-1e300": ("/v1/webhooks/harvest", harvest_body(hours="1e300"), "stamped", 422, "exponent"),
    "id-with-nul": (
        "/v1/events/time-entry",
        json.dumps({**ENTRY, "worker_id": "W\u00001"}).encode(),
        None,
        422,
        "control character",
    ),
    "id-with-control-character": (
        "/v1/events/time-entry",
        json.dumps({**ENTRY, "project_id": "P\u001b[31m"}).encode(),
        None,
        422,
        "control character",
    ),
    "id-with-bidi-override": (
        "/v1/events/time-entry",
        json.dumps({**ENTRY, "time_entry_id": "H-1\u202egnp.exe"}).encode(),
        None,
        422,
        "bidirectional",
    ),
    "blank-id": ("/v1/events/time-entry", json.dumps({**ENTRY, "worker_id": "   "}).encode(), None, 422, "blank"),
    "id-of-100k-characters": (
        "/v1/events/time-entry",
        json.dumps({**ENTRY, "time_entry_id": "x" * 100_000}).encode(),
        None,
        422,
        "longer than",
    ),
    "toggl-id-with-nul": ("/v1/webhooks/toggl", toggl_body(id="42\u0000"), "toggl", 422, "control character"),
    "idempotency-key-of-10k-characters": (
        "/v1/events/time-entry",
        json.dumps(ENTRY).encode(),
        _raw_headers(X_API_Key=KEY.encode(), Idempotency_Key=b"k" * 10_000),
        422,
        "Idempotency-Key",
    ),
}


@pytest.mark.parametrize(("path", "body", "headers", "status", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_is_a_4xx_with_a_reason_logged_counted_and_publishes_nothing(
    live: Live, path: str, body: bytes, headers: Any, status: int, reason: str
) -> None:
    if headers == "toggl":
        headers = toggl_headers(body)
    elif headers == "stamped":
        headers = stamped_headers(body)
    elif headers is None:
        headers = {"X-API-Key": KEY}
    route = "/v1/webhooks/{source}" if "webhooks" in path else path
    counted_before = live.metric(route, status)
    with structlog.testing.capture_logs() as logs:
        response = live.post(path, content=body, headers=headers)
        access = wait_until(
            lambda: [e for e in logs if e["event"] == "request" and e["route"] == route], timeout=10, message="a line"
        )
    assert response.status_code == status, response.text
    shown = json.dumps(response.json())
    assert reason in shown, shown
    assert len(shown) < 2000, "a refused value is not echoed back whole"
    assert [entry["status"] for entry in access] == [status]
    assert not [entry for entry in logs if entry.get("log_level") in ("error", "critical")]
    assert live.metric(route, status) == counted_before + 1
    assert live.healthy_then_topic() == []


# --- replay protection ----------------------------------------------------------------------------


def test_a_captured_toggl_delivery_resent_with_new_delivery_headers_is_not_published_again(live: Live) -> None:
    body = toggl_body()
    signed = toggl_headers(body)
    statuses = [
        live.post("/v1/webhooks/toggl", content=body, headers={**signed, **extra}).status_code
        for extra in ({}, {"Idempotency-Key": "attacker-1"}, {"X-Delivery-Id": "attacker-2"}, {"X-Toggl-Event-Id": "3"})
    ]
    assert statuses == [202, 202, 202, 202]
    assert [e.key for e in live.healthy_then_topic()] == ["toggl-42"], "published once"


def test_a_leaked_secret_flooding_from_elsewhere_does_not_starve_the_real_sender(
    settings: Settings, topics: dict[str, catalog.Topic]
) -> None:
    with Live(settings, topics, rate_per_s=0.5, rate_burst=3) as live:
        attacker = httpx.Client(base_url=live.url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with attacker:
            flood = []
            for i in range(8):
                body = toggl_body(id=1000 + i)
                flood.append(attacker.post("/v1/webhooks/toggl", content=body, headers=toggl_headers(body)).status_code)
        assert flood[:3] == [202] * 3 and set(flood[3:]) == {429}
        body = toggl_body(id=7)
        assert live.post("/v1/webhooks/toggl", content=body, headers=toggl_headers(body)).status_code == 202
        published = {e.key for e in live.healthy_then_topic()}
        assert published == {"toggl-1000", "toggl-1001", "toggl-1002", "toggl-7"}


def test_unauthenticated_and_badly_signed_requests_are_rate_limited_per_client(
    settings: Settings, topics: dict[str, catalog.Topic]
) -> None:
    with Live(settings, topics, refused_rate_per_s=0.1, refused_burst=5) as live:
        body = toggl_body()
        bad = [
            live.post("/v1/webhooks/toggl", content=body, headers=toggl_headers(body + b" ")).status_code,
            *(
                live.post("/v1/events/time-entry", json=ENTRY, headers={"X-API-Key": "guess"}).status_code
                for _ in range(6)
            ),
        ]
        assert bad[:5] == [401] * 5 and bad[5:] == [429, 429]
        limited = live.post("/v1/events/time-entry", json=ENTRY)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1, "even a good key from there"
        elsewhere = httpx.Client(base_url=live.url, transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        with elsewhere:
            assert elsewhere.post("/v1/events/time-entry", json=ENTRY, headers={"X-API-Key": KEY}).status_code == 202
        assert 'gateway_refused_total{reason="refusals_limited"} 3.0' in live.app.state.gateway.metrics.text()


# --- slow and vanishing clients -------------------------------------------------------------------


def _connect(live: Live) -> socket.socket:
    return socket.create_connection(("127.0.0.1", live.port), timeout=10)


def _closed_by_server(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket timeout bounds the wait)."""
    received = b""
    while chunk := conn.recv(4096):
        received += chunk
    return received


def _answer(conn: socket.socket) -> bytes:
    """One whole HTTP response: the head, then as many body bytes as its Content-Length says."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += conn.recv(4096) or b"\r\n\r\n"
    head, _, body = received.partition(b"\r\n\r\n")
    length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0)
    while len(body) < length and (chunk := conn.recv(4096)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_request_head_that_trickles_in_is_cut_off(settings: Settings, topics: dict[str, catalog.Topic]) -> None:
    with Live(settings, topics, header_timeout_s=0.5) as live, _connect(live) as conn:
        started = time.monotonic()
        conn.sendall(b"POST /v1/events/time-entry HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert _closed_by_server(conn) == b""
        assert time.monotonic() - started < 5
        assert live.healthy_then_topic() == []


@pytest.mark.parametrize("framing", ["content-length", "chunked-endless"])
def test_a_slow_or_endless_body_is_408_and_publishes_nothing(
    settings: Settings, topics: dict[str, catalog.Topic], framing: str
) -> None:
    with Live(settings, topics, body_timeout_s=0.5) as live, _connect(live) as conn:
        length = "Content-Length: 1000" if framing == "content-length" else "Transfer-Encoding: chunked"
        conn.sendall(f"POST /v1/events/time-entry HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n{length}\r\n\r\n".encode())
        conn.sendall(b"5\r\n[{}, \r\n" if framing == "chunked-endless" else b'[{"occ')
        answer = _answer(conn)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"not received within" in answer
        assert live.healthy_then_topic() == []


def test_a_client_that_hangs_up_mid_body_is_one_log_line(settings: Settings, topics: dict[str, catalog.Topic]) -> None:
    with Live(settings, topics) as live:
        with structlog.testing.capture_logs() as logs:
            with _connect(live) as conn:
                conn.sendall(
                    f"POST /v1/events/time-entry HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
                    "Content-Length: 1000\r\n\r\n[{".encode()
                )
                wait_until(lambda: live.app.state.gateway.metrics.in_flight() == 1, timeout=10, message="reading")
            wait_until(lambda: [e for e in logs if e["event"] == "request"], timeout=10, message="the access line")
        requests = [e for e in logs if e["event"] == "request"]
        assert [(e["status"], e["route"]) for e in requests] == [(499, "/v1/events/time-entry")]
        assert not [e for e in logs if e.get("exc_info") or e.get("log_level") == "error"]
        assert live.healthy_then_topic() == []


# --- bounded memory -------------------------------------------------------------------------------


def test_idempotency_memory_is_bounded_in_records_and_bytes(
    settings: Settings, topics: dict[str, catalog.Topic]
) -> None:
    with Live(settings, topics, idempotency_max_keys=50, idempotency_max_bytes=20_000) as live:
        for i in range(120):
            headers = {"X-API-Key": KEY, "Idempotency-Key": f"{i:0>200}"}
            assert (
                live.post("/v1/events/time-entry", json={**ENTRY, "revision": i + 1}, headers=headers).status_code
                == 202
            )
        store = live.app.state.gateway.idempotency
        assert len(store) <= 50 and store.bytes <= 20_000


# --- operator endpoints ---------------------------------------------------------------------------


def test_docs_are_served_without_a_cdn(live: Live) -> None:
    page = live.http.get("/docs")
    assert page.status_code == 200 and "/v1/events/time-entry" in page.text
    assert "<script" not in page.text and "cdn" not in page.text.lower()
    assert live.http.get("/openapi.json").json()["info"]["title"] == "backbone gateway"


def test_metrics_and_docs_can_be_off_or_behind_the_operator_key(
    settings: Settings, topics: dict[str, catalog.Topic]
) -> None:
    with Live(settings, topics, metrics="off", docs="off") as live:
        assert [live.http.get(p).status_code for p in ("/metrics", "/docs", "/openapi.json")] == [404, 404, 404]
    with Live(settings, topics, metrics="key", docs="key", operator_key="op-secret") as live:
        assert [live.http.get(p).status_code for p in ("/metrics", "/docs", "/openapi.json")] == [401, 401, 401]
        with_key = {"Authorization": "Bearer op-secret"}
        assert [live.http.get(p, headers=with_key).status_code for p in ("/metrics", "/docs")] == [200, 200]
        assert live.http.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
