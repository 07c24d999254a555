"""The books stage skips a master-data book command that would re-price nothing, and only such a one.

A replay from offset 0 is where this matters: a worker reads all master data before it prices anything,
so every book is priced with the final master data from the start, and the references stage's commands
for those very events reach the books after many of their entries. Re-pricing a book reads and settles
every ledger it has; with the ledgers on disk that was most of a 1M-entry replay's last third
(docs/topology-performance.md). What is skipped must be exactly what would have changed nothing: a
partition whose ledgers were priced before (restored) is re-priced as before, and a master-data change
applied after the books were opened re-prices them.

The stages run as a worker runs them (`topology.stages.BillingStages`), over records encoded by the
catalog's serdes with an in-memory registry, without Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from prometheus_client import REGISTRY

from backbone.domain.models import Event, InvoiceCandidate
from backbone.domain.routing import parse_routing
from backbone.kafka import topics as catalog
from backbone.kafka.serde import SerdeCache
from backbone.streams.memory import MemoryContext, Produced
from backbone.streams.partitioner import murmur2_partition
from backbone.streams.state import StateStores
from tests.unit.domain.domain_builders import approval, client, contract, entry, project, worker
from topology.app import INTERNAL_PARTITIONS
from topology.reference import ReferenceStore, position_of
from topology.stages import BillingStages, TopologyTopics, event_headers

ROUTING = Path(__file__).resolve().parents[2] / "topology" / "routing.toml"


class Worker(MemoryContext):
    """One worker's stages and stores, driven record by record; `holding` False: the worker holds no book
    partition, so the entry stage sends every change through the book-commands topic."""

    def __init__(self, state: Path | None) -> None:
        self.topics = TopologyTopics()
        self.internal = catalog.internal_topics("skip-test", INTERNAL_PARTITIONS)
        self.serdes = SerdeCache(MockSchemaRegistryClient({"url": "mock://"}))
        self.reference = ReferenceStore()
        routing = parse_routing(ROUTING.read_text())
        self.stages = BillingStages(self.topics, self.internal, self.serdes, self.reference, lambda: routing)
        specs = (self.stages.entry_store, self.stages.ledger_store, self.stages.rejection_store)
        super().__init__(StateStores(specs, state), INTERNAL_PARTITIONS)
        self.offsets: dict[str, int] = {}

    # driving it
    def message(self, topic: str, event: Event, offset: int | None = None) -> Message:
        if offset is None:
            offset = self.offsets.get(topic, -1) + 1
        self.offsets[topic] = max(offset, self.offsets.get(topic, -1))
        key = event.key.encode()
        topic_ = next(t for t in self.topics.all() if t.name == topic)
        return Message(
            topic=topic,
            partition=murmur2_partition(key, INTERNAL_PARTITIONS),
            offset=offset,
            key=key,
            value=self.serdes.for_topic(topic_).encode_value(event),
            headers=event_headers(event),
            timestamp=(1, 1_790_000_000_000),
        )

    def load(self, *events: Event) -> dict[str, Message]:
        """Master data read by the broadcast table before anything is processed; the records by key."""
        records = {}
        for event in events:
            records[event.key] = message = self.message(self._reference_topic(event), event)
            self.stages.reference.apply(event, _position(message))  # type: ignore[arg-type]
        return records

    def announce(self, message: Message) -> list[Produced]:
        """A reference record through the references stage, then its book commands through the books."""
        self.stages.announce(message, self)
        return self._books()

    def book(self, *events: Event) -> list[Produced]:
        """Time entries and approvals through the entry stage, then their book commands through the books."""
        self.book_inputs(*events)
        return self._books()

    def book_inputs(self, *events: Event) -> None:
        """Time entries and approvals through the entry stage only."""
        for event in events:
            topic = self.topics.time_entries if event.event_type == "time-entry" else self.topics.approvals
            self.stages.entry(self.message(topic.name, event), self)

    def _books(self) -> list[Produced]:
        commands = self.take_produced([self.internal.book_commands.name])
        priced_in_place = self.take_produced()
        for n, command in enumerate(commands):
            message = Message(
                topic=command.topic,
                partition=command.partition,
                offset=self.offsets.get(command.topic, -1) + 1 + n,
                key=command.key,
                value=command.value,
                headers=command.headers,
                timestamp=(1, 1_790_000_000_000),
            )
            self.stages.book(message, self)
        self.offsets[self.internal.book_commands.name] = self.offsets.get(self.internal.book_commands.name, -1) + len(
            commands
        )
        return priced_in_place + self.take_produced()

    def _reference_topic(self, event: Event) -> str:
        return next(t.name for t in self.topics.reference if t.event is type(event))


def _position(message: Message) -> Any:
    return position_of(message)


def candidates(outputs: list[Produced], worker: Worker) -> list[InvoiceCandidate]:
    topic = worker.topics.invoice_candidates
    serde = worker.serdes.for_topic(topic)
    return [serde.decode(_as_message(p)) for p in outputs if p.topic == topic.name]  # type: ignore[misc]


def _as_message(record: Produced) -> Message:
    return Message(
        topic=record.topic, partition=0, offset=0, key=record.key, value=record.value, headers=record.headers
    )


def skipped() -> float:
    return REGISTRY.get_sample_value("backbone_topology_reprices_skipped_total") or 0.0


@pytest.fixture(autouse=True, params=["in place", "through the topic"])
def change_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Worker, "holding", request.param == "in place")


@pytest.fixture(params=["disk", "memory"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | None]:
    yield tmp_path / "state" if request.param == "disk" else None


def test_a_replayed_master_data_command_after_the_entries_it_concerns_is_skipped(state: Path | None) -> None:
    worker_ = Worker(state)
    loaded = worker_.load(client(), project(), worker(), contract())
    billed = worker_.book(entry(), approval())
    [candidate] = candidates(billed, worker_)
    assert candidate.amount == Decimal("150.00")

    before = skipped()
    for key in ("P1", "K1:1", "W1"):  # the references stage reaches the same records after the entries
        assert worker_.announce(loaded[key]) == []
    assert skipped() - before == 1 + 1 + INTERNAL_PARTITIONS  # a worker's command goes to every partition


def test_a_master_data_change_after_the_books_opened_re_prices_them(state: Path | None) -> None:
    worker_ = Worker(state)
    worker_.load(client(), project(), worker(), contract())
    worker_.book(entry(), approval())

    before = skipped()
    raised = contract(default_hourly_rate=Decimal("180.00"))
    outputs = worker_.announce(worker_.message(worker_.topics.contracts.name, raised))
    [adjustment] = candidates(outputs, worker_)
    assert adjustment.amount == Decimal("30.00")
    assert skipped() == before
    # the same change announced again (a replay of the references stage) changes nothing more
    assert candidates(worker_.announce(worker_.message(worker_.topics.contracts.name, raised, offset=1)), worker_) == []


def test_a_change_the_broadcast_table_applied_first_still_re_prices_the_books(state: Path | None) -> None:
    """The broadcast table may apply an event before its own book command arrives: the books priced
    before that must still be re-priced when the command comes."""
    worker_ = Worker(state)
    worker_.load(client(), project(), worker(), contract())
    worker_.book(entry(), approval())
    raised = contract(default_hourly_rate=Decimal("180.00"))
    record = worker_.message(worker_.topics.contracts.name, raised)
    worker_.reference.apply(raised, _position(record))  # the follower read it between two batches

    before = skipped()
    [adjustment] = candidates(worker_.announce(record), worker_)
    assert adjustment.amount == Decimal("30.00")
    assert skipped() == before


def test_books_restored_with_ledgers_priced_elsewhere_are_re_priced(state: Path | None) -> None:
    first = Worker(state if state is None else state / "first")
    first.load(client(), project(), worker(), contract())
    first.book(entry(), approval())
    changelog = first.flush()

    # the next owner of the partitions restores the ledgers; the old owner priced them under a rate the
    # master data no longer has (a correction it had not read yet)
    second = Worker(state if state is None else state / "second")
    for record in changelog:
        name = next(s.name for s in second.stores.specs.values() if s.changelog == record.topic)
        second.stores.get(name, record.partition or 0).restored(record.key.decode(), record.value)  # type: ignore[union-attr]
    for key in second.stores.held():
        second.stores.get(*key).restore_done()
    corrected = contract(default_hourly_rate=Decimal("180.00"))
    records = second.load(client(), project(), worker(), corrected)

    before = skipped()
    [adjustment] = candidates(second.announce(records["K1:1"]), second)
    assert adjustment.amount == Decimal("30.00")
    assert skipped() == before
