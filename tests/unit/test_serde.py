"""The Confluent wire format of catalog topics, against confluent-kafka's in-memory registry client."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient

from backbone.domain.models import ALL_EVENTS, INPUT_EVENTS
from backbone.errors import BackboneError, InvalidInputError
from backbone.kafka import topics as catalog
from backbone.kafka.serde import DecodeError, SerdeCache, TopicSerde, describe_differences, register_all
from tests.examples import RICH

MAGIC = b"\x00"


class FakeMessage:
    """The few `confluent_kafka.Message` methods the serde reads."""

    def __init__(self, value: bytes | None, topic: str = "t", partition: int = 2, offset: int = 41) -> None:
        self._value, self._topic, self._partition, self._offset = value, topic, partition, offset

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def headers(self) -> Any:
        return None


@pytest.fixture
def registry() -> MockSchemaRegistryClient:
    return MockSchemaRegistryClient({"url": "mock://"})


@pytest.mark.parametrize("topic", catalog.EVENT_TOPICS, ids=lambda t: t.name)
def test_every_topic_round_trips_its_event_in_confluent_framing(registry: Any, topic: catalog.Topic) -> None:
    serde = TopicSerde(topic, registry)
    event = ALL_EVENTS[topic.event_type or ""].model_validate(RICH[topic.event_type or ""])
    value = serde.encode_value(event)
    assert value[:1] == MAGIC
    assert serde.decode(FakeMessage(value, topic.name)) == event
    assert serde.encode_key(event) == event.key.encode()
    assert registry.get_latest_version(topic.value_subject).schema_id == int.from_bytes(value[1:5], "big")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(b"not avro at all", "magic byte", id="garbage"),
        pytest.param(MAGIC + (999).to_bytes(4, "big") + b"\x02", "unknown writer schema", id="unknown-schema-id"),
        pytest.param(b"\x00\x00", "framing", id="too-short"),
        pytest.param(None, "tombstone", id="tombstone"),
    ],
)
def test_undecodable_records_keep_the_raw_message(registry: Any, value: bytes | None, reason: str) -> None:
    serde = TopicSerde(catalog.TIME_ENTRIES, registry)
    message = FakeMessage(value)
    with pytest.raises(DecodeError) as caught:
        serde.decode(message)  # type: ignore[arg-type]
    assert caught.value.raw is message
    assert reason in caught.value.reason
    assert "t/2@41" in str(caught.value)


def test_valid_avro_with_invalid_values_is_a_decode_error(registry: Any) -> None:
    # A writer that skipped the model rules (revision 0) must not reach processors.
    serde = TopicSerde(catalog.TIME_ENTRIES, registry)
    event = ALL_EVENTS["time-entry"].model_validate(RICH["time-entry"])
    bad = event.model_copy(update={"revision": 0})
    with pytest.raises(DecodeError, match="revision"):
        serde.decode(FakeMessage(serde.encode_value(bad)))  # type: ignore[arg-type]


def test_an_event_of_another_type_is_refused(registry: Any) -> None:
    serde = TopicSerde(catalog.TIME_ENTRIES, registry)
    client = ALL_EVENTS["client"].model_validate(RICH["client"])
    with pytest.raises(InvalidInputError, match="carries TimeEntry"):
        serde.encode_value(client)


def test_dead_letter_topics_have_no_serde(registry: Any) -> None:
    assert catalog.TIME_ENTRIES.dlq is not None
    with pytest.raises(BackboneError, match="dead-letter"):
        TopicSerde(catalog.TIME_ENTRIES.dlq, registry)


def test_serdes_are_built_once_per_topic(registry: Any) -> None:
    cache = SerdeCache(registry)
    other = dataclasses.replace(catalog.TIME_ENTRIES, name="other")
    assert cache.for_topic(catalog.TIME_ENTRIES) is cache.for_topic(catalog.TIME_ENTRIES)
    assert cache.for_topic(other) is not cache.for_topic(catalog.TIME_ENTRIES)


def test_register_all_registers_every_event_topic_subject(registry: Any) -> None:
    ids = register_all(registry)
    assert set(ids) == {t.value_subject for t in catalog.EVENT_TOPICS}
    assert register_all(registry) == ids  # idempotent


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param([{"name": "a", "type": "string"}], [], "removed a", id="removed"),
        pytest.param([], [{"name": "b", "type": "int"}], "added b without a default", id="added-required"),
        pytest.param(
            [],
            [{"name": "b", "type": ["null", "int"], "default": None}],
            "see the registry",
            id="added-optional",
        ),
        pytest.param(
            [{"name": "a", "type": "string"}],
            [{"name": "a", "type": "int"}],
            "changed type of a",
            id="type-changed",
        ),
    ],
)
def test_differences_are_described_for_people(old: list[Any], new: list[Any], expected: str) -> None:
    assert expected in describe_differences({"fields": old}, {"fields": new})


@pytest.mark.parametrize("event_type", sorted(INPUT_EVENTS))
def test_spooled_encoding_equals_encoding_the_defaulted_event(event_type: str) -> None:
    # `backbone emit` writes envelope defaults straight into the Avro record; the bytes must be the
    # same as encoding the event `with_envelope_defaults` returns (same event id, same correlation id).
    from producers.emitter import encode_for_spool, with_envelope_defaults

    event = INPUT_EVENTS[event_type].model_validate(
        {k: v for k, v in RICH[event_type].items() if k not in ("event_id", "correlation_id")}
    )
    serde = TopicSerde(catalog.topic_for(event_type), registry=None)  # type: ignore[arg-type]
    key, body, headers = encode_for_spool(event, serde)
    defaulted = with_envelope_defaults(event)
    assert body == serde.encode_body(defaulted)
    assert key == defaulted.key.encode()
    assert dict(headers)["source_system"] == defaulted.source_system.encode()


@pytest.mark.parametrize("event_type", sorted(ALL_EVENTS))
def test_encoding_instants_and_dates_ahead_of_fastavro_gives_its_bytes(event_type: str) -> None:
    import io

    import fastavro

    from backbone.kafka import wire

    event = ALL_EVENTS[event_type].model_validate(RICH[event_type])
    serde = TopicSerde(catalog.topic_for(event_type), registry=None)  # type: ignore[arg-type]
    by_fastavro = io.BytesIO()
    fastavro.schemaless_writer(by_fastavro, wire.parsed_schema(type(event)), wire.to_record(event))
    assert serde.encode_body(event) == by_fastavro.getvalue()
