"""The gateway's lean request path: a request read straight from its ASGI scope, an answer sent straight
as ASGI messages, and delivery reports handed to the event loop in batches.

The webhook and events routes are the hot ones (docs/gateway.md, "Speed"). FastAPI's routing, exception
middleware, dependency solving and its `Request`/`Response` objects were about a fifth of the CPU a
signed webhook cost (docs/benchmarks.md), so these routes are served by `AccessLog` itself (as the
simulators' `PlainRoute`s are by their `Observed` middleware) with these small pieces instead; the
routes stay declared on the FastAPI app for the OpenAPI document, and everything else goes through it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class Incoming:
    """One request as the gateway's handlers read it: its headers (lower-case names; the first value of a
    repeated header, as Starlette's `Headers.get` gives), the client's address, the ASGI state (the
    access log reads the principal from it) and the body as it arrives."""

    __slots__ = ("_body_done", "_receive", "client", "headers", "state")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.headers: dict[str, str] = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])
        }
        client = scope.get("client")
        self.client: str = client[0] if client else "unknown"
        self.state: dict[str, Any] = scope.setdefault("state", {})
        self._receive = receive
        self._body_done = False

    async def chunk(self) -> bytes | None:
        """The body's next chunk, None after the last; `ClientDisconnect` when the client hangs up
        before the end. (A method, not an async generator: the loop tracks every async generator in a
        weak set, a cost per request.)"""
        if self._body_done:
            return None
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        self._body_done = not message.get("more_body", False)
        return message.get("body", b"")


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer: status, body and extra headers. Sent as two ASGI messages on the lean path, or
    turned into a Starlette `Response` for routes FastAPI serves."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] | None = None

    async def send(self, send: Send) -> None:
        content = orjson.dumps(self.body)
        headers = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
        if self.headers:
            extra = self.headers.items()
            headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def response(self) -> Response:
        return Response(orjson.dumps(self.body), self.status, dict(self.headers or {}), "application/json")


class Deliveries:
    """Delivery reports, which librdkafka's callbacks resolve on the emitter's polling thread, handed to
    one event loop in batches: one wake-up of the loop per batch of reports, where `asyncio.wrap_future`
    woke it once per record and `gather`/`shield`/`wait_for` added a task and callbacks per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._arrived: deque[tuple[asyncio.Future[None], list[int], Future[Any]]] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False

    async def wait(self, futures: Sequence[Future[Any]], timeout_s: float) -> None:
        """Return once every future succeeded; the first failure's exception, or `TimeoutError` after
        `timeout_s` (the futures go on: the caller may still wait for them). Call it on `loop`."""
        if not futures:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        remaining = [len(futures)]
        arrive = partial(self._arrive, waiter, remaining)
        for future in futures:
            future.add_done_callback(arrive)
        timer = self.loop.call_later(timeout_s, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    def _arrive(self, waiter: asyncio.Future[None], remaining: list[int], done: Future[Any]) -> None:
        """A future resolved (on any thread): queue it, and wake the loop unless a wake-up is pending."""
        self._arrived.append((waiter, remaining, done))
        with self._lock:
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self.loop.call_soon_threadsafe(self._settle)  # RuntimeError once the loop is closed: nobody waits

    def _settle(self) -> None:
        """On the loop: resolve the waiters of every report that arrived."""
        with self._lock:
            self._wake_pending = False
        while self._arrived:
            waiter, remaining, done = self._arrived.popleft()
            if waiter.done():  # timed out, or an earlier record of its request failed
                continue
            error = done.exception()
            if error is not None:
                waiter.set_exception(error)
                continue
            remaining[0] -= 1
            if remaining[0] == 0:
                waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
