"""What every simulator's HTTP service shares: faults, metrics, logs, health and the admin endpoint.

`install_common` adds to a simulator's FastAPI app one middleware (`Observed`) that, for the API routes
(`/v1/...`), asks the `FaultSchedule` for the request's fate (delay, refuse, slow answer), and for every
route binds the caller's `X-Correlation-Id` to the structlog context, counts the request by route and
outcome, times it and logs it (successes at DEBUG, the rest at INFO). It also adds `/healthz`,
`/metrics` (Prometheus) and `/admin/faults` (GET the plan in force, POST a new one, DELETE to heal),
the last guarded by a bearer token compared in constant time. Each simulator formats its own error
bodies (`ProblemFormat`).
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, cast

import psycopg
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import ValidationError
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backbone.errors import ServiceUnavailableError
from consumers.simulators.faults import FaultDecision, FaultPlan, FaultSchedule

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig  # FastAPI ≥ 0.165; only named in an annotation

API_PREFIX = "/v1/"
CORRELATION_HEADER = "X-Correlation-Id"
WITHOUT_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""`FastAPI(telemetry=...)` for the simulators: FastAPI's own OpenTelemetry hooks off. The simulators
have their own Prometheus metrics and logs, and with the hooks on FastAPI asked the global tracer,
meter and logger providers whether they were configured on every request: ~6% of the billing
simulator's CPU per item in a py-spy profile (docs/delivery.md, "Throughput"). Older FastAPI versions
keep an unknown keyword in `app.extra`, so this is harmless there."""


class ProblemFormat(Protocol):
    """How a simulator words an error: status, machine code, message and the offending field."""

    def __call__(self, status: int, code: str, message: str, field: str | None = None) -> JSONResponse: ...


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

    def count_request(self, route: str, outcome: str, seconds: float) -> None:
        self.requests.labels(self.simulator, route, outcome).inc()
        self.latency.labels(self.simulator, route).observe(seconds)

    def count_document(self, kind: str) -> None:
        self.documents.labels(self.simulator, kind).inc()

    def count_fault(self, kind: str) -> None:
        self.faults.labels(self.simulator, kind).inc()


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


def install_common(
    app: FastAPI,
    *,
    name: str,
    schedule: FaultSchedule,
    metrics: SimulatorMetrics,
    problem: ProblemFormat,
    admin_token: str | None,
) -> None:
    """Add the fault/metrics/logging middleware and the /healthz, /metrics and /admin/faults routes."""
    log = structlog.get_logger(name)
    app.add_middleware(
        Observed, name=name, schedule=schedule, metrics=metrics, problem=problem, log=log, routes=app.router
    )
    _admin_routes(app, schedule, problem, admin_token, log)

    @app.exception_handler(RequestValidationError)
    async def invalid_query(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or None
        return problem(400, "invalid_request", f"{where or 'request'}: {first['msg']}", where)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "simulator": name}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class PlainRoute(APIRoute):
    """A route whose endpoint takes the `Request` and returns a `Response` itself: `Observed` serves it
    straight, without FastAPI's routing, exception middleware and dependency solving (together more
    than a tenth of a millisecond per request), and it stays in the OpenAPI document with its
    `openapi_extra`. For the hot `POST /v1/...` routes, which parse and validate their own bodies;
    their path must have no parameters."""

    def get_route_handler(self) -> Endpoint:
        return cast(Endpoint, self.endpoint)


class Observed:
    """The middleware of every route: for the API routes (`/v1/...`) the fault schedule's decision
    (delay, refuse, slow answer); for all, the caller's `X-Correlation-Id` bound to the log context and
    echoed, a `Request-Id`, the request counted and timed by route and outcome, and a log line.

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` runs each request in a task group and
    copies the response through a stream, which cost half a millisecond per request. A successful
    request is logged at DEBUG (one JSON line per request was a tenth of the simulator's CPU at a few
    hundred requests per second); refused, failed and fault-injected ones at INFO.
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
        self._plain: dict[tuple[str, str], PlainRoute] | None = None

    def _plain_route(self, scope: Scope) -> PlainRoute | None:
        """The PlainRoute of this method and path, if one (the table is built on first use: by then
        every route is declared)."""
        if self._plain is None:
            self._plain = {
                (method, route.path): route
                for route in self._routes.routes
                if isinstance(route, PlainRoute)
                for method in route.methods or ()
            }
        return self._plain.get((scope["method"], scope["path"]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])  # ASGI names are lower case; one dict beats Headers' scans
        correlation_id = _text(headers.get(b"x-correlation-id"))
        context = {"simulator": self.name} | ({"correlation_id": correlation_id} if correlation_id else {})
        with structlog.contextvars.bound_contextvars(**context):
            decision = FaultDecision()
            if scope["path"].startswith(API_PREFIX):
                decision = self.schedule.decide((_text(headers.get(b"idempotency-key")) or "", correlation_id or ""))
            answered = _Answered(send, correlation_id, decision.first_byte_delay_s)
            outcome = await self._answer(scope, receive, answered, decision)
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            self.metrics.count_request(route, outcome, elapsed)
            level = self.log.debug if outcome == "ok" else self.log.info
            level(
                "request",
                method=scope["method"],
                route=route,
                status=answered.status,
                outcome=outcome,
                fault=decision.kind if decision.refuses else None,
                ms=round(elapsed * 1000, 2),
            )

    async def _answer(self, scope: Scope, receive: Receive, send: _Answered, decision: FaultDecision) -> str:
        """Answer one request under `decision`; its outcome label."""
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if decision.refuses:
            self.metrics.count_fault(decision.kind)
            await _fault_response(decision, self.problem)(scope, receive, send)
            return f"injected_{decision.kind}"
        try:
            plain = self._plain_route(scope)
            if plain is None:
                await self.app(scope, receive, send)
            else:
                scope["route"] = plain
                response = await plain.endpoint(Request(scope, receive))
                await response(scope, receive, send)
        except (psycopg.OperationalError, ServiceUnavailableError) as error:
            self.log.error("database unavailable", error=str(error))
            unavailable = self.problem(
                503, "database_unavailable", "the simulator's database is not reachable; retry later"
            )
            unavailable.headers["Retry-After"] = "1"
            await send.unless_started(unavailable, scope, receive)
        except Exception:
            self.log.exception("request failed")
            failed = self.problem(500, "internal_error", "the simulator failed on this request; see its log")
            await send.unless_started(failed, scope, receive)
        return outcome_of(send.status)


class _Answered:
    """The ASGI `send` of one request: adds the correlation and request ids, delays the first byte
    when asked to (the request was handled and committed; the answer is late) and notes the status."""

    def __init__(self, send: Send, correlation_id: str | None, first_byte_delay_s: float) -> None:
        self._send, self._correlation_id, self._delay_s = send, correlation_id, first_byte_delay_s
        self.status = 500
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started, self.status = True, message["status"]
            extra = [(b"request-id", f"req_{uuid.uuid4().hex[:14]}".encode())]
            if self._correlation_id:
                extra.append((CORRELATION_HEADER.lower().encode(), self._correlation_id.encode()))
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
        await self._send(message)

    async def unless_started(self, response: Response, scope: Scope, receive: Receive) -> None:
        """Send `response` when nothing was sent yet (else the connection is closed by the server)."""
        if not self.started:
            await response(scope, receive, self)


_FAULT_MESSAGES = {
    "outage": ("service_unavailable", "the service is down for maintenance (injected outage)"),
    "burst": ("server_error", "the service failed (injected burst)"),
    "throttle": ("rate_limit", "too many requests; retry after the given seconds (injected)"),
    "error": ("server_error", "the service failed (injected random error)"),
    "poison": ("server_error", "the service fails on this record every time (injected poison)"),
}


def _fault_response(decision: FaultDecision, problem: ProblemFormat) -> JSONResponse:
    code, message = _FAULT_MESSAGES[decision.kind]
    response = problem(decision.status, code, message)
    if decision.retry_after_s is not None:
        response.headers["Retry-After"] = str(decision.retry_after_s)
    return response


def _admin_routes(
    app: FastAPI, schedule: FaultSchedule, problem: ProblemFormat, admin_token: str | None, log: Any
) -> None:
    def refused(request: Request) -> JSONResponse | None:
        if admin_token is None:
            return problem(403, "admin_disabled", "no admin token is configured; set the simulator's ADMIN_TOKEN")
        presented = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), admin_token.encode()):
            return problem(401, "unauthorized", "send Authorization: Bearer <admin token>")
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
            return problem(400, "invalid_fault_plan", _first_error(error))
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


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _route_of(scope: Scope) -> str:
    """The route template of a request (bounded label values); requests refused before routing are
    counted under their path's route when one matches it (the app is in the scope)."""
    matched = scope.get("route")
    if matched is None:
        routes = getattr(scope.get("app"), "routes", ())
        matched = next((r for r in routes if r.matches(scope)[0] == Match.FULL), None)
    return str(getattr(matched, "path", "unmatched"))
