"""A small bounded pool of asynchronous PostgreSQL connections, each bound to one simulator's schema.

The simulators need a handful of connections, not a pool library: at most `size` connections are open,
a request waits for a free one, and a connection that broke or was left inside a transaction is
closed instead of being handed to the next request. Connections are opened lazily inside the event
loop that serves requests, with `search_path` set to the simulator's schema, so its SQL names no schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import pq

from backbone.errors import ServiceUnavailableError


class ConnectionPool:
    def __init__(self, conninfo: str, schema: str, size: int) -> None:
        self._conninfo, self._schema, self._size = conninfo, schema, size
        self._idle: list[psycopg.AsyncConnection] = []
        self._slots: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection for one unit of work; returned to the pool only when left clean."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            conn = await self._take()
            try:
                yield conn
            except BaseException:
                await conn.close()
                raise
            if conn.closed or conn.info.transaction_status != pq.TransactionStatus.IDLE:
                await conn.close()
            else:
                self._idle.append(conn)

    async def _take(self) -> psycopg.AsyncConnection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, options=f"-c search_path={self._schema}"
            )
        except psycopg.OperationalError as error:
            raise ServiceUnavailableError(f"PostgreSQL is not reachable: {error}") from error

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
