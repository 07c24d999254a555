"""Group commit: the writes that arrive together are made in one database transaction, each answered after it.

A simulator that opened one transaction per request spent most of its CPU on the round trips of
BEGIN, a handful of statements and COMMIT, and PostgreSQL one WAL flush per request. Real engines
amortise both: requests that arrive while a transaction is being written wait for the next one, and
each caller is answered only once the transaction holding its write has committed, so an answer
still means "durably stored". `GroupCommit.submit(request)` queues one request and returns its own
result (or raises its own error) when its batch is done. One batch is written at a time; a batch
starts when `max_batch` requests wait or its first request has waited `window_s` (when the previous
batch took longer than that, at once).

The writer gets the batch and returns one result per request, in order: a value, or an exception
meant for that request alone (a refused request does not fail the others). An exception raised by
the writer itself fails the batch; when it is not the database being unreachable, each request is
then written again on its own, so one request the database refuses fails alone. Requests that must
not share a transaction (two upserts of one external id, whose second must see the first) are kept
apart by `apart_by`: a request whose key is already in the batch waits for the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

import psycopg

from backbone.errors import ServiceUnavailableError

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")

Writer = Callable[[Sequence[RequestT]], Awaitable[Sequence["ResultT | Exception"]]]

_UNREACHABLE = (psycopg.OperationalError, ServiceUnavailableError)

_Queued = tuple[RequestT, "asyncio.Future[ResultT]", float]
"""A queued request, the future its caller awaits, and when it was queued (monotonic)."""


class GroupCommit(Generic[RequestT, ResultT]):
    """Queues requests and writes them in batches, one batch (one transaction) at a time; one event loop."""

    def __init__(
        self,
        write: Writer[RequestT, ResultT],
        *,
        window_s: float,
        max_batch: int = 500,
        apart_by: Callable[[RequestT], Hashable | None] = lambda _: None,
    ) -> None:
        self._write = write
        self._window_s = window_s
        self._max_batch = max_batch
        self._apart_by = apart_by
        self._queue: deque[_Queued[RequestT, ResultT]] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, request: RequestT) -> ResultT:
        """Write `request` in the next batch; its result once that batch has committed."""
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future, time.monotonic()))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            wait = self._queue[0][2] + self._window_s - time.monotonic()
            if wait > 0 and len(self._queue) < self._max_batch:
                await asyncio.sleep(wait)
            batch = self._take()
            await self._settle(batch)

    def _take(self) -> list[_Queued[RequestT, ResultT]]:
        """Up to `max_batch` queued requests, oldest first, none sharing an `apart_by` key."""
        batch: list[_Queued[RequestT, ResultT]] = []
        later: list[_Queued[RequestT, ResultT]] = []
        keys: set[Hashable] = set()
        while self._queue and len(batch) < self._max_batch:
            entry = self._queue.popleft()
            key = self._apart_by(entry[0])
            if key is not None and key in keys:
                later.append(entry)
                continue
            if key is not None:
                keys.add(key)
            batch.append(entry)
        self._queue.extendleft(reversed(later))
        return batch

    async def _settle(self, batch: list[_Queued[RequestT, ResultT]]) -> None:
        requests = [request for request, _, _ in batch]
        try:
            results = await self._write(requests)
        except _UNREACHABLE as error:
            results = [error] * len(batch)
        except Exception as error:
            alone = len(batch) == 1
            results = [error] if alone else [await self._alone(request) for request in requests]
        for (_, future, _), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away (cancelled); its write stands
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _alone(self, request: RequestT) -> ResultT | Exception:
        """`request` written in a transaction of its own: its result, or the error it alone causes."""
        try:
            return (await self._write([request]))[0]
        except Exception as error:  # the request's answer (the service answers 503 or 500 and logs it)
            return error
