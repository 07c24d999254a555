"""The local runtime: `backbone up`/`down`/`status` on real processes, data kept across restarts."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from backbone.kafka import topics as catalog
from backbone.kafka.admin import apply_topics
from backbone.settings import KafkaSettings
from tests.support import create_topic, unique_name

pytestmark = pytest.mark.integration

RECORDS = 10_000


def _backbone(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "backbone.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def own_runtime_env(tmp_path: Path) -> dict[str, str]:
    """An environment for a runtime of this test's own (data dir and ports), not the session's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKBONE_")}
    # Ports below Linux's ephemeral range (32768-60999), where an earlier test's client connection can hold
    # a port and the broker then fails to bind it (seen in CI).
    env.update(
        BACKBONE_DATA_DIR=str(tmp_path / "data"),
        BACKBONE_KAFKA_PORT="26192",
        BACKBONE_KAFKA_CONTROLLER_PORT="26193",
        BACKBONE_SCHEMA_REGISTRY_PORT="26181",
        BACKBONE_POSTGRES_PORT="26433",
    )
    yield env
    _backbone(["down"], env)
    location = tmp_path / "data" / "postgres" / "LOCATION"  # a cluster kept outside the private tmp dir
    if location.exists():
        shutil.rmtree(Path(location.read_text().strip()).parent, ignore_errors=True)


def _produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    failed: list[str] = []

    def on_delivery(error: object, _message: object) -> None:
        if error is not None:
            failed.append(str(error))

    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=f"record-{i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not failed, f"{len(failed)} records not delivered, e.g. {failed[0]}"


def _consume_all(bootstrap: str, topic: str, expected: int) -> set[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("g"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: set[bytes] = set()
    try:
        misses = 0
        while len(seen) < expected and misses < 60:
            batch = consumer.consume(num_messages=5000, timeout=1.0)
            misses = 0 if batch else misses + 1
            seen.update(m.value() for m in batch if m.error() is None)
    finally:
        consumer.close()
    return seen


@pytest.mark.slow
def test_up_keeps_records_across_down_and_up(own_runtime_env: dict[str, str]) -> None:
    first = _backbone(["up"], own_runtime_env)
    assert first.returncode == 0, first.stderr + first.stdout
    for service in ("kafka", "registry", "postgres"):
        assert service in first.stdout
    assert _backbone(["status"], own_runtime_env).returncode == 0

    bootstrap = "127.0.0.1:26192"
    topic = create_topic(bootstrap, unique_name("persist"), partitions=3)  # the broker creates none by itself
    _produce(bootstrap, topic, RECORDS)
    assert len(_consume_all(bootstrap, topic, RECORDS)) == RECORDS

    assert _backbone(["down"], own_runtime_env).returncode == 0
    stopped = _backbone(["status"], own_runtime_env)
    assert stopped.returncode == 1 and "stopped" in stopped.stdout

    again = _backbone(["up"], own_runtime_env)
    assert again.returncode == 0, again.stderr + again.stdout
    assert "0 created" in again.stdout  # the catalog's topics survived too
    values = _consume_all(bootstrap, topic, RECORDS)
    assert values == {f"record-{i}".encode() for i in range(RECORDS)}

    twice = _backbone(["up"], own_runtime_env)
    assert twice.returncode == 0 and "running" in twice.stdout


def test_applying_the_catalog_twice_changes_nothing(kafka_settings: KafkaSettings) -> None:
    prefix = unique_name("cat")
    topics = tuple(dataclasses.replace(t, name=f"{prefix}.{t.name}", dlq=None) for t in catalog.EVENT_TOPICS)
    admin = AdminClient(kafka_settings.client_config())

    first = apply_topics(admin, topics)
    second = apply_topics(admin, topics)

    assert sorted(first.created) == sorted(t.name for t in topics)
    assert second.created == [] and second.drift == []
    assert sorted(second.unchanged) == sorted(t.name for t in topics)


def test_drift_is_reported_not_repaired(kafka_settings: KafkaSettings) -> None:
    admin = AdminClient(kafka_settings.client_config())
    topic = dataclasses.replace(catalog.TIME_ENTRIES, name=unique_name("drift"), dlq=None)
    apply_topics(admin, (topic,))

    report = apply_topics(admin, (dataclasses.replace(topic, partitions=12, compacted=True),))

    assert report.created == []
    assert any("6 partitions, catalog says 12" in p for p in report.drift)
    assert any("cleanup.policy=delete, catalog says compact" in p for p in report.drift)


def test_postgres_answers_queries(postgres_conninfo: str) -> None:
    with psycopg.connect(postgres_conninfo) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        conn.execute("CREATE TEMP TABLE probe (id text PRIMARY KEY)")
        conn.execute("INSERT INTO probe VALUES ('x')")
        assert conn.execute("SELECT count(*) FROM probe").fetchone() == (1,)
    assert version is not None and int(version[0].split(".")[0]) >= 13
