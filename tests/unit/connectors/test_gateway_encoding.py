"""The gateway's events written without a model are the bytes the model path gives, request for request.

The gateway writes each event from its canonical values with the compiled writers (`Emitter.prepare_values`:
the webhook entries' values from the mapper, `EntryMapper.encoded`; the events API's JSON objects as sent)
and builds the model only for values the writers cannot vouch for (docs/gateway.md, "Speed"). Each case
posts one request to two gateways around the real emitter's encoding (no broker: it points at a closed
port, the schema ids come from a mock registry, each record is "delivered" as it is produced): one
writing events that way, one building every model (`prepare_values` always None, the path before). The
answers (status and JSON body: event ids, or the error and every problem word for word) and the records
(topic, key, framed value, headers) must be equal. Cases: every webhook fixture entry of each tracker,
the example firm's events of every type, and hostile values that must still be refused the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from fastapi.testclient import TestClient

from backbone.domain.models import Event
from backbone.kafka.serde import SerdeCache
from backbone.settings import KafkaSettings, PostgresSettings, RegistrySettings, RuntimeSettings, Settings
from producers.emitter import Emitter, PreparedValues
from producers.gateway import GatewaySettings, create_app
from producers.gateway.security import timestamped_signature, toggl_signature
from tests.support import GATEWAY_TIME_ENTRY as ENTRY

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "connectors"
FIRM = ROOT / "examples" / "firm"
NOW = 1_730_000_000.0
KEY = "k_encoding_0123456789"
SECRETS = {"toggl": "toggl-secret", "harvest": "harvest-secret", "clockify": "clockify-token", "canonical": "c-secret"}
UNREACHABLE = Settings(
    # port 1 (tcpmux): nothing listens there; nothing is produced to it (records are captured)
    kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
    registry=RegistrySettings(),
    postgres=PostgresSettings(),
    runtime=RuntimeSettings(),
)


class _Quiet:
    """Takes librdkafka's log lines (its failed connections to the closed port): nothing to see here."""

    def log(self, level: int, message: str, *args: Any) -> None:
        pass


class Recording(Emitter):
    """The real emitter's encoding; each record captured (topic, key, framed value, headers) and reported
    delivered at once. `models_only`: every event built as a model, as before the written path."""

    def __init__(self, serdes: SerdeCache, *, models_only: bool) -> None:
        super().__init__(UNREACHABLE, serdes=serdes, delivery_timeout_s=1.0, poll_thread=False, logger=_Quiet())
        self.models_only = models_only
        self.records: list[tuple[str, bytes, bytes, Any]] = []
        self.written = 0

    def prepare_values(self, event_cls: type[Event], values: Any) -> PreparedValues | None:
        record = None if self.models_only else super().prepare_values(event_cls, values)
        self.written += record is not None
        return record

    def send_reported(self, records: Any, report: Callable[[Any, Any], None]) -> None:
        for record in records:
            self.records.append((record.serde.topic.name, record.key, record.serde.frame(record.body), record.headers))
            report(None, None)

    def poll(self, timeout: float = 0.0) -> int:
        return 0


class Pair:
    """The same request to a gateway writing events without models and to one building every model."""

    def __init__(self, **settings: Any) -> None:
        serdes = SerdeCache(MockSchemaRegistryClient({"url": "mock://"}))  # one registry: the same schema ids
        self.written, self.models = Recording(serdes, models_only=False), Recording(serdes, models_only=True)
        config = GatewaySettings(
            api_keys={"it": KEY}, webhook_secrets=SECRETS, rate_burst=10_000, rate_per_s=10_000.0, **settings
        )
        self.clients = [TestClient(create_app(config, e, clock=lambda: NOW)) for e in (self.written, self.models)]

    def close(self) -> None:
        for emitter in (self.written, self.models):
            emitter.close(timeout=0)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[Any, Any]:
        """Both gateways' answers and records for this request; asserts they are equal."""
        answers = []
        for client, emitter in zip(self.clients, (self.written, self.models), strict=True):
            before = len(emitter.records)
            response = client.post(path, content=body, headers=headers)
            answers.append((response.status_code, response.json(), emitter.records[before:]))
        assert answers[0] == answers[1]
        return answers[0]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    gateways = Pair()
    yield gateways
    gateways.close()


def _signed(source: str, body: bytes, event: str | None = None) -> dict[str, str]:
    if source == "toggl":
        return {"X-Webhook-Signature-256": toggl_signature(SECRETS["toggl"], body)}
    if source == "clockify":
        return {"Clockify-Signature": SECRETS["clockify"], "Clockify-Webhook-Event-Type": event or "NEW_TIME_ENTRY"}
    return {"Backbone-Signature": timestamped_signature(SECRETS[source], body, int(NOW))}


def _entries(name: str) -> list[dict[str, Any]]:
    document = json.loads((FIXTURES / name).read_text())
    return document if isinstance(document, list) else document["time_entries"]  # type: ignore[no-any-return]


def _webhook_cases() -> dict[str, tuple[str, Any, str | None]]:
    cases: dict[str, tuple[str, Any, str | None]] = {}
    for index, entry in enumerate(_entries("toggl_time_entries.json")):
        cases[f"toggl-{index}-api-entry"] = ("toggl", entry, None)
        for action in ("updated", "deleted"):
            cases[f"toggl-{index}-{action}"] = ("toggl", {"metadata": {"action": action}, "payload": entry}, None)
    for name in ("harvest_time_entries.json", "harvest_invoiced_api.json"):
        for index, entry in enumerate(_entries(name)):
            cases[f"{name.removesuffix('.json')}-{index}"] = ("harvest", entry, None)
    for index, entry in enumerate(_entries("clockify_time_entries.json")):
        for event in ("NEW_TIME_ENTRY", "TIME_ENTRY_UPDATED", "TIME_ENTRY_DELETED"):
            cases[f"clockify-{index}-{event.lower()}"] = ("clockify", entry, event)
    return cases


WEBHOOKS = _webhook_cases()


@pytest.mark.parametrize(("source", "body", "event"), WEBHOOKS.values(), ids=WEBHOOKS.keys())
def test_every_webhook_fixture_is_answered_and_published_alike(
    pair: Pair, source: str, body: Any, event: str | None
) -> None:
    raw = json.dumps(body).encode()
    pair.post(f"/v1/webhooks/{source}", raw, _signed(source, raw, event))


TOGGL_ENTRY = {
    "id": 42,
    "project_id": 7,
    "user_id": 9,
    "billable": True,
    "start": "2024-03-04T09:00:00Z",
    "duration": 1800,
    "description": "Design",
    "at": "2024-03-04T09:30:00Z",
}
HARVEST_ENTRY = _entries("harvest_time_entries.json")[0]
ODD_TOGGL = {
    "plain": {},
    "id-with-nul": {"id": "42\u0000"},
    "id-with-bidi-override": {"id": "42\u202egnp.exe"},
    "id-of-100k-characters": {"id": "4" * 100_000},
    "blank-user-id": {"user_id": "   "},
    "user-email-with-a-control-character": {"user_id": None, "user_email": "ann\u0007@example.com"},
    "project-name-with-a-line-separator": {"project_id": None, "project_name": "Web\u2028site", "client_name": "Acme"},
    "task-name-of-600-characters": {"task_name": "t" * 600},
    "notes-of-10k-characters-and-emoji": {"description": "\U0001f600 " * 5000},
    "notes-with-nul": {"description": "a\u0000b"},
    "duration-1e20": {"duration": 1e20},
    "duration-2^63": {"duration": 2**63},
    "duration-as-text": {"duration": "1800"},
    "start-year-1-with-offset": {"start": "0001-01-01T00:00:00+05:00"},
    "at-with-microseconds-and-offset": {"at": "2024-03-04T09:30:00.123456+05:30"},
    "at-beyond-32-bit-revisions": {"at": "2088-02-01T00:00:00Z"},
    "at-in-year-9999": {"at": "9999-12-31T23:59:59Z"},
    "billable-as-text": {"billable": "yes"},
    "running": {"duration": -1},
}
ODD_HARVEST = {
    "hours-1e300": {"hours": 1e300},
    "hours-text-1e300": {"hours": "1e300"},
    "hours-negative": {"hours": -1.5},
    "user-id-with-nul": {"user": {"id": "1\u0000"}},
    "updated-at-year-1-with-offset": {"updated_at": "0001-01-01T00:30:00+01:00"},
    "approved-and-invoiced": {"is_closed": True, "is_billed": True, "invoice": {"id": 9, "number": "INV\u202e1"}},
}


@pytest.mark.parametrize("fields", ODD_TOGGL.values(), ids=ODD_TOGGL.keys())
def test_odd_and_hostile_toggl_values_are_judged_alike(pair: Pair, fields: dict[str, Any]) -> None:
    raw = json.dumps({"metadata": {"action": "updated"}, "payload": {**TOGGL_ENTRY, **fields}}).encode()
    pair.post("/v1/webhooks/toggl", raw, _signed("toggl", raw))


@pytest.mark.parametrize("fields", ODD_HARVEST.values(), ids=ODD_HARVEST.keys())
def test_odd_and_hostile_harvest_values_are_judged_alike(pair: Pair, fields: dict[str, Any]) -> None:
    raw = json.dumps({**HARVEST_ENTRY, **fields}).encode()
    pair.post("/v1/webhooks/harvest", raw, _signed("harvest", raw))


def _firm(file: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIRM / file).read_text().splitlines()[:3] if line.strip()]


FIRM_EVENTS = {
    "client": "clients.jsonl",
    "project": "projects.jsonl",
    "worker": "workers.jsonl",
    "contract": "contracts.jsonl",
    "time-entry": "time-entries.jsonl",
    "approval": "approvals.jsonl",
}


@pytest.mark.parametrize(("event_type", "file"), FIRM_EVENTS.items(), ids=FIRM_EVENTS.keys())
def test_the_example_firms_events_are_answered_and_published_alike(pair: Pair, event_type: str, file: str) -> None:
    events = _firm(file)
    for body in (events[0], events):
        raw = json.dumps(body).encode()
        status, _, records = pair.post(f"/v1/events/{event_type}", raw, {"X-API-Key": KEY})
        assert status == 202 and records


ODD_EVENTS: dict[str, tuple[str, Any]] = {
    "entry-without-envelope": ("time-entry", ENTRY),
    "entry-with-its-own-ids": ("time-entry", {**ENTRY, "event_id": "e-1", "correlation_id": "c-1"}),
    "entry-with-an-unknown-field": ("time-entry", {**ENTRY, "colour": "red"}),
    "entry-without-a-worker": ("time-entry", {k: v for k, v in ENTRY.items() if k != "worker_id"}),
    "entry-revision-2^31-in-a-batch": ("time-entry", [ENTRY, {**ENTRY, "time_entry_id": "H-2", "revision": 2**31}]),
    "entry-duration-2^63-in-a-batch": ("time-entry", [ENTRY, {**ENTRY, "duration_seconds": 2**63}]),
    "entry-year-1-instant-with-offset": ("time-entry", {**ENTRY, "occurred_at": "0001-01-01T00:30:00+01:00"}),
    "entry-instant-in-another-shape": ("time-entry", {**ENTRY, "occurred_at": "2024-03-05 08:00:00+00:00"}),
    "entry-id-with-nul": ("time-entry", {**ENTRY, "worker_id": "W\u00001"}),
    "entry-id-with-escape": ("time-entry", {**ENTRY, "project_id": "P\u001b[31m"}),
    "entry-id-with-bidi-override": ("time-entry", {**ENTRY, "time_entry_id": "H-1\u202egnp.exe"}),
    "entry-blank-id": ("time-entry", {**ENTRY, "worker_id": "   "}),
    "entry-id-of-100k-characters": ("time-entry", {**ENTRY, "time_entry_id": "x" * 100_000}),
    "entry-billable-as-text": ("time-entry", {**ENTRY, "billable": "true"}),
    "twenty-entries-encoded-off-the-loop": (
        "time-entry",
        [{**ENTRY, "time_entry_id": f"H-{i}", "notes": f"n {i}"} for i in range(20)],
    ),
    "twenty-entries-one-refused": (
        "time-entry",
        [{**ENTRY, "time_entry_id": f"H-{i}", "revision": 2**31 if i == 17 else 1} for i in range(20)],
    ),
}
WORKER = _firm("workers.jsonl")[0]
ODD_EVENTS |= {
    "worker-cost-rate-1e30": ("worker", {**WORKER, "cost_rate": "1E+30"}),
    "worker-cost-rate-in-arabic-indic-digits": ("worker", {**WORKER, "cost_rate": "\u0668\u0660"}),
    "worker-cost-rate-as-an-integer": ("worker", {**WORKER, "cost_rate": 80}),
    "worker-cost-rate-as-a-float": ("worker", {**WORKER, "cost_rate": 80.5}),
    "worker-cost-rate-with-five-places": ("worker", {**WORKER, "cost_rate": "80.12345"}),
}


@pytest.mark.parametrize(("event_type", "body"), ODD_EVENTS.values(), ids=ODD_EVENTS.keys())
def test_odd_and_hostile_events_are_judged_alike(pair: Pair, event_type: str, body: Any) -> None:
    raw = json.dumps(body).encode()
    pair.post(f"/v1/events/{event_type}", raw, {"X-API-Key": KEY})


def test_the_canonical_webhook_is_answered_and_published_alike(pair: Pair) -> None:
    good = {"event_type": "time-entry", "event": ENTRY}
    for items in ([good], [good, {"event_type": "time-entry", "event": {**ENTRY, "revision": 2**31}}]):
        raw = json.dumps(items).encode()
        pair.post("/v1/webhooks/canonical", raw, _signed("canonical", raw))


def test_the_written_path_is_taken(pair: Pair) -> None:
    """The comparisons above compare something: plain values are written without a model."""
    raw = json.dumps({"metadata": {"action": "updated"}, "payload": TOGGL_ENTRY | {"id": 4242}}).encode()
    before = pair.written.written
    status, _, _ = pair.post("/v1/webhooks/toggl", raw, _signed("toggl", raw))
    raw = json.dumps({**ENTRY, "time_entry_id": "H-written"}).encode()
    pair.post("/v1/events/time-entry", raw, {"X-API-Key": KEY})
    raw = json.dumps({"event_type": "time-entry", "event": {**ENTRY, "time_entry_id": "H-canonical"}}).encode()
    pair.post("/v1/webhooks/canonical", raw, _signed("canonical", raw))
    assert status == 202 and pair.written.written == before + 3
    assert pair.models.written == 0


def test_an_identity_table_maps_written_events_alike() -> None:
    gateways = Pair(identity_file=FIXTURES / "identity_by_client.csv")
    try:
        for source, body, event in WEBHOOKS.values():
            raw = json.dumps(body).encode()
            gateways.post(f"/v1/webhooks/{source}", raw, _signed(source, raw, event))
    finally:
        gateways.close()
