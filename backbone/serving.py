"""Serving HTTP under uvicorn with one system call per answer: a corked transport and the protocol that uses it.

uvicorn's httptools protocol writes an answer's head and its body with two `transport.write` calls, and
on an idle socket each one is a `send` of its own: about a seventh of a small JSON answer's CPU under
load (docs/delivery.md, "Throughput"; the gateway measured the same, docs/benchmarks.md).
`CorkedTransport` holds what is written during one turn of the event loop and sends it with one call
at the end of that turn; `CorkedHttpToolsProtocol` is uvicorn's protocol on such a transport (give it
as `uvicorn.Config(http=...)`). Nothing else changes: flow control, closing and the peer's address
are the real transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """A transport whose writes of one loop iteration leave in one system call; everything else goes to
    the real transport, and closing sends what is held first."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self._send_held)
        self._held.append(data)

    def close(self) -> None:
        self._send_held()
        self._transport.close()

    def _send_held(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():  # a client gone meanwhile is owed nothing
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a `CorkedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
