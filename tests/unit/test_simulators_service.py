"""What every simulator's service does around its handlers (`consumers/simulators/service.py`): a hot
route is served in front of FastAPI and still declared in the OpenAPI document; every answer carries a
request id and the caller's correlation id; a failing handler is a 500 and an unreachable database a 503
with Retry-After, in the simulator's own error shape, on hot routes and on those FastAPI serves alike;
faults refuse both kinds; requests are counted by route and outcome. In process, through ASGI."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from backbone.errors import ServiceUnavailableError
from consumers.simulators.faults import FaultPlan, FaultSchedule
from consumers.simulators.service import (
    Answer,
    Incoming,
    SimulatorApp,
    SimulatorMetrics,
    add_hot_route,
    install_common,
)


def problem(status: int, code: str, message: str, field: str | None = None) -> Answer:
    return Answer(status, orjson.dumps({"code": code, "message": message, "field": field}))


def _app(raises: Exception | None = None, plan: FaultPlan | None = None) -> tuple[SimulatorApp, SimulatorMetrics]:
    app = SimulatorApp(title="test simulator")
    metrics = SimulatorMetrics("test-sim")
    schedule = FaultSchedule(plan or FaultPlan())
    install_common(app, name="test-sim", schedule=schedule, metrics=metrics, problem=problem, admin_token=None)

    async def echo(request: Incoming) -> Answer:
        if raises is not None:
            raise raises
        body = orjson.dumps({"got": orjson.loads(await request.body()), "key": request.headers.get("idempotency-key")})
        return Answer(201, body, (("Idempotency-Key", request.headers.get("idempotency-key", "")),))

    add_hot_route(app, "/v1/things", echo, status_code=201, summary="Create a thing")

    @app.get("/v1/things/{thing}")
    async def read(thing: str) -> dict[str, str]:
        if raises is not None:
            raise raises
        return {"thing": thing}

    return app, metrics


def _call(app: SimulatorApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(call())


def test_a_hot_route_is_answered_in_front_of_fastapi_and_stays_in_the_openapi_document() -> None:
    app, metrics = _app()
    answer = _call(
        app,
        "POST",
        "/v1/things",
        json={"a": 1},
        headers={"Idempotency-Key": "k-1", "Idempotency-key": "k-2", "X-Correlation-Id": "corr-7"},
    )

    assert (answer.status_code, answer.json()) == (201, {"got": {"a": 1}, "key": "k-1"})  # the first of a repeat
    assert answer.headers["content-type"] == "application/json" and answer.headers["idempotency-key"] == "k-1"
    assert answer.headers["x-correlation-id"] == "corr-7" and answer.headers["request-id"].startswith("req_")
    assert app.openapi()["paths"]["/v1/things"]["post"]["summary"] == "Create a thing"
    assert metrics.requests.labels("test-sim", "/v1/things", "ok")._value.get() == 1


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        pytest.param(RuntimeError("bug"), 500, "internal_error", None, id="a-bug-is-500"),
        pytest.param(psycopg.OperationalError("down"), 503, "database_unavailable", "1", id="database-down-is-503"),
        pytest.param(ServiceUnavailableError("no pool"), 503, "database_unavailable", "1", id="pool-down-is-503"),
    ],
)
@pytest.mark.parametrize("route", ["hot", "fastapi"])
def test_failures_are_answered_in_the_simulators_shape_on_every_route(
    route: str, error: Exception, status: int, code: str, retry_after: str | None
) -> None:
    app, metrics = _app(raises=error)
    if route == "hot":
        answer = _call(app, "POST", "/v1/things", json={}, headers={"X-Correlation-Id": "corr-9"})
    else:
        answer = _call(app, "GET", "/v1/things/t-1", headers={"X-Correlation-Id": "corr-9"})

    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert answer.headers.get("retry-after") == retry_after and answer.headers["x-correlation-id"] == "corr-9"
    template = "/v1/things" if route == "hot" else "/v1/things/{thing}"
    assert metrics.requests.labels("test-sim", template, "server_error")._value.get() == 1


@pytest.mark.parametrize("method, path", [("POST", "/v1/things"), ("GET", "/v1/things/t-1")], ids=["hot", "fastapi"])
def test_a_fault_refuses_the_request_before_its_handler_and_counts_it_under_its_route(method: str, path: str) -> None:
    app, metrics = _app(raises=RuntimeError("the handler must not run"), plan=FaultPlan(throttle=1, retry_after_s=4))
    answer = _call(app, method, path, json={} if method == "POST" else None)

    assert (answer.status_code, answer.headers["retry-after"], answer.json()["code"]) == (429, "4", "rate_limit")
    template = "/v1/things" if method == "POST" else "/v1/things/{thing}"
    assert metrics.requests.labels("test-sim", template, "injected_throttle")._value.get() == 1
    assert metrics.faults.labels("test-sim", "throttle")._value.get() == 1


def test_the_operator_routes_and_invalid_queries_go_through_fastapi() -> None:
    app, _ = _app()
    assert _call(app, "GET", "/healthz").json() == {"status": "ok", "simulator": "test-sim"}
    assert _call(app, "GET", "/admin/faults").json()["code"] == "admin_disabled"
    assert _call(app, "GET", "/v1/things/t-2").json() == {"thing": "t-2"}
