"""Stages run without Kafka: a `Context` that keeps what handlers produce and holds its store partitions.

A handler sees its worker only through a `Context` (produce, a store partition, whether a partition is
held here, dead-letter), so the same handlers run in one process over records made in memory, exactly
as a worker runs them but with nothing sent or committed. Tests that drive stages record by record and
the benchmark of the handlers alone (`benchmarks/stages_bench.py`) run on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import Message

from backbone.streams.loop import Context
from backbone.streams.state import StateStores, Store


@dataclass(frozen=True, slots=True)
class Produced:
    """A record a handler produced (or a changelog record of a flush), as it would have been sent."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: Sequence[tuple[str, bytes]] | None
    partition: int | None


class DeadLettered(Exception):
    """A handler dead-lettered a record. In memory there is no dead-letter topic to look at later, and
    the records are the caller's own, so it is an error of the run."""


class MemoryContext(Context):
    """A `Context` over `stores`, holding partitions `0 .. partitions - 1` of each of their stores.

    `produced` collects every record the handlers produced, in order; the caller takes and empties it.
    `holding`: whether `holds` answers for the partitions held here (True) or says no to all of them
    (False), so a handler takes the path it takes for partitions that another worker holds."""

    holding = True

    def __init__(self, stores: StateStores, partitions: int = 0) -> None:
        super().__init__(None)  # type: ignore[arg-type]  # there is no worker: every method is its own
        self.stores = stores
        self.produced: list[Produced] = []
        for name in stores.specs:
            for partition in range(partitions):
                stores.take(name, partition)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        self.produced.append(Produced(topic, value, key, headers, partition))

    def store(self, name: str, partition: int) -> Store:
        return self.stores.get(name, partition)

    def holds(self, name: str, partition: int) -> bool:
        return self.holding and self.stores.holds(name, partition)

    def dead_letter(self, message: Message, error: BaseException, processor: str, error_class: str = "") -> None:
        raise DeadLettered(f"{processor} dead-lettered {message.topic()}@{message.offset()}: {error}") from error

    def flush(self) -> list[Produced]:
        """The changelog records of every store changed since the last flush, as a worker's commit writes
        them (and a store on disk trims its cache after)."""
        records: list[Produced] = []
        self.stores.flush(
            lambda topic, partition, key, value: records.append(Produced(topic, value, key, None, partition))
        )
        return records

    def take_produced(self, topics: Iterable[str] | None = None) -> list[Produced]:
        """The records produced so far (only those to `topics`, when given), removed from `produced`."""
        if topics is None:
            taken, self.produced = self.produced, []
            return taken
        wanted = set(topics)
        taken = [p for p in self.produced if p.topic in wanted]
        self.produced = [p for p in self.produced if p.topic not in wanted]
        return taken
