"""What every simulator's HTTP service shares: faults, metrics, logs, health, the admin endpoint and the hot routes.

A simulator's app is a `SimulatorApp`: `Observed` stands in front of all of it. For the API routes
(`/v1/...`) it asks the `FaultSchedule` for the request's fate (delay, refuse, slow answer); for every
route it echoes the caller's `X-Correlation-Id`, adds a `Request-Id`, counts the request by route and
outcome, times it and logs it (successes at DEBUG, the rest at INFO, with the correlation id). The hot
`POST /v1/...` routes (`add_hot_route`) it serves itself: their handler reads an `Incoming` and returns
an `Answer`, sent as two ASGI messages, without FastAPI's middleware, routing, dependency solving and
Starlette's `Request`/`Response` (together about two fifths of the billing simulator's CPU per item:
docs/delivery.md, "Throughput"). They stay declared on the FastAPI app, so the OpenAPI document shows
them. Every other request goes through FastAPI. `install_common` also adds `/healthz`, `/metrics`
(Prometheus) and `/admin/faults` (GET the plan in force, POST a new one, DELETE to heal), the last
guarded by a bearer token compared in constant time. Each simulator formats its own error bodies
(`ProblemFormat`).
"""

from __future__ import annotations

import asyncio
import hmac
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backbone.errors import ServiceUnavailableError
from consumers.simulators.faults import FaultDecision, FaultPlan, FaultSchedule

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig  # FastAPI ≥ 0.165; only named in an annotation

API_PREFIX = "/v1/"
CORRELATION_HEADER = "X-Correlation-Id"
CLIENT_CLOSED = 499
"""The status noted (never sent) for a request whose client hung up before its answer."""
WITHOUT_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""`FastAPI(telemetry=...)` for the simulators: FastAPI's own OpenTelemetry hooks off. The simulators
have their own Prometheus metrics and logs, and with the hooks on FastAPI asked the global tracer,
meter and logger providers whether they were configured on every request: ~6% of the billing
simulator's CPU per item in a py-spy profile (docs/delivery.md, "Throughput"). Older FastAPI versions
keep an unknown keyword in `app.extra`, so this is harmless there."""
_UNREACHABLE = (psycopg.OperationalError, ServiceUnavailableError)
_request_ids = random.Random()
"""Request ids need to be unique, not secret: 56 random bits without a system call per request."""
_NO_FAULT = FaultDecision()


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer: status, body bytes and extra headers. Sent as two ASGI messages by `Observed`, or
    turned into a Starlette `Response` for the routes FastAPI serves."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def with_header(self, name: str, value: str) -> Answer:
        return replace(self, headers=(*self.headers, (name, value)))

    def response(self) -> Response:
        return Response(self.body, self.status, dict(self.headers), media_type="application/json")

    def start_message(self, extra: list[tuple[bytes, bytes]]) -> Message:
        """The `http.response.start` message: length, type, the answer's headers, then `extra`."""
        headers = [(b"content-length", b"%d" % len(self.body)), (b"content-type", b"application/json")]
        headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers]
        return {"type": "http.response.start", "status": self.status, "headers": headers + extra}


class ProblemFormat(Protocol):
    """How a simulator words an error: status, machine code, message and the offending field."""

    def __call__(self, status: int, code: str, message: str, field: str | None = None) -> Answer: ...


class Incoming:
    """One request of a hot route as its handler reads it: the headers (lower-case names; the first value
    of a repeated header, as Starlette's `Headers.get` gives) and the body."""

    __slots__ = ("_receive", "headers")

    def __init__(self, headers: dict[str, str], receive: Receive) -> None:
        self.headers, self._receive = headers, receive

    async def body(self) -> bytes:
        """The whole body; `ClientDisconnect` when the client hangs up before its end."""
        chunks: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


Handler = Callable[[Incoming], Awaitable[Answer]]
"""A hot route's handler: the request in, its answer out (refusals included, as answers)."""


class SimulatorMetrics:
    """A simulator's Prometheus series, in a registry of its own (one per app)."""

    def __init__(self, simulator: str) -> None:
        self.simulator = simulator
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "simulator_requests",
            "HTTP requests by route and outcome",
            ["simulator", "route", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "simulator_request_seconds",
            "Request latency, injected delays included",
            ["simulator", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.documents = Counter(
            "simulator_documents_stored",
            "Documents written (created, updated) or found again for a retry (unchanged, replayed)",
            ["simulator", "kind"],
            registry=self.registry,
        )
        self.faults = Counter(
            "simulator_faults_injected",
            "Requests refused by fault injection",
            ["simulator", "kind"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """The labelled series (`labels()` is a lookup under a lock worth doing once per label set)."""
        found = self._children.get((metric._name, *labels))
        if found is None:
            found = metric.labels(self.simulator, *labels)
            if len(self._children) < 1000:  # routes x outcomes is small; never let odd labels grow it
                self._children[(metric._name, *labels)] = found
        return found

    def count_request(self, route: str, outcome: str, seconds: float) -> None:
        self._child(self.requests, route, outcome).inc()
        self._child(self.latency, route).observe(seconds)

    def count_document(self, kind: str) -> None:
        self._child(self.documents, kind).inc()

    def count_fault(self, kind: str) -> None:
        self._child(self.faults, kind).inc()


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


class SimulatorApp(FastAPI):
    """A simulator's FastAPI app with `Observed` in front of all of it (set by `install_common`): every
    request is observed there, and the hot routes are served there, before FastAPI's layers."""

    front: Observed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)


def install_common(
    app: SimulatorApp,
    *,
    name: str,
    schedule: FaultSchedule,
    metrics: SimulatorMetrics,
    problem: ProblemFormat,
    admin_token: str | None,
) -> None:
    """Put `Observed` in front of the app; add the /healthz, /metrics and /admin/faults routes."""
    log = structlog.get_logger(name)
    app.front = Observed(
        partial(FastAPI.__call__, app),
        name=name,
        schedule=schedule,
        metrics=metrics,
        problem=problem,
        log=log,
        routes=app.router,
    )
    _admin_routes(app, schedule, problem, admin_token, log)
    _error_handlers(app, problem, log)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "simulator": name}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def add_hot_route(app: SimulatorApp, path: str, handler: Handler, **declared: Any) -> None:
    """Serve `POST path` with `handler` in `Observed`; declared on the app too (`declared`: summary,
    status code, openapi_extra), so the OpenAPI document shows it. Its path must have no parameters."""

    async def through_fastapi(request: Request) -> Response:  # what FastAPI would run (never reached)
        return (await handler(Incoming(_headers(request.scope), request.receive))).response()

    through_fastapi.__name__ = handler.__name__
    app.router.add_api_route(path, through_fastapi, methods=["POST"], **declared)
    route = next(r for r in app.router.routes if isinstance(r, APIRoute) and r.endpoint is through_fastapi)
    app.front.hot[path] = (route, handler)


class Observed:
    """The front of every request: for the API routes (`/v1/...`) the fault schedule's decision (delay,
    refuse, slow answer); for all, the caller's `X-Correlation-Id` echoed, a `Request-Id`, the request
    counted and timed by route and outcome, and a log line. It serves the hot routes (`hot`, by path)
    itself and hands the rest to FastAPI (`app`).

    A plain ASGI callable: Starlette's `BaseHTTPMiddleware` ran each request in a task group and copied
    the response through a stream (half a millisecond per request). A successful request is logged at
    DEBUG (one JSON line per request was a tenth of the simulator's CPU at a few hundred requests per
    second); refused, failed and fault-injected ones at INFO. The log lines of a hot request carry the
    simulator and the correlation id themselves; the other routes, which may log inside FastAPI, have
    them bound to structlog's context (binding them costs a few per cent of a hot request).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str,
        schedule: FaultSchedule,
        metrics: SimulatorMetrics,
        problem: ProblemFormat,
        log: Any,
        routes: Router,
    ) -> None:
        self.app, self.name, self.schedule, self.metrics = app, name, schedule, metrics
        self.problem, self.log = problem, log
        self._routes = routes
        self.hot: dict[str, tuple[APIRoute, Handler]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _headers(scope)
        correlation_id = headers.get("x-correlation-id")
        decision = _NO_FAULT
        if scope["path"].startswith(API_PREFIX):
            decision = self.schedule.decide((headers.get("idempotency-key", ""), correlation_id or ""))
        hot = self.hot.get(scope["path"]) if scope["method"] == "POST" else None
        if hot is not None:
            scope["route"] = hot[0]
            status = await self._serve_hot(hot[1], Incoming(headers, receive), send, decision, correlation_id)
        else:
            with structlog.contextvars.bound_contextvars(**self._context(correlation_id)):
                status = await self._serve_app(scope, receive, send, decision, correlation_id)
        self._record(scope, status, decision, correlation_id, time.perf_counter() - started)

    async def _serve_hot(
        self, handler: Handler, request: Incoming, send: Send, decision: FaultDecision, correlation_id: str | None
    ) -> int:
        """Answer a hot request under `decision`; the status sent."""
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if decision.refuses:
            answer = self._refusal(decision)
        else:
            try:
                answer = await handler(request)
            except ClientDisconnect:
                return CLIENT_CLOSED
            except Exception as error:
                answer = self._failure(error, correlation_id)
        if decision.first_byte_delay_s:  # handled and committed; the answer is late
            await asyncio.sleep(decision.first_byte_delay_s)
        await send(answer.start_message(_extra_headers(correlation_id)))
        await send({"type": "http.response.body", "body": answer.body})
        return answer.status

    async def _serve_app(
        self, scope: Scope, receive: Receive, send: Send, decision: FaultDecision, correlation_id: str | None
    ) -> int:
        """Hand a request to FastAPI under `decision` (a refusal is answered here); the status sent."""
        answered = _Answered(send, correlation_id, decision.first_byte_delay_s)
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if decision.refuses:
            await answered.answer(self._refusal(decision))
            return answered.status
        try:
            await self.app(scope, receive, answered)
        except Exception as error:  # FastAPI has answered 500 already when it could (`_error_handlers`)
            await answered.answer_unless_started(self._failure(error, correlation_id))
        return answered.status

    def _refusal(self, decision: FaultDecision) -> Answer:
        self.metrics.count_fault(decision.kind)
        return _fault_answer(decision, self.problem)

    def _failure(self, error: Exception, correlation_id: str | None) -> Answer:
        """The answer to a request that raised `error` (503 when the database is unreachable), logged."""
        context = self._context(correlation_id)
        if isinstance(error, _UNREACHABLE):
            self.log.error("database unavailable", error=str(error), **context)
            return _unavailable(self.problem)
        self.log.error("request failed", exc_info=error, **context)
        return self.problem(500, "internal_error", "the simulator failed on this request; see its log")

    def _context(self, correlation_id: str | None) -> dict[str, str]:
        return {"simulator": self.name} | ({"correlation_id": correlation_id} if correlation_id else {})

    def _record(
        self, scope: Scope, status: int, decision: FaultDecision, correlation_id: str | None, elapsed: float
    ) -> None:
        """Count and time the request by route and outcome; log it (successes at DEBUG)."""
        outcome = f"injected_{decision.kind}" if decision.refuses else outcome_of(status)
        route = self._route_of(scope)
        self.metrics.count_request(route, outcome, elapsed)
        level = self.log.debug if outcome == "ok" else self.log.info
        level(
            "request",
            method=scope["method"],
            route=route,
            status=status,
            outcome=outcome,
            fault=decision.kind if decision.refuses else None,
            ms=round(elapsed * 1000, 2),
            **self._context(correlation_id),
        )

    def _route_of(self, scope: Scope) -> str:
        """The route template of a request (bounded label values); requests refused before routing are
        counted under their path's route when one matches it."""
        matched = scope.get("route")
        if matched is None:
            matched = next((r for r in self._routes.routes if r.matches(scope)[0] == Match.FULL), None)
        return str(getattr(matched, "path", "unmatched"))


def _headers(scope: Scope) -> dict[str, str]:
    """A request's headers by lower-case name; the first of a repeated one wins, as in Starlette's `Headers.get`."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


def _extra_headers(correlation_id: str | None) -> list[tuple[bytes, bytes]]:
    """The request id of every answer, and the caller's correlation id echoed."""
    extra = [(b"request-id", b"req_%014x" % _request_ids.getrandbits(56))]
    if correlation_id:
        extra.append((b"x-correlation-id", correlation_id.encode("latin-1")))
    return extra


class _Answered:
    """The ASGI `send` of a request FastAPI serves: adds the correlation and request ids, delays the
    first byte when asked to (the request was handled and committed; the answer is late) and notes the
    status."""

    def __init__(self, send: Send, correlation_id: str | None, first_byte_delay_s: float) -> None:
        self._send, self._correlation_id, self._delay_s = send, correlation_id, first_byte_delay_s
        self.status = CLIENT_CLOSED
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started, self.status = True, message["status"]
            message = {**message, "headers": [*message.get("headers", ()), *_extra_headers(self._correlation_id)]}
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
        await self._send(message)

    async def answer(self, answer: Answer) -> None:
        await self(answer.start_message([]))
        await self({"type": "http.response.body", "body": answer.body})

    async def answer_unless_started(self, answer: Answer) -> None:
        """Send `answer` when nothing was sent yet (else the connection is closed by the server)."""
        if not self.started:
            await self.answer(answer)


_FAULT_MESSAGES = {
    "outage": ("service_unavailable", "the service is down for maintenance (injected outage)"),
    "burst": ("server_error", "the service failed (injected burst)"),
    "throttle": ("rate_limit", "too many requests; retry after the given seconds (injected)"),
    "error": ("server_error", "the service failed (injected random error)"),
    "poison": ("server_error", "the service fails on this record every time (injected poison)"),
}


def _fault_answer(decision: FaultDecision, problem: ProblemFormat) -> Answer:
    code, message = _FAULT_MESSAGES[decision.kind]
    answer = problem(decision.status, code, message)
    if decision.retry_after_s is not None:
        answer = answer.with_header("Retry-After", str(decision.retry_after_s))
    return answer


def _unavailable(problem: ProblemFormat) -> Answer:
    answer = problem(503, "database_unavailable", "the simulator's database is not reachable; retry later")
    return answer.with_header("Retry-After", "1")


def _error_handlers(app: FastAPI, problem: ProblemFormat, log: Any) -> None:
    """How FastAPI answers what its routes raise: an invalid query 400, an unreachable database 503, and
    anything else 500 in the simulator's own error shape (then re-raised to `Observed`, which logs it)."""

    @app.exception_handler(RequestValidationError)
    async def invalid_query(_request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or None
        return problem(400, "invalid_request", f"{where or 'request'}: {first['msg']}", where).response()

    async def unreachable(_request: Request, error: Exception) -> Response:
        log.error("database unavailable", error=str(error))
        return _unavailable(problem).response()

    async def failed(_request: Request, _error: Exception) -> Response:
        return problem(500, "internal_error", "the simulator failed on this request; see its log").response()

    for unreachable_error in _UNREACHABLE:
        app.add_exception_handler(unreachable_error, unreachable)
    app.add_exception_handler(Exception, failed)


def _admin_routes(
    app: FastAPI, schedule: FaultSchedule, problem: ProblemFormat, admin_token: str | None, log: Any
) -> None:
    def refused(request: Request) -> Response | None:
        if admin_token is None:
            return problem(
                403, "admin_disabled", "no admin token is configured; set the simulator's ADMIN_TOKEN"
            ).response()
        presented = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), admin_token.encode()):
            return problem(401, "unauthorized", "send Authorization: Bearer <admin token>").response()
        return None

    @app.get("/admin/faults", summary="The fault plan in force and what is left of it")
    async def get_faults(request: Request) -> Response:
        return refused(request) or JSONResponse(schedule.state())

    @app.post(
        "/admin/faults",
        summary="Put a fault plan in force now (replaces the previous one)",
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": FaultPlan.model_json_schema()}}}},
    )
    async def post_faults(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        try:
            plan = FaultPlan.model_validate_json(await request.body())
        except ValidationError as error:
            return problem(400, "invalid_fault_plan", _first_error(error)).response()
        schedule.replace(plan)
        log.warning("fault plan replaced", plan=plan.model_dump(exclude_defaults=True))
        return JSONResponse(schedule.state())

    @app.delete("/admin/faults", summary="Heal: no faults from now on")
    async def delete_faults(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        schedule.replace(FaultPlan())
        log.warning("fault plan cleared")
        return JSONResponse(schedule.state())


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"
