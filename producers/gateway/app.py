"""The HTTP gateway: canonical events and signed tracker webhooks in, Kafka records out.

`POST /v1/events/{event_type}` takes one canonical event or a list, authenticated by API key;
`POST /v1/webhooks/{source}` takes a tracker's signed delivery. Both answer 202 only after Kafka's
delivery report for every event of the request (503 when it does not come in time, so the caller
retries: event ids are deterministic, a retry after a late success is a harmless duplicate). Before
anything is published: bodies are bounded (413), callers rate-limited per key or source (429 with
Retry-After), signatures checked in constant time (401), and `Idempotency-Key` / delivery ids replay
the first response instead of publishing again (a reused key with another body is 422).
Access logs are structured and carry the key's *name*, never a key, secret or signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Literal, Protocol

import orjson
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ValidationError

from backbone.domain.models import INPUT_EVENTS, Event
from backbone.errors import InvalidInputError
from producers.gateway.limits import (
    ABANDONED,
    IdempotencyConflict,
    IdempotencyStore,
    RateLimiter,
    StoredResponse,
    retry_after,
)
from producers.gateway.security import SignatureError, authenticate, presented_key, verify
from producers.gateway.settings import GatewaySettings
from producers.gateway.webhooks import CLOCKIFY_EVENT_HEADER, SOURCES, NotAnEntry, events_of, is_toggl_ping
from producers.identity import EntryMapper, IdentityMap, IdentityRules
from producers.parsing import ReadOptions

log = structlog.get_logger("gateway")

Source = Literal["toggl", "clockify", "harvest", "canonical"]
DELIVERY_ID_HEADERS = ("idempotency-key", "x-webhook-delivery-id", "x-delivery-id", "x-toggl-event-id")


class Publisher(Protocol):
    """What the gateway needs from the emitter: a send whose future the delivery report resolves."""

    def send(self, event: Event, headers: Mapping[str, str] | None = None) -> Future[Any]: ...


class Accepted(BaseModel):
    accepted: int
    event_ids: list[str]
    replayed: bool = False


class Problem(BaseModel):
    error: str
    problems: list[dict[str, Any]] = []


class WebhookOk(BaseModel):
    """A Toggl validation ping answered (`validation_code`), or a delivery with nothing to publish."""

    validation_code: str | None = None
    accepted: int = 0
    event_ids: list[str] = []
    note: str | None = None


class _Reject(Exception):
    """Stop handling a request with this status and problem."""

    def __init__(
        self,
        status: int,
        error: str,
        problems: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.problems, self.headers = status, error, problems or [], headers or {}


def _problem(
    status: int, error: str, problems: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "problems": problems or []}, status_code=status, headers=headers)


class Metrics:
    """The gateway's Prometheus series, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "gateway_request_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.published = Counter(
            "gateway_events_published", "Events acknowledged by Kafka", ["event_type"], registry=self.registry
        )
        self.refused = Counter(
            "gateway_refused", "Requests refused before publishing", ["reason"], registry=self.registry
        )


class Gateway:
    """The request handling behind the routes; holds limits, idempotency records and metrics."""

    def __init__(
        self,
        settings: GatewaySettings,
        publisher: Publisher,
        *,
        clock: Callable[[], float] = time.time,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.settings, self.publisher, self.clock = settings, publisher, clock
        self.ready_check = ready or (lambda: True)
        self.keys = {name: key.get_secret_value() for name, key in settings.api_keys.items()}
        self.secrets = {source: s.get_secret_value() for source, s in settings.webhook_secrets.items()}
        self.limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
        self.idempotency = IdempotencyStore(ttl_s=settings.idempotency_ttl_s, max_keys=settings.idempotency_max_keys)
        self.metrics = Metrics()
        rules = IdentityRules(
            project_code_is_id=settings.project_code_is_id, worker_email_is_id=settings.worker_email_is_id
        )
        identity = (
            IdentityMap.from_file(settings.identity_file, rules) if settings.identity_file else IdentityMap(rules=rules)
        )
        self.mapper = EntryMapper(identity)
        self.timezone = settings.timezone

    # --- canonical events -------------------------------------------------------------------------

    async def post_events(self, event_type: str, request: Request) -> Response:
        principal = authenticate(presented_key(request.headers), self.keys)
        if principal is None:
            self.metrics.refused.labels("unauthenticated").inc()
            return _problem(401, "missing or unknown API key (send Authorization: Bearer <key> or X-API-Key)")
        request.state.principal = principal.name
        self._limit(f"key:{principal.name}")
        body = await self._body(request)
        key = request.headers.get("idempotency-key")
        scope = f"key:{principal.name}:{key}" if key else None
        return await self._idempotent(scope, body, lambda: self._publish(self._parse_events(event_type, body)))

    def _parse_events(self, event_type: str, body: bytes) -> list[Event]:
        document = _json(body)
        items = document if isinstance(document, list) else [document]
        if not items or len(items) > self.settings.max_batch_events:
            raise _Reject(422, f"send 1 to {self.settings.max_batch_events} events per request")
        model = INPUT_EVENTS[event_type]
        events, problems = [], []
        for index, item in enumerate(items):
            try:
                events.append(model.model_validate(item))
            except ValidationError as error:
                problems += [
                    {"index": index, "field": ".".join(str(p) for p in e["loc"]) or "(record)", "reason": e["msg"]}
                    for e in error.errors()
                ]
        if problems:
            raise _Reject(422, "invalid events; nothing was published", problems)
        return events

    # --- webhooks ---------------------------------------------------------------------------------

    async def post_webhook(self, source: str, request: Request) -> Response:
        secret = self.secrets.get(source)
        if secret is None:
            return _problem(404, f"no webhook is configured for {source}")
        body = await self._body(request)
        try:
            verify(
                self.settings.scheme_of(source),
                body,
                request.headers,
                secret,
                now=self.clock(),
                tolerance_s=self.settings.signature_tolerance_s,
            )
        except SignatureError as error:
            self.metrics.refused.labels("signature").inc()
            log.warning("webhook signature refused", source=source, reason=str(error))
            return _problem(401, "invalid or missing webhook signature")
        request.state.principal = f"webhook:{source}"
        self._limit(f"webhook:{source}")
        document = _json(body)
        code = is_toggl_ping(document) if source == "toggl" else None
        if code is not None:
            return JSONResponse({"validation_code": code, "accepted": 0, "event_ids": []}, status_code=200)
        delivery = next((request.headers[h] for h in DELIVERY_ID_HEADERS if h in request.headers), None)
        scope = f"webhook:{source}:{delivery or _content_key(body, request.headers)}"
        return await self._idempotent(
            scope, body, lambda: self._publish(self._webhook_events(source, document, request))
        )

    def _webhook_events(self, source: str, document: object, request: Request) -> list[Event]:
        options = ReadOptions(exported_at=_now(self.clock), timezone=self.timezone)
        try:
            return list(events_of(source, document, request.headers, self.mapper, options))
        except NotAnEntry as reason:
            raise _Reject(200, f"nothing to publish: {reason}") from None
        except (ValueError, TypeError, KeyError) as error:
            raise _Reject(422, f"not a {source} time entry: {error}") from None

    # --- shared steps -----------------------------------------------------------------------------

    def _limit(self, key: str) -> None:
        wait = self.limiter.acquire(key)
        if wait > 0:
            self.metrics.refused.labels("rate_limited").inc()
            raise _Reject(
                429, "rate limit exceeded; retry after the given seconds", headers={"Retry-After": retry_after(wait)}
            )

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.refused.labels("too_large").inc()
            raise _Reject(413, f"request body over {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                self.metrics.refused.labels("too_large").inc()
                raise _Reject(413, f"request body over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _idempotent(
        self, scope: str | None, body: bytes, run: Callable[[], Awaitable[StoredResponse]]
    ) -> Response:
        if scope is None:
            return _respond(await self._guarded(run))
        body_hash = hashlib.sha256(body).hexdigest()
        while True:
            try:
                first = self.idempotency.begin(scope, body_hash)
            except IdempotencyConflict:
                return _problem(422, "this Idempotency-Key was used with a different body")
            if first is None:
                break
            try:
                return _respond(await asyncio.shield(first), replayed=True)
            except ABANDONED:
                continue  # the first attempt failed transiently: run this one
        try:
            stored = await self._guarded(run)
        except BaseException:
            self.idempotency.abandon(scope)
            raise
        if stored.status >= 500:
            self.idempotency.abandon(scope)
        else:
            self.idempotency.finish(scope, stored)
        return _respond(stored)

    async def _guarded(self, run: Callable[[], Awaitable[StoredResponse]]) -> StoredResponse:
        try:
            return await run()
        except _Reject as reject:
            if reject.status == 200:
                return StoredResponse(200, {"accepted": 0, "event_ids": [], "note": reject.error})
            return StoredResponse(reject.status, {"error": reject.error, "problems": reject.problems})

    async def _publish(self, events: Sequence[Event]) -> StoredResponse:
        from producers.emitter import with_envelope_defaults

        prepared = [with_envelope_defaults(event) for event in events]
        try:
            # Encoding may call the schema registry: keep that off the event loop.
            futures = await asyncio.to_thread(lambda: [self.publisher.send(e) for e in prepared])
        except InvalidInputError as error:
            raise _Reject(422, str(error)) from None
        except Exception as error:
            log.error("publish failed before sending", error=str(error))
            return StoredResponse(503, {"error": "could not publish; retry later", "problems": []})
        try:
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), self.settings.delivery_timeout_s
            )
        except Exception as error:
            log.error("delivery not confirmed", error=str(error), events=len(prepared))
            return StoredResponse(503, {"error": "Kafka did not confirm delivery; retry later", "problems": []})
        for event in prepared:
            self.metrics.published.labels(event.event_type).inc()
        return StoredResponse(202, {"accepted": len(prepared), "event_ids": [e.event_id for e in prepared]})


def _respond(stored: StoredResponse, *, replayed: bool = False) -> JSONResponse:
    body = dict(stored.body)
    if stored.status == 202:
        body["replayed"] = replayed
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    if stored.status == 503:
        headers = {**(headers or {}), "Retry-After": "1"}
    return JSONResponse(body, status_code=stored.status, headers=headers)


def _content_key(body: bytes, headers: Mapping[str, str]) -> str:
    """A delivery's identity when it names none: the body, and the event type for sources that send the
    same body for different events (Clockify's TIME_ENTRY_DELETED repeats the entry as last updated)."""
    event_type = headers.get(CLOCKIFY_EVENT_HEADER, "")
    return hashlib.sha256(event_type.encode() + b"\n" + body).hexdigest()


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _Reject(422, f"body is not JSON: {error}") from None


def _now(clock: Callable[[], float]) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(clock()), UTC)


# --- the app ------------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing/unknown API key or invalid webhook signature; nothing published."},
    404: {"model": Problem, "description": "No webhook configured for this source."},
    413: {"model": Problem, "description": "Body larger than the configured limit."},
    422: {"model": Problem, "description": "Invalid body, or an Idempotency-Key reused with another body."},
    429: {"model": Problem, "description": "Rate limit exceeded; see Retry-After."},
    503: {"model": Problem, "description": "Kafka did not confirm delivery; retry (ids are deterministic)."},
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object"},
                        {"type": "array", "items": {"type": "object"}, "minItems": 1},
                    ]
                }
            }
        },
    }
}


def create_app(
    settings: GatewaySettings,
    publisher: Publisher,
    *,
    clock: Callable[[], float] = time.time,
    ready: Callable[[], bool] | None = None,
) -> FastAPI:
    """The gateway's ASGI app around `publisher` (the `Emitter` in production, a fake in unit tests)."""
    gateway = Gateway(settings, publisher, clock=clock, ready=ready)
    app = FastAPI(
        title="backbone gateway",
        version="1",
        description="Publish canonical events and tracker webhooks to backbone's Kafka topics.",
    )
    app.state.gateway = gateway

    @app.middleware("http")
    async def access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except _Reject as reject:
            response = _problem(reject.status, reject.error, reject.problems, reject.headers)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        elapsed = time.perf_counter() - started
        gateway.metrics.requests.labels(route, str(response.status_code)).inc()
        gateway.metrics.latency.labels(route).observe(elapsed)
        log.info(
            "request",
            method=request.method,
            route=route,
            status=response.status_code,
            ms=round(elapsed * 1000, 2),
            principal=getattr(request.state, "principal", None),
            client=request.client.host if request.client else None,
        )
        return response

    for event_type, model in INPUT_EVENTS.items():
        app.add_api_route(
            f"/v1/events/{event_type}",
            _events_endpoint(gateway, event_type),
            methods=["POST"],
            status_code=202,
            response_model=Accepted,
            responses={**_ERRORS},
            summary=f"Publish {event_type} events (one or a list)",
            openapi_extra={**_events_body(model), "security": [{"bearer": []}, {"apiKey": []}]},
        )

    @app.post(
        "/v1/webhooks/{source}",
        status_code=202,
        response_model=Accepted,
        responses={200: {"model": WebhookOk, "description": "Toggl ping answered, or nothing to publish."}, **_ERRORS},
        openapi_extra=_BODY,
        summary="Receive a signed tracker webhook",
    )
    async def post_webhook(source: Source, request: Request) -> Response:
        return await _handled(gateway.post_webhook(source, request))

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Kafka is reachable", responses={503: {"model": Problem}})
    async def readyz() -> Response:
        ready_now = await asyncio.to_thread(gateway.ready_check)
        if ready_now:
            return JSONResponse({"status": "ready"})
        return _problem(503, "Kafka is not reachable")

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _security_schemes(app)
    assert set(SOURCES) == set(Source.__args__)  # type: ignore[attr-defined]
    return app


def _events_endpoint(gateway: Gateway, event_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def post_events(request: Request) -> Response:
        return await _handled(gateway.post_events(event_type, request))

    post_events.__name__ = f"post_{event_type.replace('-', '_')}_events"
    return post_events


def _events_body(model: type[Event]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": [ref, {"type": "array", "items": ref, "minItems": 1}]}}
            },
        }
    }


DECIMAL_SCHEMA = {
    "type": "string",
    "pattern": r"^-?[0-9]{1,14}(\.[0-9]{1,4})?$",
    "description": "Decimal as a string, at most 4 decimal places",
}
INT32_MAX = 2**31 - 1


def _wire_exact(schema: Any) -> Any:
    """The model's JSON schema as the wire accepts it: decimals are strings, integers fit Avro int."""
    if isinstance(schema, list):
        return [_wire_exact(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "number"} in options and {"type": "string"} in options:
        rest = [o for o in options if o not in ({"type": "number"}, {"type": "string"})]
        outer = {k: v for k, v in schema.items() if k != "anyOf"}
        return {**outer, "anyOf": [DECIMAL_SCHEMA, *rest]} if rest else {**outer, **DECIMAL_SCHEMA}
    fixed = {key: _wire_exact(value) for key, value in schema.items()}
    if fixed.get("type") == "integer":
        fixed.setdefault("maximum", INT32_MAX)
    return fixed


def _event_schemas() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for model in INPUT_EVENTS.values():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(_wire_exact(schema.pop("$defs", {})))
        components[model.__name__] = _wire_exact(schema)
    return components


async def _handled(work: Awaitable[Response]) -> Response:
    try:
        return await work
    except _Reject as reject:
        return _problem(reject.status, reject.error, reject.problems, reject.headers)


def _security_schemes(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(_event_schemas())
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
