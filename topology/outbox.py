"""A record's outputs and state changes, stored in the order that makes at-least-once safe.

A stage reads a record, derives outputs and new state from it, and must then make both durable. Kafka
writes to different partitions are not atomic, so the order decides what a `kill -9` can leave behind:
  * state stored before its outputs were delivered: the restarted worker re-reads the records, finds
    them already recorded (duplicate detection) and never sends the lost outputs — money lost;
  * outputs delivered before their state: the restarted worker derives the same outputs again, with
    the same deterministic ids, and downstream consumers drop the repeats.
`Outbox` keeps the second order: `deliver()` waits until every queued output is acknowledged by the
broker, and only then writes the state into the tables and their changelogs. Source offsets are
committed after that (faust flushes its producer before it commits). Reads before `deliver` see the
pending state (`get`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


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

    def put(self, table: Any, key: Any, value: Any) -> None:
        """Store `value` (None deletes) under `key` once the outputs are out."""
        self._writes[(table.name, key)] = (table, value)

    async def deliver(self) -> None:
        """Wait for every output's acknowledgment, then write the state (and so its changelog records).

        Call it inside the record's own processing: the table picks its changelog partition from faust's
        current event.
        """
        await asyncio.gather(*self._sent)
        for (_, key), (table, value) in self._writes.items():
            if value is None:
                if table.get(key) is not None:
                    del table[key]
            else:
                table[key] = value
        self._sent.clear()
        self._writes.clear()
