"""A record's outputs and state changes, stored in the order that makes at-least-once safe.

A stage reads a record, derives outputs and new state from it, and must then make both durable. Kafka
writes to different partitions are not atomic, so the order decides what a `kill -9` can leave behind:
  * state stored before its outputs were delivered: the restarted worker re-reads the records, finds
    them already recorded (duplicate detection) and never sends the lost outputs — money lost;
  * outputs delivered before their state: the restarted worker derives the same outputs again, with
    the same deterministic ids, and downstream consumers drop the repeats.
`Outbox` keeps the second order: `deliver()` waits until every queued output is acknowledged by the
broker, then writes the state into the tables and waits until their changelog records are acknowledged
too. Only then does faust acknowledge the source record, so a committed offset never runs ahead of the
state it produced (faust's own flush before a commit does not ensure that; see `topology.tables`).
Reads before `deliver` see the pending state (`get`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from topology.tables import DurableTable


class Outbox:
    """Outputs, and the table writes that may follow only once they are delivered."""

    def __init__(self) -> None:
        self._sent: list[Awaitable[Any]] = []
        self._writes: dict[tuple[str, Any], tuple[Any, Any]] = {}

    async def send(self, topic: Any, **message: Any) -> None:
        """Queue a record on a faust topic (its delivery is awaited by `deliver`)."""
        self._sent.append(await topic.send(**message))

    def get(self, table: Any, key: Any) -> Any:
        """The key's value including pending writes (None: absent or deleted)."""
        pending = self._writes.get((table.name, key))
        return pending[1] if pending is not None else table.get(key)

    def put(self, table: DurableTable, key: Any, value: Any) -> None:
        """Store `value` (None deletes) under `key` once the outputs are out."""
        self._writes[(table.name, key)] = (table, value)

    async def deliver(self) -> None:
        """Wait for every output's acknowledgment, then write the state and wait for its changelog records.

        Call it inside the record's own processing: the table picks its changelog partition from faust's
        current event.
        """
        await asyncio.gather(*self._sent)
        writes = [table.write(key, value) for (_, key), (table, value) in self._writes.items()]
        self._sent.clear()
        self._writes.clear()
        await asyncio.gather(*writes)
