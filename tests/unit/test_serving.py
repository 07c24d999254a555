"""`backbone.serving`: what is written during one turn of the event loop leaves in one write of the real
transport (an answer's head and body in one send), closing sends what is held first, and a transport
closed meanwhile is written nothing; uvicorn's protocol serves whole answers through it."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn

from backbone.serving import CorkedHttpToolsProtocol, CorkedTransport
from tests.support import wait_until


class Recording:
    """The few transport methods `CorkedTransport` uses, recording the writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"


def test_the_writes_of_one_turn_of_the_loop_leave_in_one_write() -> None:
    async def scenario() -> list[bytes]:
        real = Recording()
        corked = CorkedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        corked.write(b"{}")
        assert real.writes == []  # held until the end of this turn
        await asyncio.sleep(0)
        corked.write(b"next")
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"next"]


def test_closing_sends_what_is_held_and_a_closed_transport_is_written_nothing() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        loop = asyncio.get_running_loop()
        closing, gone = Recording(), Recording()
        corked = CorkedTransport(closing, loop)  # type: ignore[arg-type]
        corked.write(b"last words")
        corked.close()
        dropped = CorkedTransport(gone, loop)  # type: ignore[arg-type]
        dropped.write(b"too late")
        gone.closed = True  # the client went away before the end of the turn
        await asyncio.sleep(0)
        assert corked.get_extra_info("peername") == "extra peername"  # the rest is the real transport's
        return closing.writes, gone.writes

    assert asyncio.run(scenario()) == ([b"last words"], [])


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_uvicorn_serves_whole_answers_through_it_on_a_kept_alive_connection() -> None:
    server = uvicorn.Server(
        uvicorn.Config(_app, host="127.0.0.1", port=0, http=CorkedHttpToolsProtocol, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=15, message="server started")
        port = server.servers[0].sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            answers = []
            for _ in range(2):
                client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b"ok"):
                    answer += client.recv(4096)
                answers.append(answer)
        assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 2\r\n" in a for a in answers)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
