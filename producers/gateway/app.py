"""The HTTP gateway: canonical events and signed tracker webhooks in, Kafka records out.

`POST /v1/events/{event_type}` takes one canonical event or a list, authenticated by API key;
`POST /v1/webhooks/{source}` takes a tracker's signed delivery. Both answer 202 only after Kafka's
delivery report for every event of the request. A request is published all or nothing: every event is
validated and Avro-encoded before the first is produced, so a refused request (422) published nothing
(written straight from its values by its compiled writer, or, for values that writer cannot vouch for,
judged and encoded through its model, which names what is wrong).
When the delivery report does not come in time the answer is 503, and the request stays in flight: a
retry of the same content waits for the first attempt's deliveries instead of producing them again.

Before anything is published: callers are rate-limited per API key, per webhook source *and client
address* (a leaked webhook secret used from elsewhere does not starve the real sender), and failed
authentications per client address (429 with Retry-After); bodies are bounded in size (413) and read
time (408); signatures are checked in constant time (401). Signed webhooks are deduplicated on their
signed content, never on an unsigned header (a captured Toggl delivery re-sent with a new
`Idempotency-Key` is answered from memory, not published again); API requests on their
`Idempotency-Key`, or their body when they send none. Hostile input is a 4xx with a reason, never a
500. Access logs are structured, one line per request (a client that hangs up is one line, status
499), and carry the key's *name*, never a key, secret or signature. See docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import DecimalException
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import orjson
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.responses import JSONResponse as StarletteJSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backbone.domain.models import INPUT_EVENTS, Event
from backbone.errors import InvalidInputError
from producers.gateway.docs import docs_page
from producers.gateway.incoming import Answer, Deliveries, Incoming
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
from producers.jsonl import describe
from producers.parsing import ReadOptions

if TYPE_CHECKING:
    from producers.spool import EventEncoder

log = structlog.get_logger("gateway")

Source = Literal["toggl", "clockify", "harvest", "canonical"]
CLIENT_CLOSED = 499
"""Status logged (never sent) for a request whose client hung up before it was answered (nginx's code)."""
INLINE_EVENTS = 16
"""Batches up to this size are encoded on the event loop (tens of microseconds an event); larger ones
in a worker thread, so one big batch does not hold up every other request."""
PARSE_ERRORS = (ValueError, TypeError, LookupError, AttributeError, ArithmeticError)
"""What a tracker's parser raises for a payload it cannot read (int("x"), a list where a dict was due,
timedelta(seconds=1e20), Decimal("1e300") overflowing): the payload's fault, answered 422."""


class Publisher(Protocol):
    """What the gateway needs from the emitter: encode a batch, then send it; `report(error, message)` is
    called once per record when the broker took it (error None) or refused it. `prepare_values` writes
    an event from its canonical values without a model, or gives None when only the model can judge
    them; its record, like `prepare`'s, carries the event's `event_type` and `event_id` (itself or as
    its `event`)."""

    def prepare(self, event: Event, headers: Mapping[str, str] | None = None) -> Any: ...

    def prepare_values(self, event_cls: type[Event], values: Any) -> Any | None: ...

    def frames_known(self, records: Sequence[Any]) -> bool: ...

    def send_reported(self, records: Sequence[Any], report: Callable[[Any, Any], None]) -> None: ...

    def poll(self, timeout: float) -> int: ...


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


class JSONResponse(StarletteJSONResponse):
    """JSON answers rendered by orjson (several times faster than the standard library's encoder)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _problem(
    status: int, error: str, problems: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None
) -> Answer:
    return Answer(status, {"error": error, "problems": problems or []}, headers)


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
        # Read when scraped: counting requests in and out is then an integer each, not a locked update.
        self.in_flight_gauge = Gauge("gateway_requests_in_flight", "Requests being handled", registry=self.registry)
        self.in_flight_gauge.set_function(self.in_flight)
        self._in_flight = 0
        self._published: dict[str, Any] = {}

    def started(self) -> None:
        self._in_flight += 1

    def ended(self) -> None:
        self._in_flight -= 1

    def published_of(self, event_type: str) -> Any:
        """The published counter of an event type (its `labels()` lookup made once per type)."""
        child = self._published.get(event_type)
        if child is None:
            child = self._published[event_type] = self.published.labels(event_type)
        return child

    def in_flight(self) -> int:
        """Requests being handled now (the gauge's value)."""
        return self._in_flight

    def text(self) -> str:
        """The Prometheus exposition of every series."""
        return generate_latest(self.registry).decode()


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
        self.refusals = RateLimiter(settings.refused_rate_per_s, settings.refused_burst)
        self.idempotency = IdempotencyStore(
            ttl_s=settings.idempotency_ttl_s,
            max_keys=settings.idempotency_max_keys,
            max_bytes=settings.idempotency_max_bytes,
        )
        self.metrics = Metrics()
        rules = IdentityRules(
            project_code_is_id=settings.project_code_is_id, worker_email_is_id=settings.worker_email_is_id
        )
        identity = (
            IdentityMap.from_file(settings.identity_file, rules) if settings.identity_file else IdentityMap(rules=rules)
        )
        self.mapper = EntryMapper(identity)
        # The mapper gives each delivery's events as written records, or as models for the values the
        # compiled writers cannot vouch for (`_Written`); it only ever calls the encoder's `values`.
        self.mapper.encode_with(cast("EventEncoder", _Written(publisher)))
        self.timezone = settings.timezone
        self._settling: set[asyncio.Task[None]] = set()
        self._deliveries: Deliveries | None = None
        self._options: tuple[int, ReadOptions] | None = None

    # --- canonical events -------------------------------------------------------------------------

    async def post_events(self, event_type: str, request: Incoming) -> Answer:
        client = request.client
        self._check_refusals(client)
        principal = authenticate(presented_key(request.headers), self.keys)
        if principal is None:
            self._refuse(client, "unauthenticated")
            return _problem(401, "missing or unknown API key (send Authorization: Bearer <key> or X-API-Key)")
        request.state["principal"] = principal.name
        self._limit(f"key:{principal.name}")
        key = self._idempotency_key(request.headers.get("idempotency-key"))
        body = await self._body(request)
        # Without a key the content is the key: a retry of a 503 waits for the first attempt's deliveries.
        scope = f"key:{principal.name}:" + (f"id:{key}" if key else f"body:{hashlib.sha256(body).hexdigest()}")
        return await self._idempotent(scope, body, lambda: self._publish(self._parse_events(event_type, body)))

    def _idempotency_key(self, key: str | None) -> str | None:
        limit = self.settings.idempotency_key_max_length
        if key is not None and (len(key) > limit or not key.isascii() or not key.isprintable() or not key.strip()):
            self.metrics.refused.labels("idempotency_key").inc()
            raise _Reject(422, f"Idempotency-Key must be 1 to {limit} printable ASCII characters")
        return key

    def _parse_events(self, event_type: str, body: bytes) -> list[Any]:
        document = _json(body)
        items = document if isinstance(document, list) else [document]
        if not items or len(items) > self.settings.max_batch_events:
            raise _Reject(422, f"send 1 to {self.settings.max_batch_events} events per request")
        model = INPUT_EVENTS[event_type]
        write = self.publisher.prepare_values
        events: list[Any] = []
        problems: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                # Written without a model when the compiled writer vouches for the item; else the model
                # accepts it or names every problem, word for word as before.
                events.append(write(model, item) or model.model_validate(item))
            except ValidationError as error:
                problems += [
                    dict(zip(("field", "reason"), describe(e), strict=True), index=index)
                    for e in error.errors(include_url=False)
                ]
        if problems:
            raise _Reject(422, "invalid events; nothing was published", problems)
        return events

    # --- webhooks ---------------------------------------------------------------------------------

    async def post_webhook(self, source: str, request: Incoming) -> Answer:
        client = request.client
        self._check_refusals(client)
        secret = self.secrets.get(source)
        if secret is None:
            self._refuse(client, "unknown_source")
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
            self._refuse(client, "signature")
            log.warning("webhook signature refused", source=source, reason=str(error), client=client)
            return _problem(401, "invalid or missing webhook signature")
        request.state["principal"] = f"webhook:{source}"
        self._limit(f"webhook:{source}:{client}")
        document = _json(body)
        code = is_toggl_ping(document) if source == "toggl" else None
        if code is not None:
            return Answer(200, {"validation_code": code, "accepted": 0, "event_ids": []})
        # The signed content is the delivery's identity: an unsigned delivery-id header could be changed
        # by whoever captured the request, and Toggl's signature covers no timestamp.
        scope = f"webhook:{source}:{_content_key(body, request.headers)}"
        return await self._idempotent(
            scope, body, lambda: self._publish(self._webhook_events(source, document, request))
        )

    def _webhook_events(self, source: str, document: object, request: Incoming) -> list[Any]:
        options = self._read_options()
        try:
            events = list(
                events_of(
                    source,
                    document,
                    request.headers,
                    self.mapper,
                    options,
                    max_events=self.settings.max_batch_events,
                    write=self.publisher.prepare_values,
                )
            )
        except NotAnEntry as reason:
            raise _Reject(200, f"nothing to publish: {reason}") from None
        except ValidationError as error:
            problems = [
                dict(zip(("field", "reason"), describe(e), strict=True)) for e in error.errors(include_url=False)
            ]
            raise _Reject(422, f"not a valid {source} time entry; nothing was published", problems) from None
        except PARSE_ERRORS as error:
            raise _Reject(422, f"not a {source} time entry: {_short(error)}") from None
        return events

    def _read_options(self) -> ReadOptions:
        """How a delivery is read: dated by the gateway's clock to the second, so one (frozen) options
        object serves every delivery of that second instead of a datetime and a dataclass each."""
        second = int(self.clock())
        if self._options is None or self._options[0] != second:
            self._options = (second, ReadOptions(exported_at=_now(lambda: second), timezone=self.timezone))
        return self._options[1]

    # --- shared steps -----------------------------------------------------------------------------

    def _limit(self, key: str) -> None:
        wait = self.limiter.acquire(key)
        if wait > 0:
            self.metrics.refused.labels("rate_limited").inc()
            raise _Reject(
                429, "rate limit exceeded; retry after the given seconds", headers={"Retry-After": retry_after(wait)}
            )

    def _check_refusals(self, client: str) -> None:
        """429 for a client address that failed to authenticate too often (checked before any work)."""
        wait = self.refusals.wait(f"client:{client}")
        if wait > 0:
            self.metrics.refused.labels("refusals_limited").inc()
            raise _Reject(
                429,
                "too many unauthenticated or badly signed requests; retry after the given seconds",
                headers={"Retry-After": retry_after(wait)},
            )

    def _refuse(self, client: str, reason: str) -> None:
        self.metrics.refused.labels(reason).inc()
        self.refusals.acquire(f"client:{client}")

    async def _body(self, request: Incoming) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.refused.labels("too_large").inc()
            raise _Reject(413, f"request body over {limit} bytes")
        chunks: list[bytes] = []
        try:
            if request.body_buffered():  # all there: reading cannot wait
                await self._read_into(request, chunks, limit)
            else:
                async with asyncio.timeout(self.settings.body_timeout_s):
                    await self._read_into(request, chunks, limit)
        except TimeoutError:
            self.metrics.refused.labels("slow_body").inc()
            raise _Reject(408, f"request body not received within {self.settings.body_timeout_s:g} s") from None
        except ClientDisconnect:
            raise _Reject(CLIENT_CLOSED, "client closed the connection while sending the body") from None
        return b"".join(chunks)

    async def _read_into(self, request: Incoming, chunks: list[bytes], limit: int) -> None:
        size = 0
        while (chunk := await request.chunk()) is not None:
            size += len(chunk)
            if size > limit:
                self.metrics.refused.labels("too_large").inc()
                raise _Reject(413, f"request body over {limit} bytes")
            chunks.append(chunk)

    async def _idempotent(self, scope: str, body: bytes, run: Callable[[], Awaitable[StoredResponse]]) -> Answer:
        body_hash = hashlib.sha256(body).digest()
        while True:
            try:
                first = self.idempotency.begin(scope, body_hash)
            except IdempotencyConflict:
                return _problem(422, "this Idempotency-Key was used with a different body")
            if first is None:
                break
            try:
                earlier = first.result() if first.done() else await self._wait_for_first(first)
            except TimeoutError:
                return _respond(StoredResponse(503, {"error": "the first attempt is still in flight", "problems": []}))
            except ABANDONED:
                continue  # the first attempt failed: run this one
            return _respond(earlier, replayed=True)
        try:
            stored = await self._guarded(run)
        except BaseException:
            self.idempotency.abandon(scope)
            raise
        if stored.pending:
            self._settle_later(scope, stored)
        elif stored.status >= 500:
            self.idempotency.abandon(scope)
        else:
            self.idempotency.finish(scope, stored)
        return _respond(stored)

    async def _wait_for_first(self, first: asyncio.Future[StoredResponse]) -> StoredResponse:
        return await asyncio.wait_for(asyncio.shield(first), self.settings.delivery_timeout_s)

    def _settle_later(self, scope: str, stored: StoredResponse) -> None:
        """Keep a request whose deliveries are late in flight until they settle (librdkafka's delivery
        timeout bounds that): retries wait for it, and are answered 202 once the records are on the broker."""

        async def settle() -> None:
            try:
                await stored.pending()  # type: ignore[misc]
            except Exception as error:
                log.warning("late deliveries failed; a retry publishes again", error=str(error))
                self.idempotency.abandon(scope)
                return
            accepted = stored.accepted or {}
            self.idempotency.finish(scope, StoredResponse(202, accepted))
            log.info("late deliveries confirmed", events=accepted.get("accepted"))

        task = asyncio.ensure_future(settle())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _guarded(self, run: Callable[[], Awaitable[StoredResponse]]) -> StoredResponse:
        try:
            return await run()
        except _Reject as reject:
            if reject.status == 200:
                return StoredResponse(200, {"accepted": 0, "event_ids": [], "note": reject.error})
            return StoredResponse(reject.status, {"error": reject.error, "problems": reject.problems})

    async def _publish(self, events: Sequence[Any]) -> StoredResponse:
        """Publish a request's events (models, or records already written by `prepare_values`) all or
        nothing: every model is encoded before the first record is produced."""
        inline = len(events) <= INLINE_EVENTS
        try:
            prepared = self._prepare(events) if inline else await asyncio.to_thread(self._prepare, events)
        except InvalidInputError as error:
            self.metrics.refused.labels("unencodable").inc()
            raise _Reject(422, f"{error}; nothing was published") from None
        reports = self._deliveries_here().expect(len(prepared))
        try:
            if inline and self.publisher.frames_known(prepared):
                self.publisher.send_reported(prepared, reports)
            else:  # the schema id is looked up once per topic: keep that HTTP call off the event loop
                await asyncio.to_thread(self.publisher.send_reported, prepared, reports)
        except Exception as error:
            self._deliveries_here().forget(reports)
            log.error("publish failed before sending", error=str(error))
            return StoredResponse(503, {"error": "could not publish; retry later", "problems": []})
        accepted = {"accepted": len(prepared), "event_ids": [_event_of(p).event_id for p in prepared]}
        try:
            await self._deliveries_here().wait(reports, self.settings.delivery_timeout_s)
        except TimeoutError:
            log.error("delivery not confirmed in time", events=len(prepared))
            problem = {"error": "Kafka did not confirm delivery in time; retry later", "problems": []}
            return StoredResponse(503, problem, pending=reports.settled, accepted=accepted)
        except Exception as error:
            log.error("delivery failed", error=str(error), events=len(prepared))
            return StoredResponse(503, {"error": "Kafka did not take the events; retry later", "problems": []})
        for record in prepared:
            self.metrics.published_of(_event_of(record).event_type).inc()
        return StoredResponse(202, accepted)

    def _prepare(self, events: Sequence[Any]) -> list[Any]:
        return [self.publisher.prepare(event) if isinstance(event, Event) else event for event in events]

    def _deliveries_here(self) -> Deliveries:
        """The delivery hand-off of the running loop (one loop in production; a test client may use several)."""
        loop = asyncio.get_running_loop()
        if self._deliveries is None or self._deliveries.loop is not loop:
            self._deliveries = Deliveries(loop, self.publisher.poll)
        return self._deliveries


def _event_of(prepared: Any) -> Any:
    """What carries a prepared record's `event_type` and `event_id`: its model, or the record itself."""
    return prepared.event if hasattr(prepared, "event") else prepared


class _Written:
    """The gateway's encoder for `EntryMapper.encoded`: an event's canonical values written by the
    publisher's compiled writer (`Publisher.prepare_values`), without a model; else the model, built
    here, so values the writer cannot vouch for are refused by the model in its own words (a
    `ValidationError`, answered 422 as before) and a valid one is encoded with the rest of the request.
    The bytes are the model path's either way (tests/unit/connectors/test_gateway_encoding.py)."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def values(self, event_cls: type[Event], values: Mapping[str, Any], model: Callable[[], Event]) -> Any:
        return self.publisher.prepare_values(event_cls, values) or model()


def _short(error: BaseException) -> str:
    if isinstance(error, DecimalException):  # its text is a list of signal classes
        return "a number is out of range"
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 200 else f"{text[:197]}..."


def _respond(stored: StoredResponse, *, replayed: bool = False) -> Answer:
    body = dict(stored.body)
    if stored.status == 202:
        body["replayed"] = replayed
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    if stored.status == 503:
        headers = {**(headers or {}), "Retry-After": "1"}
    return Answer(stored.status, body, headers)


def _content_key(body: bytes, headers: Mapping[str, str]) -> str:
    """A delivery's identity: its body, and the event type for sources that send the same body for
    different events (Clockify's TIME_ENTRY_DELETED repeats the entry as last updated)."""
    event_type = headers.get(CLOCKIFY_EVENT_HEADER, "")[:64]
    return hashlib.sha256(event_type.encode("utf-8", "replace") + b"\n" + body).hexdigest()


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _Reject(422, f"body is not JSON: {error}") from None


def _now(clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(int(clock()), UTC)


# --- the app ------------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing/unknown API key or invalid webhook signature; nothing published."},
    408: {"model": Problem, "description": "The body was not received in time; nothing published."},
    404: {"model": Problem, "description": "No webhook configured for this source."},
    413: {"model": Problem, "description": "Body larger than the configured limit."},
    422: {"model": Problem, "description": "Invalid body, or an Idempotency-Key reused with another body."},
    429: {"model": Problem, "description": "Rate limit (or failed-authentication limit) exceeded; see Retry-After."},
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
    app = GatewayApp(
        title="backbone gateway",
        version="1",
        description="Publish canonical events and tracker webhooks to backbone's Kafka topics.",
        docs_url=None,  # FastAPI's pages load scripts from a CDN; /docs is served from here instead
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = gateway

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
        return (await _handled(gateway.post_webhook(source, Incoming(request.scope, request.receive)))).response()

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Kafka is reachable", responses={503: {"model": Problem}})
    async def readyz() -> Response:
        ready_now = await asyncio.to_thread(gateway.ready_check)
        if ready_now:
            return JSONResponse({"status": "ready"})
        return _problem(503, "Kafka is not reachable").response()

    _operator_routes(app, gateway)
    _security_schemes(app)
    assert set(SOURCES) == set(Source.__args__)  # type: ignore[attr-defined]
    # Starlette's error middleware answers what escapes a route in the gateway's JSON shape, then re-raises
    # to AccessLog, which logs it.
    app.add_exception_handler(Exception, _internal_error)
    app.front = AccessLog(partial(FastAPI.__call__, app), gateway, _lean_routes(app, gateway))
    return app


class GatewayApp(FastAPI):
    """The FastAPI app with `AccessLog` in front of all of it: every request is logged and counted there,
    and the hot POST routes are served there directly, before FastAPI's own layers (its telemetry check,
    error middleware and routing) are reached."""

    front: AccessLog

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)


async def _internal_error(_request: Request, _error: Exception) -> Response:
    return _problem(500, "internal error").response()


def _lean_routes(app: FastAPI, gateway: Gateway) -> dict[str, LeanRoute]:
    """The hot POST routes by request path, each with its declared route (the access log's and the
    metrics' label) and its handler; `AccessLog` serves them without FastAPI (producers/gateway/incoming.py).
    A webhook path for a source outside `Source` is not among them: FastAPI answers it (422) as before."""
    declared = {route.path: route for route in app.routes if isinstance(route, APIRoute)}
    lean: dict[str, LeanRoute] = {
        f"/v1/events/{event_type}": (declared[f"/v1/events/{event_type}"], partial(gateway.post_events, event_type))
        for event_type in INPUT_EVENTS
    }
    webhook = declared["/v1/webhooks/{source}"]
    lean.update({f"/v1/webhooks/{source}": (webhook, partial(gateway.post_webhook, source)) for source in SOURCES})
    return lean


def _operator_routes(app: FastAPI, gateway: Gateway) -> None:
    """/metrics, /docs and /openapi.json: each on, off (404) or behind the operator key (settings)."""
    settings = gateway.settings
    operator_key = settings.operator_key.get_secret_value() if settings.operator_key else None

    def allowed(mode: str, request: Request) -> Response | None:
        if mode == "key" and authenticate(presented_key(request.headers), {"operator": operator_key or ""}) is None:
            return _problem(401, "send the operator key (Authorization: Bearer <key>)").response()
        return None

    if settings.metrics != "off":

        @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics", include_in_schema=False)
        async def metrics(request: Request) -> Response:
            refused = allowed(settings.metrics, request)
            return refused or Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.docs != "off":

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(request: Request) -> Response:
            return allowed(settings.docs, request) or JSONResponse(app.openapi())

        @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
        async def docs(request: Request) -> Response:
            return allowed(settings.docs, request) or HTMLResponse(docs_page(app.openapi()))


LeanRoute = tuple[APIRoute, Callable[[Incoming], Awaitable[Answer]]]


class AccessLog:
    """One structured log line and one metrics sample per request, whatever happened to it (pure ASGI:
    no per-request task, and a client that hangs up is a line with status 499, not a traceback).

    It also serves the hot POST routes itself (`lean`, by path): their handler reads the request from
    the ASGI scope and its answer goes out as two ASGI messages, without FastAPI's telemetry check,
    middleware, routing, dependency solving and Request/Response objects (a fifth of a webhook's CPU).
    Every other request goes to the FastAPI app (`app`)."""

    def __init__(self, app: ASGIApp, gateway: Gateway, lean: Mapping[str, LeanRoute]) -> None:
        self.app, self.gateway, self.lean = app, gateway, lean
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def _series(self, route: str, status: int) -> tuple[Any, Any]:
        """The labelled counter and histogram of a route and status (`labels()` is a lookup worth saving)."""
        found = self._children.get((route, status))
        if found is None:
            metrics = self.gateway.metrics
            found = (metrics.requests.labels(route, str(status)), metrics.latency.labels(route))
            if len(self._children) < 1000:  # routes x statuses is small; never let odd statuses grow it
                self._children[(route, status)] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = CLIENT_CLOSED
        self.gateway.metrics.started()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        lean = self.lean.get(scope["path"]) if scope["method"] == "POST" else None
        try:
            if lean is None:
                await self.app(scope, receive, send_and_note)
            else:  # the answer's status is known before it is sent: no wrapper around `send`
                answer = await self._answer(lean, scope, receive)
                status = answer.status
                await answer.send(send)
        except OSError as error:  # the transport went away while answering
            log.info("client disconnected", error=type(error).__name__)
            status = CLIENT_CLOSED
        except Exception as error:
            status = 500
            log.error("request failed", error=_short(error), error_class=type(error).__name__, exc_info=True)
            await _send_500(send)
        finally:
            self.gateway.metrics.ended()
            self._record(scope, status, time.perf_counter() - started)

    @staticmethod
    async def _answer(lean: LeanRoute, scope: Scope, receive: Receive) -> Answer:
        route, handle = lean
        scope["route"] = route
        return await _handled(handle(Incoming(scope, receive)))

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        requests, latency = self._series(route, status)
        requests.inc()
        latency.observe(elapsed)
        state = scope.get("state") or {}
        client = scope.get("client")
        log.info(
            "request",
            method=scope.get("method"),
            route=route,
            status=status,
            ms=round(elapsed * 1000, 2),
            principal=state.get("principal"),
            client=client[0] if client else None,
        )


async def _send_500(send: Send) -> None:
    try:
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error":"internal error","problems":[]}'})
    except Exception:  # the response had started, or the client left: nothing more to say
        pass


def _events_endpoint(gateway: Gateway, event_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def post_events(request: Request) -> Response:
        return (await _handled(gateway.post_events(event_type, Incoming(request.scope, request.receive)))).response()

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


async def _handled(work: Awaitable[Answer]) -> Answer:
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
