"""What every request passes before a handler: authentication, the role check, and where a write runs.

`Gate.admit` answers 401 (`40101`, with a `WWW-Authenticate: Basic` challenge) for missing or wrong
credentials and 403 (`40301`) for a role that may not do what the request asks, with Confluent's error
bodies. A write (`auth.is_write`) then runs here only if this instance leads; otherwise it is forwarded,
body and credentials unchanged, to the instance the log names as leader, and the follower waits until
its own state holds the write before answering, so a client reads its write from any instance. While
no leader answers (an election in progress) a write waits up to `leader_wait` seconds for one, then
gets 503 with Confluent's "unknown leader" code 50004, which clients retry. Each write attempt is
audited once (`audit.AuditLog`): by the leader that carried it out, or by the instance that refused it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import structlog
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from starlette.concurrency import run_in_threadpool

from backbone.registry.audit import AuditLog
from backbone.registry.auth import ANONYMOUS, Authenticator, Principal, Role, required_role
from backbone.registry.replica import SchemaStore

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
FORWARDED_BY = "X-Backbone-Forwarded-By"
"""Set on a write a follower forwards: its receiver never forwards it again (no loops)."""
REALM = 'Basic realm="backbone-schema-registry"'
log = structlog.get_logger("backbone.registry")
CallNext = Callable[[Request], Awaitable[Response]]


def error_response(status: int, error_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error_code": error_code, "message": message}, status_code=status, headers=headers, media_type=MEDIA_TYPE
    )


@dataclass(frozen=True)
class Call:
    """A request as the gate sees it."""

    method: str
    path: str  # still percent-encoded, so a subject's `/` stays inside its segment
    query: dict[str, str]
    needed: Role | None
    forwarded_by: str | None
    authorization: str | None

    @property
    def is_write(self) -> bool:
        return self.needed is not None and self.needed > Role.READER


class Gate:
    def __init__(
        self,
        store: SchemaStore,
        authenticator: Authenticator | None,
        audit: AuditLog,
        leader_wait: float,
        metrics: CollectorRegistry,
    ) -> None:
        self._store = store
        self._authenticator = authenticator
        self._audit = audit
        self._leader_wait = leader_wait
        self._client: httpx.AsyncClient | None = None
        self._forwarded = Counter(
            "registry_forwarded_writes", "Writes forwarded to the leader.", ["outcome"], registry=metrics
        )

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        call = _call_of(request)
        principal = Principal(ANONYMOUS, Role.ADMIN) if self._authenticator is None else None
        if call.needed is not None and self._authenticator is not None:
            principal = await self._principal(request.headers.get("authorization"))
            refusal = _refusal(call, principal)
            if refusal is not None:
                return self._audited(call, principal, refusal)
        if not call.is_write:
            return await call_next(request)
        return await self._write(request, call, principal, call_next)

    async def _principal(self, authorization: str | None) -> Principal | None:
        assert self._authenticator is not None
        if self._authenticator.is_cached(authorization):
            return self._authenticator.principal(authorization)
        return await run_in_threadpool(self._authenticator.principal, authorization)  # scrypt: off the loop

    async def _write(self, request: Request, call: Call, principal: Principal | None, call_next: CallNext) -> Response:
        """Run the write here if this instance leads, else forward it; wait for a leader meanwhile."""
        body = await request.body()
        deadline = time.monotonic() + self._leader_wait
        tried: set[tuple[str, str]] = set()
        while True:
            if self._store.is_leader:
                return self._audited(call, principal, await _buffered(await call_next(request)))
            leader = self._store.state.leader or {}
            target = (str(leader.get("url", "")).rstrip("/"), str(leader.get("since", "")))
            if call.forwarded_by is None and target[0] and target[0] != self._store.url and target not in tried:
                tried.add(target)
                forwarded = await self._forward(request, body, target[0])
                if forwarded is not None:
                    return forwarded
            if time.monotonic() > deadline:
                refusal = error_response(503, 50004, "No leader is known to take this write now; retry shortly.")
                return self._audited(call, principal, refusal)
            await asyncio.sleep(0.05)  # an election is in progress: look again for the leader it names

    async def _forward(self, request: Request, body: bytes, leader: str) -> Response | None:
        """The leader's answer, or None when it could not take the write (gone, or no longer leading)."""
        headers = {name: value for name, value in request.headers.items() if name in _FORWARDED_HEADERS}
        headers[FORWARDED_BY] = self._store.url
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = leader + raw_path.decode("ascii") + (f"?{request.url.query}" if request.url.query else "")
        try:
            answer = await self._http().request(request.method, url, content=body, headers=headers)
        except httpx.TransportError as e:
            self._forwarded.labels("leader_unreachable").inc()
            log.warning("registry_forward_failed", leader=leader, error=str(e))
            return None
        if answer.status_code == 503 and _error_code(answer.content) == 50004:
            self._forwarded.labels("not_leader").inc()
            return None
        self._forwarded.labels("answered").inc()
        if answer.status_code < 300:
            await run_in_threadpool(self._store.sync, 5.0)  # read-your-writes on this instance
        media_type = answer.headers.get("content-type", MEDIA_TYPE)
        return Response(answer.content, status_code=answer.status_code, media_type=media_type)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._leader_wait + 15.0)
        return self._client

    def _audited(self, call: Call, principal: Principal | None, response: Response) -> Response:
        if call.is_write:
            self._audit.record(
                user=principal.user if principal else ANONYMOUS,
                claimed_user=None if principal else claimed_user(call.authorization),
                role=principal.role.label if principal else None,
                method=call.method,
                path=unquote(call.path),
                query=call.query or None,
                status=response.status_code,
                answer=_answer_of(response),
                via=call.forwarded_by,
            )
        return response


_FORWARDED_HEADERS = frozenset({"authorization", "content-type", "accept", "x-correlation-id"})


def _call_of(request: Request) -> Call:
    raw = request.scope.get("raw_path")
    path = raw.decode("ascii", "replace") if raw else request.url.path
    query = dict(request.query_params)
    needed = required_role(request.method, path, query)
    headers = request.headers
    return Call(request.method, path, query, needed, headers.get(FORWARDED_BY), headers.get("authorization"))


def _refusal(call: Call, principal: Principal | None) -> Response | None:
    if principal is None:
        return error_response(401, 40101, "Unauthorized", headers={"WWW-Authenticate": REALM})
    assert call.needed is not None
    if principal.role < call.needed:
        return error_response(
            403,
            40301,
            f"User {principal.user} ({principal.role.label}) is denied {call.method} {unquote(call.path)}: "
            f"it needs the {call.needed.label} role",
        )
    return None


def claimed_user(authorization: str | None) -> str | None:
    """The user name refused credentials claim (never the password): who tried, as far as it can be told."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[0][:100] or None
    except (ValueError, binascii.Error):
        return None


async def _buffered(response: Response) -> Response:
    """A streamed handler response read into memory (small JSON), so the audit line can quote it."""
    body = getattr(response, "body", None)
    if body is None:
        chunks = [chunk async for chunk in response.body_iterator]  # type: ignore[attr-defined]
        body = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(body, status_code=response.status_code, headers=headers)


def _answer_of(response: Response) -> Any:
    body = getattr(response, "body", b"")
    try:
        answer = json.loads(body) if body else None
    except ValueError:
        return None
    return answer if len(body) <= 2_000 else None


def _error_code(content: bytes) -> int | None:
    try:
        return int(json.loads(content).get("error_code"))
    except (ValueError, TypeError, AttributeError):
        return None
