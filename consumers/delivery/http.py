"""A fixed set of keep-alive HTTP connections to one system, one request on each at a time.

`ClientPool(url, size)` holds `size` httpx clients of one connection each; `async with pool.client()`
waits for an idle one. That bounds the requests in flight exactly like a semaphore would, and avoids
httpcore's connection pool: with 64 connections in one pool it re-scans every connection for every
queued request (`_assign_requests_to_connections`), which took 20 ms of CPU per request on this
machine; one connection per client costs 2.7 ms (docs/delivery.md, benchmarks/delivery_bench.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx


class ClientPool:
    """`size` single-connection clients of one base URL; created inside the event loop that uses them."""

    def __init__(self, url: str, size: int, *, timeout: float, headers: dict[str, str] | None = None) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._clients = [
            httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers, limits=limits) for _ in range(size)
        ]
        self._idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._clients:
            self._idle.put_nowait(client)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        client = await self._idle.get()
        try:
            yield client
        finally:
            self._idle.put_nowait(client)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
