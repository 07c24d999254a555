"""The connector's HTTP client: keep-alive HTTP/1.1 connections to one system, at most `size` requests in flight.

Why its own client on asyncio's protocol API: the connector's CPU per record was mostly its HTTP
client. httpx cost ~1.4 ms of CPU per request, aiohttp's `ClientSession` ~0.3–0.4 ms on this machine
(a request object, a response object, header multidicts, URL objects, trace hooks, a timer context,
connection acquisition through its connector), which was a third of the connector's CPU per candidate
(docs/delivery.md, "Throughput"). A connector sends one kind of request, a JSON POST to one host, and
reads one complete answer, so this client does only that: one `asyncio.Protocol` per connection, the
answer parsed in C by httptools (llhttp, the parser uvicorn and Node use; already a dependency of the
simulators), the request head written from a template, one future and one timer per request
(`benchmarks/http_client_bench.py` compares it with aiohttp).

`HttpClient.slot()` bounds the requests in flight (a semaphore of `size`; at most `size` connections
are ever open, so a request that holds a slot never waits for a connection). `post_json` sends one
JSON body and reads the whole answer; its failures are two exceptions of this module,
`NoAnswerInTime` (the attempt's timeout passed: the request may have landed) and `CannotReach`
(connection refused, reset or closed before a complete answer, or an answer that is not HTTP), so the
worker's policy never sees the transport. A connection the server closed while it sat idle is noticed
before it is reused (it would fail the next request with "closed before an answer", which the
breaker counts), and one idle longer than `IDLE_LIMIT_S` is closed rather than reused: servers drop
idle keep-alive connections after a few seconds (uvicorn after 5).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson

IDLE_LIMIT_S = 4.0
"""A connection idle this long is closed instead of reused (below uvicorn's 5 s keep-alive)."""
PEEK_AFTER_S = 0.2
"""A plain-TCP connection idle at least this long is asked, without blocking, whether the server closed it."""


class NoAnswerInTime(Exception):
    """No complete answer within the attempt's timeout (the system may still have done the work)."""


class CannotReach(Exception):
    """The connection failed before a complete answer (refused, reset, closed by the server, not HTTP)."""


@dataclass(frozen=True)
class Answer:
    """A system's complete answer: status, headers (names in lower case) and body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (a proxy's HTML error page, an empty body)."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed by httptools as bytes arrive.

    The parser calls the `on_*` methods; `on_message_complete` resolves the request's future. A
    connection that ends before that fails the future with `CannotReach`, except an answer framed by
    the end of the connection (no Content-Length, not chunked), which is complete there.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._started = False
        self._framed = False
        """Whether the answer says where it ends (Content-Length or chunked) rather than at the connection's end."""

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(CannotReach(f"the answer is not valid HTTP/1.1: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._started and not self._framed:  # an answer that ends with the connection
            self._complete(keep_alive=False)
            return
        reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        self._fail(CannotReach(f"the connection closed before a complete answer{reason}"))

    # --- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._started = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        headers = self._headers
        self._framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete(keep_alive=self.parser.should_keep_alive())

    # --- requests -----------------------------------------------------------------------------------

    def _complete(self, *, keep_alive: bool) -> None:
        answer = Answer(self.parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body, self._started, self._framed = {}, [], False, False
        if not keep_alive:
            self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def expire(self, timeout: float) -> None:
        """The request's time is up: fail it, and close the connection (its answer may still come)."""
        self._fail(NoAnswerInTime(f"no answer within {timeout}s"))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def ended(self) -> bool:
        """Whether this connection is closed or closing (a transport failure closes it a moment before
        `connection_lost` is called; a request written then would wait out its whole timeout)."""
        return self.closed or self.transport is None or self.transport.is_closing()

    def server_closed(self) -> bool:
        """Whether the server has closed this idle connection, asked of the socket without blocking (plain TCP).

        Between two batches the loop does not run, so a close that arrived then has not reached
        `connection_lost` yet. asyncio's transport hides its socket's `recv`, so this peeks through a
        duplicate of the descriptor (two more system calls, only for a connection idle a while)."""
        transport = self.transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return False  # TLS: its records hide the end of the stream; the idle limit covers it
        try:
            with socket.fromfd(transport.get_extra_info("socket").fileno(), socket.AF_INET, socket.SOCK_STREAM) as peer:
                return peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True


class HttpClient:
    """JSON POSTs to one base URL over at most `size` keep-alive connections; used from one event loop."""

    def __init__(self, url: str, size: int, *, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._base_path = parts.path.rstrip("/")
        fixed = {"Host": parts.netloc, **(headers or {}), "Content-Type": "application/json"}
        self._head_end = "".join(f"{_checked(k)}: {_checked(v)}\r\n" for k, v in fixed.items())
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    def slot(self) -> asyncio.Semaphore:
        """One of the `size` places for a request in flight (`async with client.slot(): ...`)."""
        return self._slots

    async def post_json(self, path: str, body: Any, headers: Mapping[str, str]) -> Answer:
        """POST `body` as JSON to `path`; the complete answer, or NoAnswerInTime / CannotReach."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        data = orjson.dumps(body)
        extra = "".join(f"{_checked(k)}: {_checked(v)}\r\n" for k, v in headers.items())
        head = f"POST {self._base_path}{path} HTTP/1.1\r\n{self._head_end}{extra}Content-Length: {len(data)}\r\n\r\n"
        connection = self._reusable() or await self._connect(deadline)
        waiter: asyncio.Future[Answer] = loop.create_future()
        connection.waiter = waiter
        connection.transport.write(head.encode() + data)  # type: ignore[union-attr]
        timer = loop.call_at(deadline, connection.expire, self.timeout)
        try:
            answer = await waiter
        except BaseException:
            connection.close()  # its answer is unknown or late: never read it as the next request's
            self._open.discard(connection)
            raise
        finally:
            timer.cancel()
        if connection.closed:
            self._open.discard(connection)
        else:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        return answer

    def _reusable(self) -> _Connection | None:
        """The most recently used idle connection that is still open, or None (the stale ones are closed)."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            idle = now - connection.idle_since
            if connection.ended() or idle > IDLE_LIMIT_S or (idle > PEEK_AFTER_S and connection.server_closed()):
                connection.close()
                self._open.discard(connection)
                continue
            return connection
        return None

    async def _connect(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                tls_name = self._host if self._ssl else None
                _, connection = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl, server_hostname=tls_name
                )
        except TimeoutError as error:
            raise NoAnswerInTime(f"could not connect to {self.url} within {self.timeout}s") from error
        except OSError as error:  # refused, unreachable, name not resolved, TLS handshake failed
            raise CannotReach(f"cannot reach {self.url}: {type(error).__name__}: {error}") from error
        self._open.add(connection)
        return connection

    async def aclose(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing while the loop still runs


def _checked(text: str) -> str:
    """A header name or value as given; ValueError when it would break the header block (CR or LF)."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"newline or carriage return in an HTTP header: {text[:80]!r}")
    return text
