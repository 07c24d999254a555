"""A consumer that knows nothing of backbone reads what `backbone emit` wrote.

Only confluent-kafka's own `SchemaRegistryClient` and `AvroDeserializer` are used on the reading
side (writer schema from the registry, no backbone imports): this is the promise to other teams'
tooling that the wire format is plain Confluent Avro.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.conftest import registry_client_config
from tests.support import unique_name

pytestmark = pytest.mark.integration

CONTRACT = {
    "occurred_at": "2026-11-02T09:30:00Z",
    "source_system": "erp-sim",
    "contract_id": "K-9",
    "version": 2,
    "project_id": "P-9",
    "status": "ACTIVE",
    "effective_from": "2026-01-01",
    "currency": "EUR",
    "discount_percent": "7.5",
    "rate_card": [{"role": "Architect", "hourly_rate": "199.99"}],
}


def test_plain_confluent_consumer_reads_what_emit_wrote(
    bootstrap: str, registry_url: str, registry_credentials: dict[str, str], tmp_path: Path
) -> None:
    topic = unique_name("test-foreign-contracts")
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the topic exists
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(timeout=30)
    source = tmp_path / "contracts.jsonl"
    source.write_text(json.dumps(CONTRACT) + "\n")
    env = {
        **os.environ,
        "BACKBONE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BACKBONE_SCHEMA_REGISTRY_URL": registry_url,
    }
    command = [sys.executable, "-m", "backbone.cli", "emit", "contract", str(source), "--topic", topic, "-q"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("foreign")})
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        message = consumer.poll(30)
    finally:
        consumer.close()
    admin.delete_topics([topic])  # the record is in hand; the topic is no longer needed
    assert message is not None and message.error() is None
    # A consumer needs no more than the reader role.
    reader = registry_client_config(registry_url, registry_credentials["reader"])
    deserializer = AvroDeserializer(SchemaRegistryClient(reader))
    record = deserializer(message.value(), SerializationContext(topic, MessageField.VALUE))

    assert message.key() == b"K-9:2"
    assert record["contract_id"] == "K-9" and record["version"] == 2
    assert record["discount_percent"] == Decimal("7.5")
    assert record["rate_card"][0]["hourly_rate"] == Decimal("199.99")
    assert record["rate_card"][0]["worker_id"] is None
    assert record["effective_from"] == datetime.date(2026, 1, 1)
    assert record["occurred_at"] == datetime.datetime(2026, 11, 2, 9, 30, tzinfo=datetime.UTC)
    assert record["status"] == "ACTIVE" and record["rounding_mode"] == "NEAREST"
    assert record["event_id"]  # derived by the emitter
    assert dict(message.headers() or [])["event_type"] == b"contract"
