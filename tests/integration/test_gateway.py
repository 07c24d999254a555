"""The gateway against the real broker and schema registry: 202 means on the broker, refusals publish
nothing, a bounded loopback flood gets 429s without losing anything accepted, and schemathesis finds no
5xx or schema violation in the OpenAPI contract.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from backbone.kafka import topics as catalog
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.settings import Settings
from producers.emitter import Emitter
from producers.gateway import GatewaySettings, create_app
from producers.gateway.security import toggl_signature
from tests.support import GATEWAY_TIME_ENTRY as ENTRY
from tests.support import unique_name, wait_until

pytestmark = pytest.mark.integration

KEY = "k_integration_key"
SECRET = "toggl-integration-secret"


@pytest.fixture
def topics(bootstrap: str) -> Iterator[dict[str, catalog.Topic]]:
    """A fresh topic per input event type, shaped like its catalog topic."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    made = {
        t.event_type: dataclasses.replace(t, name=unique_name(f"gw-{t.event_type}"), partitions=2)
        for t in catalog.EVENT_TOPICS[:6]
        if t.event_type
    }
    for future in admin.create_topics([NewTopic(t.name, 2, 1) for t in made.values()]).values():
        future.result(timeout=30)
    yield made
    admin.delete_topics([t.name for t in made.values()])


@pytest.fixture
def emitter(settings: Settings, topics: dict[str, catalog.Topic]) -> Iterator[Emitter]:
    with Emitter(settings, topics=topics, delivery_timeout_s=20) as emitter:
        yield emitter


def read_topic(settings: Settings, topic: catalog.Topic, expected: int, timeout: float = 30) -> list[Any]:
    """Every event on `topic`, waiting (with a deadline) until at least `expected` arrived."""
    serde = SerdeCache(registry_client(settings.registry.client_config())).for_topic(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.servers,
            "group.id": unique_name("gw-read"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic.name, p, 0) for p in range(topic.partitions)])
    events: list[Any] = []

    def drained() -> bool:
        for message in consumer.consume(500, timeout=0.5):
            if message.error() is None:
                events.append(serde.decode(message))
        return len(events) >= expected

    try:
        wait_until(drained, timeout=timeout, message=f"{expected} events on {topic.name}")
        for message in consumer.consume(500, timeout=1.0):  # anything beyond `expected` is a duplicate
            if message.error() is None:
                events.append(serde.decode(message))
    finally:
        consumer.close()
    return events


class LiveGateway:
    """uvicorn serving the app on a free loopback port in a thread (stopped by should_exit, no signals)."""

    def __init__(self, app: Any) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=15, message="gateway started")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def _gateway_settings(**overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        **{
            "api_keys": {"it": KEY},
            "webhook_secrets": {"toggl": SECRET},
            "rate_burst": 10_000,
            "rate_per_s": 10_000.0,
            "refused_burst": 10_000,  # schemathesis sends bad credentials on purpose, many times
            **overrides,
        }
    )


def test_202_means_the_events_are_on_the_broker(
    settings: Settings, emitter: Emitter, topics: dict[str, catalog.Topic]
) -> None:
    app = create_app(_gateway_settings(), emitter)
    batch = [{**ENTRY, "time_entry_id": f"H-{i}"} for i in range(5)]
    with LiveGateway(app) as url:
        response = httpx.post(f"{url}/v1/events/time-entry", json=batch, headers={"X-API-Key": KEY}, timeout=30)
    assert response.status_code == 202, response.text
    on_broker = read_topic(settings, topics["time-entry"], 5)
    assert sorted(e.event_id for e in on_broker) == sorted(response.json()["event_ids"])


def test_signed_webhook_is_published_and_bad_signatures_publish_nothing(
    settings: Settings, emitter: Emitter, topics: dict[str, catalog.Topic]
) -> None:
    body = json.dumps(
        {
            "metadata": {"action": "created"},
            "payload": {
                "id": 42,
                "project_id": 7,
                "user_id": 9,
                "billable": True,
                "start": "2024-03-04T09:00:00Z",
                "duration": 1800,
                "at": "2024-03-04T09:30:00Z",
            },
        }
    ).encode()
    app = create_app(_gateway_settings(), emitter)
    with LiveGateway(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        refused = [
            client.post("/v1/webhooks/toggl", content=body, headers={"X-Webhook-Signature-256": sig}).status_code
            for sig in (toggl_signature("wrong", body), toggl_signature(SECRET, body + b" "), "")
        ]
        accepted = client.post(
            "/v1/webhooks/toggl", content=body, headers={"X-Webhook-Signature-256": toggl_signature(SECRET, body)}
        )
        replayed = client.post(
            "/v1/webhooks/toggl", content=body, headers={"X-Webhook-Signature-256": toggl_signature(SECRET, body)}
        )
    assert refused == [401, 401, 401]
    assert (accepted.status_code, replayed.status_code) == (202, 202)
    on_broker = read_topic(settings, topics["time-entry"], 1)
    assert [e.time_entry_id for e in on_broker] == ["toggl-42"], "one record: refusals and the replay add none"


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.slow
def test_bounded_flood_gets_429s_keeps_memory_bounded_and_loses_nothing_accepted(
    settings: Settings, emitter: Emitter, topics: dict[str, catalog.Topic]
) -> None:
    total, concurrency = 2000, 16
    # A rate far below what even a slow machine serves, so the flood exceeds it however fast the run is.
    app = create_app(_gateway_settings(rate_per_s=5.0, rate_burst=10, idempotency_max_keys=20), emitter)
    accepted_ids: list[str] = []
    statuses: dict[int, int] = {}
    rss_before = _rss_kib()

    async def flood(url: str) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def worker(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                response = await client.post(
                    "/v1/events/time-entry",
                    json={**ENTRY, "time_entry_id": f"F-{i}"},
                    headers={"X-API-Key": KEY, "Idempotency-Key": f"flood-{i}"},
                )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    accepted_ids.extend(response.json()["event_ids"])
                elif response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1

        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(concurrency))), timeout=120)

    with LiveGateway(app) as url:
        asyncio.run(flood(url))
    rss_growth_mib = (_rss_kib() - rss_before) / 1024
    assert set(statuses) <= {202, 429}, statuses
    assert statuses.get(429, 0) > 0 and statuses.get(202, 0) > 0, statuses
    assert len(app.state.gateway.idempotency) <= 20, "idempotency memory is bounded"
    assert rss_growth_mib < 150, f"RSS grew {rss_growth_mib:.0f} MiB"
    on_broker = {e.event_id for e in read_topic(settings, topics["time-entry"], len(accepted_ids), timeout=60)}
    assert set(accepted_ids) <= on_broker, "every accepted event is on the broker"


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    return value


def test_schemathesis_finds_no_server_errors_or_schema_violations(emitter: Emitter) -> None:
    app = create_app(_gateway_settings(), emitter)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @hypothesis_settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case: Any) -> None:
            # JSON Schema's "integer" admits 3.0, which the canonical contract (like `backbone emit`) rejects
            # on purpose; JSON Schema cannot say "no fraction", so the generated client writes integers as such.
            case.body = _integral_floats_as_ints(case.body)
            case.call_and_validate(headers={"X-API-Key": KEY})

        try:
            check()
        except Exception as error:
            failures.append(f"{op.method.upper()} {op.path}: {error}")
    assert not failures, "\n\n".join(failures)
