"""A master-data book command names its reference event in a header, so the books can skip it without
decoding it; its value stays the `BookCommand` JSON, and a command without the header (written before
it, during a rolling upgrade) is decoded and handled exactly as before.

In a replay from offset 0 the books skip almost every such command (docs/topology-performance.md,
"Thirteenth session"); decoding each with pydantic was most of the books stage's time there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from backbone.streams.memory import Produced
from tests.unit.domain.domain_builders import approval, client, contract, entry, project, worker
from tests.unit.test_books_reprice_skip import Worker, candidates, skipped
from topology import messages
from topology.app import INTERNAL_PARTITIONS
from topology.messages import REFERENCE_HEADER, ReferenceMark, decode_command, reference_mark


class UpgradingWorker(Worker):
    """A worker reading book commands written by the version before the header: the same values, no headers."""

    def take_produced(self, topics: Iterable[str] | None = None) -> list[Produced]:
        produced = super().take_produced(topics)
        commands = self.internal.book_commands.name
        return [replace(p, headers=None) if p.topic == commands else p for p in produced]


@pytest.fixture(params=["disk", "memory"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | None]:
    yield tmp_path / "state" if request.param == "disk" else None


@pytest.fixture(params=[Worker, UpgradingWorker], ids=["with-header", "written-before-the-header"])
def worker_class(request: pytest.FixtureRequest) -> type[Worker]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The book commands the books stage decoded, as they were on the topic."""
    seen: list[bytes] = []
    original = messages.decode_command

    def counting(data: bytes) -> messages.BookCommand:
        seen.append(data)
        return original(data)

    monkeypatch.setattr(messages, "decode_command", counting)
    return seen


def test_a_reference_command_names_its_event_and_its_value_is_the_command_json() -> None:
    worker_ = Worker(None)
    announced = contract()
    record = worker_.message(worker_.topics.contracts.name, announced, offset=41)
    worker_.stages.announce(record, worker_)

    [command] = worker_.take_produced([worker_.internal.book_commands.name])
    assert reference_mark(command.headers) == ReferenceMark(worker_.topics.contracts.name, 41, "K1:1")
    sent = decode_command(command.value or b"")  # what a worker of the version before reads
    assert sent.contract == announced
    assert sent.position is not None and (sent.position.topic, sent.position.offset) == (record.topic(), 41)


def test_replayed_commands_are_skipped_alike_with_or_without_the_header(
    state: Path | None, worker_class: type[Worker]
) -> None:
    worker_ = worker_class(state)
    loaded = worker_.load(client(), project(), worker(), contract())
    [candidate] = candidates(worker_.book(entry(), approval()), worker_)
    assert candidate.amount == Decimal("150.00")

    before = skipped()
    for key in ("P1", "K1:1", "W1"):
        assert worker_.announce(loaded[key]) == []
    assert skipped() - before == 1 + 1 + INTERNAL_PARTITIONS


def test_a_rate_change_re_prices_alike_with_or_without_the_header(
    state: Path | None, worker_class: type[Worker]
) -> None:
    worker_ = worker_class(state)
    worker_.load(client(), project(), worker(), contract())
    worker_.book(entry(), approval())

    raised = contract(default_hourly_rate=Decimal("180.00"))
    [adjustment] = candidates(worker_.announce(worker_.message(worker_.topics.contracts.name, raised)), worker_)
    assert adjustment.amount == Decimal("30.00")
    again = worker_.message(worker_.topics.contracts.name, raised, offset=1)  # the references stage replayed
    assert candidates(worker_.announce(again), worker_) == []


def test_a_change_the_broadcast_table_applied_first_is_decoded_and_re_prices(
    state: Path | None, decoded: list[bytes]
) -> None:
    """The header says the event is applied already, but the books were priced before it: the command
    must be read and the books re-priced."""
    worker_ = Worker(state)
    worker_.load(client(), project(), worker(), contract())
    worker_.book(entry(), approval())
    raised = contract(default_hourly_rate=Decimal("180.00"))
    record = worker_.message(worker_.topics.contracts.name, raised)
    worker_.reference.apply(raised, messages.Position(topic=record.topic(), partition=0, offset=record.offset()))

    decoded.clear()
    [adjustment] = candidates(worker_.announce(record), worker_)
    assert adjustment.amount == Decimal("30.00")
    assert len(decoded) == 1


def test_a_replayed_command_with_the_header_is_skipped_without_being_decoded(
    state: Path | None, decoded: list[bytes]
) -> None:
    worker_ = Worker(state)
    loaded = worker_.load(client(), project(), worker(), contract())
    worker_.book(entry(), approval())

    decoded.clear()
    for key in ("P1", "K1:1", "W1"):
        worker_.announce(loaded[key])
    assert decoded == []


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("event_type", b"contract")],
        [(REFERENCE_HEADER, b"not json")],
        [(REFERENCE_HEADER, orjson.dumps(["topic", "41", "K1:1"]))],
        [(REFERENCE_HEADER, orjson.dumps(["topic", 41]))],
        [(REFERENCE_HEADER, None)],
    ],
    ids=["no-headers", "empty", "other-header", "not-json", "offset-not-a-number", "too-short", "no-value"],
)
def test_a_command_without_a_well_formed_header_names_no_event(headers: list[tuple[str, bytes | None]] | None) -> None:
    """Such a command is decoded, as every command was before the header."""
    assert reference_mark(headers) is None
