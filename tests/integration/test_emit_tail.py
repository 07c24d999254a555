"""`backbone emit` and `backbone tail` on the real broker and schema registry.

Each test writes to throwaway topics shaped like a catalog topic (`--topic` overrides the catalog
name), so tests never see each other's records.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from backbone.cli.main import cli
from backbone.domain.models import INPUT_EVENTS, Event
from backbone.kafka import topics as catalog
from backbone.kafka.serde import check_compatibility
from backbone.settings import Settings
from producers.emitter import Emitter, with_envelope_defaults
from tests.examples import RICH, minimal_time_entry
from tests.support import create_topic, unique_name

pytestmark = pytest.mark.integration


@pytest.fixture
def runner(bootstrap: str, registry_url: str) -> CliRunner:
    return CliRunner(env={"BACKBONE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "BACKBONE_SCHEMA_REGISTRY_URL": registry_url})


@pytest.fixture
def make_topic(bootstrap: str) -> Iterator[Any]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created: list[str] = []

    def make(like: catalog.Topic, partitions: int = 3) -> catalog.Topic:
        topic = dataclasses.replace(like, name=unique_name(f"test-{like.event_type}"), partitions=partitions)
        create_topic(bootstrap, topic.name, partitions)
        created.append(topic.name)
        return topic

    yield make
    if created:
        admin.delete_topics(created)


def write_lines(path: Path, payloads: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in payloads), encoding="utf-8")
    return path


def emit(runner: CliRunner, event_type: str, source: Path, topic: catalog.Topic, *extra: str) -> Result:
    return runner.invoke(cli, ["emit", event_type, str(source), "--topic", topic.name, *extra])


def tail(runner: CliRunner, stream: str, topic: catalog.Topic, *extra: str) -> Result:
    args = ["tail", stream, "--topic", topic.name, "--from-beginning", "--idle-timeout", "5", *extra]
    return runner.invoke(cli, args)


def record_count(bootstrap: str, topic: catalog.Topic) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("count")})
    try:
        marks = [
            consumer.get_watermark_offsets(TopicPartition(topic.name, p), timeout=10) for p in range(topic.partitions)
        ]
    finally:
        consumer.close()
    return sum(high - low for low, high in marks)


def normalised(events: list[Event]) -> list[dict[str, Any]]:
    """Python-mode dumps (decimals compare by value: "150.00" == "150.0000"), in event-id order."""
    return sorted((e.model_dump() for e in events), key=lambda d: str(d["event_id"]))


def sparse(event_type: str) -> dict[str, Any]:
    """The rich example without event_id, correlation_id or any field that may be omitted."""
    cls = INPUT_EVENTS[event_type]
    optional = {name for name, info in cls.model_fields.items() if not info.is_required()}
    return {k: v for k, v in RICH[event_type].items() if k not in optional}


@pytest.mark.parametrize("event_type", sorted(INPUT_EVENTS))
def test_every_input_event_survives_emit_broker_tail(
    runner: CliRunner, make_topic: Any, tmp_path: Path, event_type: str
) -> None:
    topic = make_topic(catalog.topic_for(event_type))
    payloads = [RICH[event_type], sparse(event_type)]
    source = write_lines(tmp_path / "in.jsonl", payloads)

    emitted = emit(runner, event_type, source, topic)
    assert emitted.exit_code == 0, emitted.output
    assert "published 2, rejected 0" in emitted.stdout

    tailed = tail(runner, event_type, topic, "--max", "2")
    assert tailed.exit_code == 0, tailed.output
    cls = INPUT_EVENTS[event_type]
    printed = [cls.model_validate_json(line) for line in tailed.stdout.splitlines()]
    expected = [with_envelope_defaults(cls.model_validate(p)) for p in payloads]
    assert normalised(printed) == normalised(expected)
    assert all(isinstance(v, str) for line in tailed.stdout.splitlines() for v in _decimals(cls, json.loads(line)))


def _decimals(cls: type[Event], printed: dict[str, Any]) -> list[Any]:
    from decimal import Decimal

    sample = cls.model_validate(printed)
    return [printed[name] for name in cls.model_fields if isinstance(getattr(sample, name), Decimal)]


def test_emitting_the_same_file_twice_gives_the_same_event_ids(
    runner: CliRunner, make_topic: Any, tmp_path: Path
) -> None:
    topic = make_topic(catalog.TIME_ENTRIES)
    source = write_lines(tmp_path / "in.jsonl", [minimal_time_entry(i) for i in range(3)])
    for _ in range(2):
        assert emit(runner, "time-entry", source, topic).exit_code == 0
    tailed = tail(runner, "time-entry", topic, "--max", "6")
    ids = [json.loads(line)["event_id"] for line in tailed.stdout.splitlines()]
    assert len(ids) == 6 and len(set(ids)) == 3


def test_an_invalid_file_publishes_nothing(runner: CliRunner, make_topic: Any, bootstrap: str, tmp_path: Path) -> None:
    topic = make_topic(catalog.WORKERS)
    source = write_lines(tmp_path / "in.jsonl", [RICH["worker"], {**RICH["worker"], "cost_rate": 85.5}, RICH["worker"]])
    result = emit(runner, "worker", source, topic)
    assert result.exit_code == 2
    assert "line 2: cost_rate:" in result.stderr
    assert record_count(bootstrap, topic) == 0


def test_skip_invalid_publishes_the_valid_lines_and_keeps_the_rejects(
    runner: CliRunner, make_topic: Any, bootstrap: str, tmp_path: Path
) -> None:
    topic = make_topic(catalog.TIME_ENTRIES)
    lines = [minimal_time_entry(1), {**minimal_time_entry(2), "billable": "maybe"}, minimal_time_entry(3)]
    source = write_lines(tmp_path / "in.jsonl", lines)
    rejects = tmp_path / "rejects.jsonl"
    result = emit(runner, "time-entry", source, topic, "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    assert "published 2, rejected 1" in result.stdout
    assert record_count(bootstrap, topic) == 2
    (rejected,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert rejected["line"] == 2 and rejected["errors"][0]["field"] == "billable"


def test_tail_reports_undecodable_records_and_goes_on(
    runner: CliRunner, make_topic: Any, bootstrap: str, tmp_path: Path
) -> None:
    topic = make_topic(catalog.TIME_ENTRIES, partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic.name, b"not avro", b"TE-x")
    assert producer.flush(30) == 0
    assert emit(runner, "time-entry", write_lines(tmp_path / "in.jsonl", [minimal_time_entry(1)]), topic).exit_code == 0

    result = tail(runner, "time-entry", topic, "--max", "1")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1
    assert f"undecodable record {topic.name}/0@0" in result.stderr


def test_a_durable_group_resumes_where_it_stopped(runner: CliRunner, make_topic: Any, tmp_path: Path) -> None:
    topic = make_topic(catalog.APPROVALS)
    group = unique_name("tail-group")
    first = {**RICH["approval"], "event_id": "a-1"}
    assert emit(runner, "approval", write_lines(tmp_path / "a.jsonl", [first]), topic).exit_code == 0
    assert len(tail(runner, "approval", topic, "--group", group, "--max", "1").stdout.splitlines()) == 1

    second = {**RICH["approval"], "event_id": "a-2"}
    assert emit(runner, "approval", write_lines(tmp_path / "b.jsonl", [second]), topic).exit_code == 0
    again = runner.invoke(cli, ["tail", "approval", "--topic", topic.name, "--group", group, "--idle-timeout", "3"])
    assert [json.loads(line)["event_id"] for line in again.stdout.splitlines()] == ["a-2"]


def test_table_format_prints_a_header_and_one_row_per_event(runner: CliRunner, make_topic: Any, tmp_path: Path) -> None:
    topic = make_topic(catalog.CLIENTS)
    assert emit(runner, "client", write_lines(tmp_path / "c.jsonl", [RICH["client"]]), topic).exit_code == 0
    result = tail(runner, "client", topic, "--max", "1", "--format", "table")
    header, row = result.stdout.splitlines()
    assert header.split()[:4] == ["partition", "offset", "key", "client_id"]
    assert "Acme GmbH" in row


def test_send_resolves_after_delivery_with_routing_headers(settings: Settings, make_topic: Any, bootstrap: str) -> None:
    topic = make_topic(catalog.TIME_ENTRIES)
    entry = INPUT_EVENTS["time-entry"].model_validate({**minimal_time_entry(7), "correlation_id": None})
    with Emitter(settings, topics={"time-entry": topic}) as emitter:
        delivery = emitter.send(entry, headers={"traceparent": "00-abc-def-01"}).result(timeout=30)
    assert delivery.topic == topic.name and delivery.key == "TE-7" and delivery.offset >= 0

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("raw")})
    consumer.assign([TopicPartition(topic.name, delivery.partition, delivery.offset)])
    try:
        message = consumer.poll(30)
    finally:
        consumer.close()
    assert message is not None and message.key() == b"TE-7"
    headers = {name: value.decode() for name, value in message.headers() or []}
    assert headers == {
        "event_type": "time-entry",
        "source_system": "toggl",
        "correlation_id": "TE-7",
        "traceparent": "00-abc-def-01",
    }


def test_publish_reports_counts_per_topic(settings: Settings, make_topic: Any) -> None:
    topic = make_topic(catalog.TIME_ENTRIES)
    entries = [INPUT_EVENTS["time-entry"].model_validate(minimal_time_entry(i)) for i in range(50)]
    with Emitter(settings, topics={"time-entry": topic}) as emitter:
        report = emitter.publish(entries)
    assert report.published == 50 and report.by_topic == {topic.name: 50}


def test_check_lists_a_schema_change_the_registry_would_refuse(settings: Settings) -> None:
    registry = SchemaRegistryClient(settings.registry.client_config())
    topic = dataclasses.replace(catalog.TIME_ENTRIES, name=unique_name("compat"))
    from backbone.kafka import wire

    old = dict(wire.schema_for(topic.event))  # type: ignore[arg-type]
    old["fields"] = [f for f in old["fields"] if f["name"] != "billable"]
    registry.register_schema(topic.value_subject, Schema(json.dumps(old), "AVRO"))

    (problem,) = check_compatibility(registry, [topic])
    assert topic.value_subject in problem and "added billable without a default" in problem


def test_check_passes_for_unregistered_and_equal_schemas(settings: Settings) -> None:
    registry = SchemaRegistryClient(settings.registry.client_config())
    fresh = dataclasses.replace(catalog.CLIENTS, name=unique_name("compat"))
    same = dataclasses.replace(catalog.PROJECTS, name=unique_name("compat"))
    from backbone.kafka.serde import register_all

    register_all(registry, [same])
    assert check_compatibility(registry, [fresh, same]) == []


def test_schemas_register_then_check_succeed(runner: CliRunner) -> None:
    registered = runner.invoke(cli, ["schemas", "register"])
    assert registered.exit_code == 0, registered.output
    assert "psa.time-entries.v1-value" in registered.stdout
    checked = runner.invoke(cli, ["schemas", "check"])
    assert checked.exit_code == 0, checked.output


def test_emit_and_tail_refuse_a_missing_topic_without_creating_it(
    runner: CliRunner, bootstrap: str, tmp_path: Path
) -> None:
    missing = dataclasses.replace(catalog.TIME_ENTRIES, name=unique_name("test-missing"))
    source = write_lines(tmp_path / "in.jsonl", [minimal_time_entry(1)])
    emitted = emit(runner, "time-entry", source, missing)
    assert emitted.exit_code == 1 and f"topic {missing.name} does not exist" in emitted.stderr
    tailed = tail(runner, "time-entry", missing)
    assert tailed.exit_code == 1 and "does not exist" in tailed.stderr
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    assert missing.name not in topics


def published(bootstrap: str, topic: catalog.Topic) -> list[list[tuple[Any, ...]]]:
    """Every record of a topic, partition by partition in offset order: (key, value, headers)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("read")})
    partitions: list[list[tuple[Any, ...]]] = []
    try:
        for partition in range(topic.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=10)
            consumer.assign([TopicPartition(topic.name, partition, low)])
            records: list[tuple[Any, ...]] = []
            while len(records) < high - low:
                batch = consumer.consume(1000, timeout=5)
                assert batch, f"partition {partition} ended at {len(records)} of {high - low} records"
                records += [(m.key(), m.value(), m.headers()) for m in batch]
            partitions.append(records)
    finally:
        consumer.close()
    return partitions


def test_a_file_validated_in_halves_publishes_what_one_pass_publishes(
    runner: CliRunner, make_topic: Any, bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backbone.cli import halves

    # revisions of one entry on both sides of the cut: their order must survive
    entries = [minimal_time_entry(index % 700, revision=1 + index // 700) for index in range(2100)]
    source = write_lines(tmp_path / "in.jsonl", entries)
    topics = []
    for threshold in (1 << 40, 1):  # one pass, then two halves
        monkeypatch.setattr(halves, "PARALLEL_BYTES", threshold)
        topics.append(make_topic(catalog.TIME_ENTRIES))
        emitted = emit(runner, "time-entry", source, topics[-1])
        assert emitted.exit_code == 0, emitted.output
        assert "published 2100, rejected 0" in emitted.stdout
    one_pass, in_halves = (published(bootstrap, topic) for topic in topics)
    assert in_halves == one_pass
    assert sum(map(len, in_halves)) == 2100


def test_a_file_validated_in_halves_refuses_a_missing_topic(
    runner: CliRunner, bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backbone.cli import halves

    monkeypatch.setattr(halves, "PARALLEL_BYTES", 1)
    missing = dataclasses.replace(catalog.TIME_ENTRIES, name=unique_name("test-missing"))
    source = write_lines(tmp_path / "in.jsonl", [minimal_time_entry(index) for index in range(100)])
    emitted = emit(runner, "time-entry", source, missing)
    assert emitted.exit_code == 1 and f"topic {missing.name} does not exist" in emitted.stderr
    assert missing.name not in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
