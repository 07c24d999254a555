"""The gateway's lean request path: a request read straight from its ASGI scope, an answer sent straight
as ASGI messages, and delivery reports handed to the event loop in batches.

The webhook and events routes are the hot ones (docs/gateway.md, "Speed"). FastAPI's routing, exception
middleware, dependency solving and its `Request`/`Response` objects were about a fifth of the CPU a
signed webhook cost (docs/benchmarks.md), so these routes are served by `AccessLog` itself (as the
simulators' hot routes are by their `Observed` front) with these small pieces instead; the
routes stay declared on the FastAPI app for the OpenAPI document, and everything else goes through it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from producers.emitter import DeliveryError

POLL_INTERVAL_S = 0.001
"""How often the loop serves delivery reports while any is due: a report waits at most this long (the
producer lingers 1 ms and the broker answers in a few), and a `poll(0)` with nothing to serve costs
microseconds."""


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

    def body_buffered(self) -> bool:
        """Whether uvicorn's httptools protocol already holds the whole body, so reading it cannot wait
        and needs no deadline (arming and disarming `asyncio.timeout` was about 2 % of a webhook's CPU).
        False for any other server, or a body still arriving: those are read under the deadline."""
        cycle = getattr(self._receive, "__self__", None)
        return (
            type(cycle) is RequestResponseCycle
            and not self._body_done
            and not cycle.more_body
            and not cycle.waiting_for_100_continue
            and cycle.message_event.is_set()
        )

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
    """Delivery reports counted on one event loop. A request's records report to one `DeliveryReports`
    (`expect`), the callable librdkafka calls for each of them, so a record costs no
    `concurrent.futures.Future` (with its `Condition`), no `Delivery` and no done-callback.

    With `poll` (the emitter's, made without its polling thread) the loop itself serves the reports:
    every `POLL_INTERVAL_S` while any is due, a `poll(0)` that never blocks runs the callbacks right
    here. A polling thread cost a hand-over of the GIL and a wake-up of the loop for every batch of
    reports (about a third of a webhook's CPU went to producing and waiting: docs/benchmarks.md).
    Reports that arrive on another thread (a producer's full queue served in a worker thread, the
    final flush) are queued and handed over with one wake-up of the loop per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop, poll: Callable[[float], Any] | None = None) -> None:
        self.loop = loop
        self._poll = poll
        self._due = 0  # reports expected and not arrived yet: the loop polls while there are any
        self._polling = False
        self._loop_thread = threading.get_ident()  # made on the loop (`Gateway._deliveries_here`)
        self._arrived: deque[tuple[DeliveryReports, Any]] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False

    def expect(self, records: int) -> DeliveryReports:
        """The reports of a request of `records` records (call it on `loop`, before producing them)."""
        self._due += records
        if self._poll is not None and not self._polling:
            self._polling = True
            self.loop.call_later(POLL_INTERVAL_S, self._serve)
        return DeliveryReports(self, records)

    @property
    def polling(self) -> bool:
        """Whether the loop is polling for reports (only while some are due)."""
        return self._polling

    def forget(self, reports: DeliveryReports) -> None:
        """Expect no more reports for `reports` (its records could not all be produced)."""
        self._due = max(0, self._due - reports.unreported)
        reports.unreported = 0

    async def wait(self, reports: DeliveryReports, timeout_s: float) -> None:
        """Return once every record was delivered; `DeliveryError` for the first that was not, or
        `TimeoutError` after `timeout_s` (the reports go on: `reports.settled()` still waits for them)."""
        if reports.outcome is not None:
            reports.raise_failure()
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        reports.waiters.append(waiter)
        timer = self.loop.call_later(timeout_s, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    def arrived(self, reports: DeliveryReports, error: Any) -> None:
        """A report arrived: counted at once on the loop's thread; from any other, queued, and the loop
        woken unless a wake-up is pending."""
        if self.loop.is_closed():  # the final flush after the server stopped: nobody waits any more
            return
        if threading.get_ident() == self._loop_thread:
            self._count(reports, error)
            return
        self._arrived.append((reports, error))
        with self._lock:
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self.loop.call_soon_threadsafe(self._settle)

    def _count(self, reports: DeliveryReports, error: Any) -> None:
        if reports.unreported > 0:
            reports.unreported -= 1
            self._due = max(0, self._due - 1)
        reports.note(error)

    def _serve(self) -> None:
        """On the loop, while reports are due: run the callbacks of those librdkafka holds, without waiting."""
        try:
            self._poll(0)  # type: ignore[misc]
        finally:
            if self._due > 0 and not self.loop.is_closed():
                self.loop.call_later(POLL_INTERVAL_S, self._serve)
            else:
                self._polling = False

    def _settle(self) -> None:
        """On the loop: count every report that arrived from another thread."""
        with self._lock:
            self._wake_pending = False
        while self._arrived:
            reports, error = self._arrived.popleft()
            self._count(reports, error)


class DeliveryReports:
    """The delivery reports of one request's records: librdkafka calls it with `(error, message)` for
    each record (`Emitter.send_reported`), on whichever thread polls; it counts them on the loop."""

    __slots__ = ("_deliveries", "outcome", "remaining", "unreported", "waiters")

    def __init__(self, deliveries: Deliveries, records: int) -> None:
        self._deliveries = deliveries
        self.remaining = records
        self.unreported = records  # reports still to come, failures included (`remaining` counts successes)
        self.outcome: BaseException | bool | None = None
        """None while reports are due; True once all were delivered; the first failure's error."""
        self.waiters: list[asyncio.Future[None]] = []

    def __call__(self, error: Any, _message: Any = None) -> None:
        self._deliveries.arrived(self, error)

    def note(self, error: Any) -> None:
        """On the loop: one record's report; settle the waiters on the last one or the first failure."""
        if self.outcome is not None:  # an earlier record of this request failed
            return
        if error is not None:
            self._settle(DeliveryError(f"a record was not delivered: {_reason(error)}"))
            return
        self.remaining -= 1
        if self.remaining <= 0:
            self._settle(True)

    def raise_failure(self) -> None:
        if isinstance(self.outcome, BaseException):
            raise self.outcome

    async def settled(self) -> None:
        """Wait, however long it takes, until every report has arrived (or one failed, raised)."""
        if self.outcome is None:
            waiter: asyncio.Future[None] = self._deliveries.loop.create_future()
            self.waiters.append(waiter)
            await waiter
        self.raise_failure()

    def _settle(self, outcome: BaseException | bool) -> None:
        self.outcome = outcome
        for waiter in self.waiters:
            if waiter.done():  # timed out
                continue
            if outcome is True:
                waiter.set_result(None)
            else:
                waiter.set_exception(outcome)  # type: ignore[arg-type]
        self.waiters.clear()


def _reason(error: Any) -> str:
    """A librdkafka `KafkaError`'s text (its `str()` method), or any other error's."""
    text = getattr(error, "str", None)
    return str(text()) if callable(text) else str(error)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
