"""Polling against the fake Harvest API into the real broker: across a restart, each change exactly once."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from fastapi.testclient import TestClient

from backbone.kafka import topics as catalog
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.settings import Settings
from producers.emitter import Emitter
from producers.identity import EntryMapper
from producers.polling import CursorFile, HarvestPoller
from tests.fixtures.connectors.fake_trackers import FakeTrackers
from tests.support import unique_name, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(bootstrap: str) -> Iterator[dict[str, catalog.Topic]]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    made = {
        t.event_type: dataclasses.replace(t, name=unique_name(f"poll-{t.event_type}"), partitions=2)
        for t in (catalog.TIME_ENTRIES, catalog.APPROVALS)
        if t.event_type
    }
    for future in admin.create_topics([NewTopic(t.name, 2, 1) for t in made.values()]).values():
        future.result(timeout=30)
    yield made
    admin.delete_topics([t.name for t in made.values()])


def on_broker(settings: Settings, topic: catalog.Topic, expected: int) -> list[Any]:
    serde = SerdeCache(registry_client(settings.registry.client_config())).for_topic(topic)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.servers, "group.id": unique_name("poll-read"), "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic.name, p, 0) for p in range(topic.partitions)])
    events: list[Any] = []

    def enough() -> bool:
        events.extend(serde.decode(m) for m in consumer.consume(500, timeout=0.5) if m.error() is None)
        return len(events) >= expected

    try:
        wait_until(enough, timeout=30, message=f"{expected} events on {topic.name}")
        events.extend(serde.decode(m) for m in consumer.consume(500, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    return events


def test_harvest_polling_across_a_restart_publishes_each_change_exactly_once(
    settings: Settings, topics: dict[str, catalog.Topic], tmp_path: Path
) -> None:
    fake, cursor = FakeTrackers(), CursorFile(tmp_path / "cursors" / "harvest.json")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for entry_id in (1, 2, 3):
        fake.put_harvest(entry_id, "2024-03-05T08:00:00Z")

    with Emitter(settings, topics=topics) as emitter:  # first process
        HarvestPoller(TestClient(fake.app), emitter, cursor, EntryMapper(), start).poll_once()

    fake.put_harvest(2, "2024-03-05T09:30:00Z", hours=3.0, closed=True)
    fake.put_harvest(4, "2024-03-05T09:30:00Z")
    with Emitter(settings, topics=topics) as emitter:  # after a restart: only the cursor file survived
        first = HarvestPoller(TestClient(fake.app), emitter, cursor, EntryMapper(), start).poll_once()
        again = HarvestPoller(TestClient(fake.app), emitter, cursor, EntryMapper(), start).poll_once()

    assert (first.published, again.published) == (3, 0)
    entries = on_broker(settings, topics["time-entry"], 5)
    keys = [(e.time_entry_id, e.revision) for e in entries]
    assert len(keys) == len(set(keys)) == 5, "each change exactly once"
    assert sorted({k[0] for k in keys}) == ["harvest-1", "harvest-2", "harvest-3", "harvest-4"]
    approvals = on_broker(settings, topics["approval"], 1)
    assert [(a.time_entry_id, a.decision.value) for a in approvals] == [("harvest-2", "APPROVED")]
