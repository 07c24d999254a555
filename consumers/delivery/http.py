"""The connector's HTTP client: one keep-alive aiohttp session to one system, at most `size` requests in flight.

Why aiohttp and not httpx: the connector's CPU per record was mostly its HTTP client. On the same stub
engine, at 64 requests in flight with 5 ms latency, httpx (one single-connection client per slot, the
cheapest way we found to hold it: httpcore's pool re-scans every connection for every queued request)
cost ~1.4 ms of CPU per request, aiohttp's client ~0.2 ms (`benchmarks/http_client_bench.py`,
docs/delivery.md). aiohttp parses HTTP/1.1 in C and keeps its pool per host in a dict of idle
connections, so a request costs a dict pop, not a scan.

`HttpClient.slot()` bounds the requests in flight (a semaphore of `size`; the connection pool has the
same size, so a request that holds a slot never waits for a connection). `post_json` sends one JSON
body and reads the whole answer; it turns the library's failures into two exceptions of this module,
`NoAnswerInTime` (the attempt's timeout passed: the request may have landed) and `CannotReach`
(connection refused, reset or closed before an answer), so the worker's policy never sees aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson


class NoAnswerInTime(Exception):
    """No complete answer within the attempt's timeout (the system may still have done the work)."""


class CannotReach(Exception):
    """The connection failed before a complete answer (refused, reset, closed by the server)."""


@dataclass(frozen=True)
class Answer:
    """A system's complete answer: status, headers (case-insensitive) and body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (a proxy's HTML error page, an empty body)."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


class HttpClient:
    """Requests to one base URL over at most `size` keep-alive connections; used from one event loop.

    The aiohttp session is opened on first use, inside the loop that runs the requests (aiohttp binds
    a session to its loop).
    """

    def __init__(self, url: str, size: int, *, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._size = size
        self._headers = dict(headers or {})
        self._slots = asyncio.Semaphore(size)
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `size` places for a request in flight."""
        async with self._slots:
            yield

    async def post_json(self, path: str, body: Any, headers: Mapping[str, str]) -> Answer:
        """POST `body` as JSON to `path`; the complete answer, or NoAnswerInTime / CannotReach."""
        session = self._session or self._open()
        data = orjson.dumps(body)
        try:
            async with session.post(
                self.url + path, data=data, headers={**headers, "Content-Type": "application/json"}
            ) as response:
                return Answer(response.status, response.headers, await response.read())
        except TimeoutError as error:  # aiohttp's ServerTimeoutError is one too, so it comes first
            raise NoAnswerInTime(f"no answer within {self.timeout}s") from error
        except (aiohttp.ClientError, OSError) as error:
            raise CannotReach(f"cannot reach {self.url}: {type(error).__name__}: {error}") from error

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._size, limit_per_host=self._size)
        self._session = aiohttp.ClientSession(
            headers=self._headers,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            raise_for_status=False,
        )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
