"""The first round trip of a simulator's batch write: BEGIN, the schema's write lock and the batch's lookup.

Both simulators' stores (`BillingStore`, `ErpStore`) write a batch of requests in one transaction that
holds an advisory lock of their schema, so batches are written one after the other, even by several
processes. The batch costs two round trips: BEGIN, the lock and the lookup of the batch's keys go as one
query string (`LockedBatch.begin`), and the store's inserts and COMMIT as another. PostgreSQL runs the
statements of one string one after the other, each with a snapshot of its own, so the lookup sees every
write committed before the lock was granted. Such strings take no parameters: the keys travel as a JSON
literal escaped by libpq, and the inserts are statements prepared once per connection and EXECUTEd.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from psycopg.pq import Escaping

EscapeLiteral = Callable[[bytes], bytes]
"""libpq's escaping of a value as an SQL literal, for the statements of a query string."""


class LockedBatch:
    """One store's batch transaction: its advisory lock, its prepared statements and its lookup.

    `lock_name` names the lock (a stable 64-bit number is derived from it); `statements` are PREPAREd on
    each connection before its first batch; `lookup` is the batch's SELECT with one `%s`, where the keys
    go as a JSON array. The lookup is planned for each batch, never prepared: a plan prepared while the
    table was empty kept a sequential scan as it grew (docs/delivery.md, "Eleventh session")."""

    def __init__(self, lock_name: str, statements: bytes, lookup: bytes) -> None:
        digest = hashlib.sha256(lock_name.encode()).digest()
        self._begin_locked = b"BEGIN; SELECT pg_advisory_xact_lock(%d);" % int.from_bytes(
            digest[:8], "big", signed=True
        )
        self._statements, self._lookup = statements, lookup
        self._prepared: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    async def begin(
        self, conn: psycopg.AsyncConnection[Any], cursor: psycopg.AsyncCursor[Any], keys: list[str]
    ) -> EscapeLiteral:
        """Begin the batch's transaction on `conn`, take the lock and look `keys` up, in one round trip;
        `cursor` is left on the lookup's rows. Returns the escaping for the store's second query string.
        A failure leaves the transaction open: the pool closes such a connection, which rolls it back."""
        if conn not in self._prepared:
            await cursor.execute(self._statements)
            self._prepared.add(conn)
        literal: EscapeLiteral = Escaping(conn.pgconn).escape_literal
        await cursor.execute(self._begin_locked + self._lookup % literal(orjson.dumps(keys)))
        while cursor.nextset():  # past BEGIN's and the lock's results to the lookup's, the last
            pass
        return literal
