"""A bulk emitter (`Emitter(bulk=True)`, what `backbone emit` and `backbone import` publish with) hears
only of failures, so what it did not hear of must really have been delivered: a record the broker never
takes is still a `DeliveryError` naming how many, never a silent success.

No broker runs here: the emitter points at a closed port with a one-second delivery timeout, and the
schema id comes from confluent-kafka's mock registry. Delivery to a real broker is
tests/integration/test_emit_hostile.py and test_emit_tail.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient

from backbone.domain.models import TimeEntry
from backbone.errors import BackboneError
from backbone.kafka.serde import SerdeCache, TopicSerde
from backbone.kafka.topics import TIME_ENTRIES
from backbone.settings import KafkaSettings, PostgresSettings, RegistrySettings, RuntimeSettings, Settings
from producers.emitter import DeliveryError, Emitter, encode_for_spool

ENTRY = TimeEntry.model_validate(
    {
        "occurred_at": "2026-11-02T09:30:00Z",
        "source_system": "toggl",
        "time_entry_id": "TE-1",
        "revision": 1,
        "worker_id": "W-1",
        "project_id": "P-1",
        "work_date": "2026-11-02",
        "duration_seconds": 900,
        "billable": True,
    }
)


@pytest.fixture
def unreachable() -> Iterator[Emitter]:
    # port 1 (tcpmux): nothing listens there, and it is far from the ephemeral range other tests use
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        registry=RegistrySettings(),
        postgres=PostgresSettings(),
        runtime=RuntimeSettings(),
    )
    serdes = SerdeCache(MockSchemaRegistryClient({"url": "mock://"}))
    emitter = Emitter(settings, serdes=serdes, delivery_timeout_s=1.0, bulk=True)
    yield emitter
    emitter.close(timeout=0)


def test_records_the_broker_never_took_are_a_delivery_error_not_a_success(unreachable: Emitter) -> None:
    encoded = encode_for_spool(ENTRY, TopicSerde(TIME_ENTRIES, None))  # type: ignore[arg-type]
    with pytest.raises(DeliveryError, match="3 of 3 records were not delivered"):
        unreachable.publish_encoded(TIME_ENTRIES, [encoded] * 3)


def test_a_bulk_emitter_refuses_sends_whose_futures_need_every_report(unreachable: Emitter) -> None:
    with pytest.raises(BackboneError, match="needs every delivery report"):
        unreachable.send(ENTRY)


def test_publishing_models_in_bulk_reports_undelivered_records_too(unreachable: Emitter) -> None:
    unreachable.ensure_topic = lambda topic, timeout=10.0: None  # type: ignore[method-assign]  # no broker to ask
    with pytest.raises(DeliveryError, match="2 of 2 records were not delivered"):
        unreachable.publish([ENTRY, ENTRY])
