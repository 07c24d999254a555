"""What every simulator's HTTP service shares: faults, metrics, logs, health and the admin endpoint.

`install_common` adds to a simulator's FastAPI app one middleware that, for the API routes (`/v1/...`),
asks the `FaultSchedule` for the request's fate (delay, refuse, slow answer), and for every route binds
the caller's `X-Correlation-Id` to the structlog context, counts the request by route and outcome,
times it and logs it as one JSON line. It also adds `/healthz`, `/metrics` (Prometheus) and
`/admin/faults` (GET the plan in force, POST a new one, DELETE to heal), the last guarded by a bearer
token compared in constant time. Each simulator formats its own error bodies (`ProblemFormat`).
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import psycopg
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import ValidationError
from starlette.routing import Match

from backbone.errors import ServiceUnavailableError
from consumers.simulators.faults import FaultDecision, FaultPlan, FaultSchedule

API_PREFIX = "/v1/"
CORRELATION_HEADER = "X-Correlation-Id"


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

    @app.middleware("http")
    async def observed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        correlation_id = request.headers.get(CORRELATION_HEADER)
        context = {"simulator": name} | ({"correlation_id": correlation_id} if correlation_id else {})
        with structlog.contextvars.bound_contextvars(**context):
            keys = (request.headers.get("Idempotency-Key", ""), correlation_id or "")
            decision = schedule.decide(keys) if request.url.path.startswith(API_PREFIX) else FaultDecision()
            response, outcome = await _answer(request, call_next, decision, problem, metrics, log)
            if correlation_id:
                response.headers[CORRELATION_HEADER] = correlation_id
            response.headers.setdefault("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
            route = _route_of(app, request)
            elapsed = time.perf_counter() - started
            metrics.count_request(route, outcome, elapsed)
            log.info(
                "request",
                method=request.method,
                route=route,
                status=response.status_code,
                outcome=outcome,
                fault=decision.kind if decision.refuses else None,
                ms=round(elapsed * 1000, 2),
            )
            return response

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


async def _answer(
    request: Request,
    call_next: Callable[[Request], Awaitable[Response]],
    decision: FaultDecision,
    problem: ProblemFormat,
    metrics: SimulatorMetrics,
    log: Any,
) -> tuple[Response, str]:
    """The response to one request under `decision`, and its outcome label."""
    if decision.delay_s:
        await asyncio.sleep(decision.delay_s)
    if decision.refuses:
        metrics.count_fault(decision.kind)
        return _fault_response(decision, problem), f"injected_{decision.kind}"
    try:
        response = await call_next(request)
    except (psycopg.OperationalError, ServiceUnavailableError) as error:
        log.error("database unavailable", error=str(error))
        response = problem(503, "database_unavailable", "the simulator's database is not reachable; retry later")
        response.headers["Retry-After"] = "1"
    except Exception:
        log.exception("request failed")
        response = problem(500, "internal_error", "the simulator failed on this request; see its log")
    if decision.first_byte_delay_s:
        await asyncio.sleep(decision.first_byte_delay_s)  # handled and committed; the answer is late
    return response, outcome_of(response.status_code)


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


def _route_of(app: FastAPI, request: Request) -> str:
    """The route template of a request (bounded label values), also for requests refused before routing."""
    matched = request.scope.get("route")
    if matched is None:
        matched = next((r for r in app.router.routes if r.matches(request.scope)[0] == Match.FULL), None)
    return str(getattr(matched, "path", "unmatched"))
