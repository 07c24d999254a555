"""The connector's HTTP client against real servers on loopback: framing, keep-alive, failures, bounds.

Each test starts an asyncio server on a port the kernel picks, answering with raw bytes, so the
client meets what real systems send: Content-Length and chunked bodies, bodies that end with the
connection, `Connection: close`, idle connections the server drops, answers that never come or stop
half way, and bytes that are not HTTP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumers.delivery.http import Answer, CannotReach, HttpClient, NoAnswerInTime

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(body: bytes = b'{"ok": true}', *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    length = str(len(body)).encode()
    return b"HTTP/1.1 " + status.encode() + b"\r\ncontent-length: " + length + b"\r\n" + extra + b"\r\n" + body


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request, read by its Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


def run(handler: Handler, test: Callable[[str, list[int]], Awaitable[None]]) -> None:
    """Serve `handler` on loopback and run `test(url, connections)`; `connections` counts accepted connections."""

    async def main() -> None:
        connections: list[int] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            try:
                await handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await test(f"http://127.0.0.1:{port}", connections)

    asyncio.run(main())


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        _, body = await read_request(reader)
        writer.write(answer(body, extra=b"retry-after: 7\r\n"))


def test_requests_reuse_one_keep_alive_connection_and_read_the_answer() -> None:
    async def test(url: str, connections: list[int]) -> None:
        client = HttpClient(url, 4, timeout=5, headers={"User-Agent": "t"})
        first = await client.post_json("/v1/x", {"a": 1}, {"Idempotency-Key": "k1"})
        second = await client.post_json("/v1/x", {"a": 2}, {"Idempotency-Key": "k2"})
        await client.aclose()
        assert (first.status, first.json(), second.json()) == (200, {"a": 1}, {"a": 2})
        assert first.headers["retry-after"] == "7"  # names in lower case, whatever the server wrote
        assert len(connections) == 1

    run(keep_answering, test)


def test_the_request_carries_path_headers_and_a_json_body() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(answer())

    async def test(url: str, _: list[int]) -> None:
        client = HttpClient(url + "/base/", 1, timeout=5, headers={"Authorization": "Bearer s"})
        await client.post_json("/v1/invoiceitems", {"amount": 15000}, {"Idempotency-Key": "cand-1"})
        await client.aclose()

    run(handler, test)
    head, body = seen[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /base/v1/invoiceitems HTTP/1.1"
    assert {"Authorization: Bearer s", "Idempotency-Key: cand-1", "Content-Type: application/json"} <= set(lines)
    assert body == b'{"amount":15000}'


def test_a_chunked_answer_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        head = b"HTTP/1.1 402 Payment Required\r\ntransfer-encoding: chunked\r\n\r\n"
        writer.write(head + b'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n')
        await read_request(reader)  # the connection stays usable
        writer.write(answer())

    async def test(url: str, connections: list[int]) -> None:
        client = HttpClient(url, 1, timeout=5)
        refused = await client.post_json("/", {}, {})
        again = await client.post_json("/", {}, {})
        await client.aclose()
        assert (refused.status, refused.json(), again.status, len(connections)) == (402, {"a": 1}, 200, 1)

    run(handler, test)


def test_an_answer_that_ends_with_the_connection_is_complete_and_the_next_request_reconnects() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\r\n<html>down</html>")
        await writer.drain()

    async def test(url: str, connections: list[int]) -> None:
        client = HttpClient(url, 1, timeout=5)
        down = await client.post_json("/", {}, {})
        again = await client.post_json("/", {}, {})
        await client.aclose()
        assert (down.status, down.body, down.json()) == (503, b"<html>down</html>", None)
        assert again.status == 503 and len(connections) == 2

    run(handler, test)


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer())
        await writer.drain()  # then the handler returns and the server closes the idle connection

    async def test(url: str, connections: list[int]) -> None:
        client = HttpClient(url, 1, timeout=5)
        await client.post_json("/", {}, {})
        # the close has reached the client's socket, but no loop callback has run for it (as between batches)
        connection = client._idle[0]
        fd = connection.transport.get_extra_info("socket").fileno()  # type: ignore[union-attr]
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as peer:
            peer.settimeout(5)
            assert peer.recv(1, socket.MSG_PEEK) == b""  # waits (blocking) for the server's close
        connection.idle_since -= 1  # idle long enough to be asked
        second = await client.post_json("/", {}, {})
        await client.aclose()
        assert second.status == 200 and len(connections) == 2

    run(handler, test)


def test_no_answer_within_the_timeout_is_no_answer_in_time_and_the_connection_is_dropped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers

    async def test(url: str, connections: list[int]) -> None:
        client = HttpClient(url, 1, timeout=0.2)
        with pytest.raises(NoAnswerInTime):
            await client.post_json("/", {}, {})
        assert client._idle == []
        await client.aclose()

    run(handler, test)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"", id="closed-before-answering"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{", id="closed-half-way-through-the-body"),
        pytest.param(b"SSH-2.0-OpenSSH\r\n\r\n", id="not-http"),
    ],
)
def test_an_incomplete_or_foreign_answer_cannot_reach(reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    async def test(url: str, _: list[int]) -> None:
        client = HttpClient(url, 1, timeout=5)
        with pytest.raises(CannotReach):
            await client.post_json("/", {}, {})
        await client.aclose()

    run(handler, test)


def test_a_refused_connection_cannot_reach() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    port = holder.getsockname()[1]

    async def test() -> None:
        client = HttpClient(f"http://127.0.0.1:{port}", 1, timeout=5)
        with pytest.raises(CannotReach):
            await client.post_json("/", {}, {})

    try:
        asyncio.run(test())
    finally:
        holder.close()


def test_requests_in_flight_are_bounded_by_the_slots() -> None:
    in_flight, most = [0], [0]
    full = asyncio.Event()  # no answer until three requests were in flight at once

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            if in_flight[0] == 3:
                full.set()
            await full.wait()
            in_flight[0] -= 1
            writer.write(answer())

    async def test(url: str, connections: list[int]) -> None:
        client = HttpClient(url, 3, timeout=5)

        async def send() -> Answer:
            async with client.slot():
                return await client.post_json("/", {}, {})

        answers = await asyncio.gather(*(send() for _ in range(20)))
        await client.aclose()
        assert [a.status for a in answers] == [200] * 20
        assert most[0] == 3 and len(connections) == 3

    run(handler, test)


def test_a_header_value_with_a_newline_is_refused_before_anything_is_sent() -> None:
    async def test(url: str, connections: list[int]) -> None:
        client = HttpClient(url, 1, timeout=5)
        with pytest.raises(ValueError, match="newline"):
            await client.post_json("/", {}, {"X-Correlation-Id": "a\r\nX-Evil: 1"})
        await client.aclose()
        assert connections == []

    run(keep_answering, test)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, signed by its own key: (certificate, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-certificate", "untrusted-certificate"])
def test_https_verifies_the_servers_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool) -> None:
    cert_file, key_file = self_signed(tmp_path)
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the default context's trust store
    else:
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-bundle.pem"))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)

    async def main() -> None:
        server = await asyncio.start_server(keep_answering, "127.0.0.1", 0, ssl=server_tls)
        port = server.sockets[0].getsockname()[1]
        async with server:
            client = HttpClient(f"https://127.0.0.1:{port}", 1, timeout=5)
            try:
                if trusted:
                    first = await client.post_json("/v1/x", {"a": 1}, {})
                    second = await client.post_json("/v1/x", {"a": 2}, {})  # over the same TLS connection
                    assert (first.json(), second.json(), len(client._open)) == ({"a": 1}, {"a": 2}, 1)
                else:
                    with pytest.raises(CannotReach, match="SSLCertVerificationError"):
                        await client.post_json("/v1/x", {}, {})
            finally:
                await client.aclose()

    asyncio.run(main())


def test_an_idle_connection_whose_transport_is_closing_is_not_reused() -> None:
    async def test(url: str, connections: list[int]) -> None:
        client = HttpClient(url, 1, timeout=5)
        await client.post_json("/", {}, {})
        idle = client._idle[0]
        idle.transport.close()  # type: ignore[union-attr]  # closing; connection_lost not called yet
        assert not idle.closed
        again = await client.post_json("/", {}, {})
        await client.aclose()
        assert again.status == 200 and len(connections) == 2

    run(keep_answering, test)
