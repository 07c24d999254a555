"""The registry's HTTP face: the subset of the Confluent Schema Registry REST API that confluent-kafka's
`SchemaRegistryClient`, `AvroSerializer` and `AvroDeserializer` use.

Paths, query parameters, status codes and error bodies (`{"error_code": int, "message": str}`) follow
Confluent's API reference so any Confluent client works unchanged. Handlers are thin: they parse the
request, ask `RegistryState` (which decides and raises `RegistryError`), and commit the resulting records
through the `SchemaStore`. Requests are counted per route and status for Prometheus (`/metrics`) and
logged as structlog JSON access lines.

Subject names may contain `/`, which clients send URL-encoded (`%2F`). ASGI servers decode the path
before routing, which would split such a subject in two; `EncodedSlashes` routes on the raw path
instead, and the `encoded` path convertor decodes each subject segment exactly once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from backbone.registry.audit import AuditLog
from backbone.registry.auth import Authenticator
from backbone.registry.compatibility import CompatibilityLevel
from backbone.registry.gate import Gate
from backbone.registry.replica import SchemaStore
from backbone.registry.store import (
    DEFAULT_LEVEL,
    Config,
    Record,
    RegistryError,
    RegistryState,
    SchemaVersion,
    candidate_schema,
)

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
log = structlog.get_logger("backbone.registry")
T = TypeVar("T")


class RegistryResponse(JSONResponse):
    """Confluent clients accept plain JSON too, but answer in the registry's own media type."""

    media_type = MEDIA_TYPE


class Reference(BaseModel):
    name: str
    subject: str
    version: int


class SchemaRequest(BaseModel):
    """The body of register, lookup and compatibility requests. Unknown fields (metadata, ruleSet) ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_text: str = Field(alias="schema")
    schema_type: str = Field(default="AVRO", alias="schemaType")
    references: list[Reference] = Field(default_factory=list)


class ConfigRequest(BaseModel):
    """PUT /config bodies: Confluent's `compatibility` (or `compatibilityLevel`) and backbone's
    `decimalStrict`; a setting left out keeps its current value."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    compatibility: str | None = None
    compatibility_level: str | None = Field(default=None, alias="compatibilityLevel")
    decimal_strict: bool | None = Field(default=None, alias="decimalStrict")


class EncodedConvertor(Convertor[str]):
    """One path segment, percent-decoded: `{subject:encoded}` matches `a%2Fb` and yields `a/b`."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return quote(value, safe="")


register_url_convertor("encoded", EncodedConvertor())


class EncodedSlashes:
    """ASGI middleware: route on the raw path, so an encoded `/` stays inside its segment.

    Each segment is decoded and re-encoded with only `%` and `/` escaped; `EncodedConvertor` decodes
    it again for the handler, so `a%2Fb` reaches it as `a/b` and `a%2541` as `a%41`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw and b"%" in raw:
            # In place, so outer middleware (metrics) sees the route the router records in the scope.
            scope["path"] = _escaped_path(raw.decode("ascii", "replace"))
        await self.app(scope, receive, send)


def _escaped_path(raw: str) -> str:
    segments = (unquote(segment) for segment in raw.split("/"))
    return "/".join(segment.replace("%", "%25").replace("/", "%2F") for segment in segments)


def create_app(
    store: SchemaStore,
    *,
    authenticator: Authenticator | None = None,
    audit_file: Path | None = None,
    leader_wait: float = 15.0,
) -> FastAPI:
    """The registry app over `store` (already started).

    Without an `authenticator` every request is allowed (BACKBONE_SCHEMA_REGISTRY_AUTH=none).
    `audit_file` (a path, or None) receives one JSON line per write attempt.
    """
    app = FastAPI(title="backbone schema registry", default_response_class=RegistryResponse)
    metrics = CollectorRegistry()
    app.add_middleware(EncodedSlashes)
    _install_errors(app)
    audit = AuditLog(audit_file, store.url, metrics)
    app.middleware("http")(Gate(store, authenticator, audit, leader_wait, metrics))  # inside the access log
    _install_observability(app, metrics, store)
    _add_schema_routes(app, store)
    _add_subject_routes(app, store)
    _add_config_routes(app, store)
    return app


def _error(status: int, error_code: int, message: str) -> RegistryResponse:
    return RegistryResponse({"error_code": error_code, "message": message}, status_code=status)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(RegistryError)
    async def registry_error(_request: Request, error: RegistryError) -> Response:
        return _error(error.status, error.error_code, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> Response:
        return _error(422, 422, f"Invalid request: {error.errors()}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> Response:
        return _error(error.status_code, error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> Response:
        # 500 with Confluent's "store error" code; clients retry 5xx, and the log keeps the cause.
        log.exception("request_failed", error=str(error))
        return _error(500, 50001, f"Error in the backend data store: {error}")


def _install_observability(app: FastAPI, registry: CollectorRegistry, store: SchemaStore) -> None:
    leading = Gauge("registry_leader", "1 while this instance is the leader.", registry=registry)
    leading.set_function(lambda: 1.0 if store.is_leader else 0.0)
    position = Gauge("registry_log_position", "Log offset this instance has applied up to.", registry=registry)
    position.set_function(lambda: float(store.position))
    requests = Counter("registry_requests", "Registry HTTP requests.", ["method", "route", "status"], registry=registry)
    latency = Histogram("registry_request_seconds", "Registry request latency.", ["route"], registry=registry)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        elapsed = time.perf_counter() - started
        route = _route_label(getattr(request.scope.get("route"), "path", "unmatched"))
        requests.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(route).observe(elapsed)
        log.info(
            "http_request",
            method=request.method,
            path=request.url.path,
            route=route,
            status=response.status_code,
            duration_ms=round(elapsed * 1000, 2),
        )
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _route_label(path: str) -> str:
    """`/subjects/{subject:encoded}` -> `/subjects/{subject}`: metric labels name routes, not convertors."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def _registered(version: SchemaVersion) -> dict[str, Any]:
    """A version as Confluent renders it (schemaType and references only when they say something)."""
    body: dict[str, Any] = {
        "subject": version.subject,
        "version": version.version,
        "id": version.schema_id,
        "schema": version.schema,
    }
    return body | _type_and_references(version)


def _type_and_references(version: SchemaVersion) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if version.schema_type != "AVRO":
        extra["schemaType"] = version.schema_type
    if version.references:
        extra["references"] = list(version.references)
    return extra


def _candidate(store: SchemaStore, body: SchemaRequest, normalize: bool) -> SchemaVersion:
    references = [r.model_dump() for r in body.references]
    return candidate_schema(store.state, body.schema_text, body.schema_type, references, normalized=normalize)


def _add_schema_routes(app: FastAPI, store: SchemaStore) -> None:
    @app.get("/")
    def health() -> dict[str, Any]:
        return {}

    @app.get("/schemas/types")
    def schema_types() -> list[str]:
        return ["AVRO"]

    @app.get("/schemas/ids/{schema_id}")
    def schema_by_id(schema_id: int) -> dict[str, Any]:
        version = _fresh(store, lambda: store.state.schema_by_id(schema_id))
        return {"schema": version.schema} | _type_and_references(version)

    @app.get("/schemas/ids/{schema_id}/schema")
    def raw_schema_by_id(schema_id: int) -> Response:
        return Response(_fresh(store, lambda: store.state.schema_by_id(schema_id)).schema, media_type=MEDIA_TYPE)

    @app.get("/schemas/ids/{schema_id}/versions")
    def versions_of_id(schema_id: int, deleted: bool = False) -> list[dict[str, Any]]:
        found = store.state.versions_of_id(schema_id, deleted=deleted)
        return [{"subject": v.subject, "version": v.version} for v in found]

    @app.get("/schemas/ids/{schema_id}/subjects")
    def subjects_of_id(schema_id: int, deleted: bool = False) -> list[str]:
        return sorted({v.subject for v in store.state.versions_of_id(schema_id, deleted=deleted)})

    @app.get("/mode")
    def mode() -> dict[str, str]:
        return {"mode": "READWRITE"}

    @app.get("/leader")
    def leader() -> dict[str, Any]:
        """backbone's own: which instance leads (writes go there) and how far this one has read the log."""
        return {
            "leader": store.leader_url,
            "instance": store.url,
            "is_leader": store.is_leader,
            "position": store.position,
        }


def _fresh(store: SchemaStore, read: Callable[[], T]) -> T:
    """`read()`, and on a 404 once more after catching up with the log: a follower may not have read a
    write the leader just answered (a consumer asking for the id a producer was just given)."""
    try:
        return read()
    except RegistryError as e:
        if e.status != 404 or store.is_leader or not store.sync(timeout=2.0):
            raise
    return read()


def _add_subject_routes(app: FastAPI, store: SchemaStore) -> None:
    state = lambda: store.state  # noqa: E731 - read at call time

    @app.get("/subjects")
    def subjects(deleted: bool = False, deleted_only: bool = False, subjectPrefix: str = "") -> list[str]:
        names = state().subject_names(deleted=deleted, deleted_only=deleted_only)
        return [s for s in names if s.startswith(subjectPrefix)]

    @app.post("/subjects/{subject:encoded}/versions")
    def register(subject: str, body: SchemaRequest, normalize: bool = False) -> dict[str, Any]:
        def decide(current: RegistryState) -> tuple[SchemaVersion, list[Record]]:
            candidate = _candidate(store, body, normalize)
            return current.register(subject, candidate, source=body.schema_text, normalized=normalize)

        version = store.write(decide)
        log.info("schema_registered", subject=subject, version=version.version, id=version.schema_id)
        return {"id": version.schema_id}

    @app.post("/subjects/{subject:encoded}")
    def lookup(subject: str, body: SchemaRequest, normalize: bool = False, deleted: bool = False) -> Any:
        def find() -> SchemaVersion:
            if not state().versions(subject, deleted=deleted):
                raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
            candidate = _candidate(store, body, normalize)
            found = state().find(subject, candidate, deleted=deleted, normalized=normalize)
            if found is None:
                raise RegistryError(404, 40403, "Schema not found")
            return found

        return _registered(_fresh(store, find))

    @app.get("/subjects/{subject:encoded}/versions")
    def versions(subject: str, deleted: bool = False, deleted_only: bool = False) -> list[int]:
        every = state().versions(subject, deleted=True)
        chosen = [v for v in every if v.deleted] if deleted_only else state().versions(subject, deleted=deleted)
        if not chosen and not (every and deleted_only):
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return [v.version for v in chosen]

    @app.get("/subjects/{subject:encoded}/versions/{version}")
    def version(subject: str, version: str, deleted: bool = False) -> dict[str, Any]:
        return _registered(_fresh(store, lambda: state().version(subject, version, deleted=deleted)))

    @app.get("/subjects/{subject:encoded}/versions/{version}/schema")
    def version_schema(subject: str, version: str, deleted: bool = False) -> Response:
        return Response(state().version(subject, version, deleted=deleted).schema, media_type=MEDIA_TYPE)

    @app.get("/subjects/{subject:encoded}/versions/{version}/referencedby")
    def referenced_by(subject: str, version: str) -> list[int]:
        target = state().version(subject, version)
        return sorted(
            {
                v.schema_id
                for v in state().all_versions()
                for r in v.references
                if (r["subject"], r["version"]) == (subject, target.version)
            }
        )

    @app.delete("/subjects/{subject:encoded}")
    def delete_subject(subject: str, permanent: bool = False) -> list[int]:
        deleted_versions = store.write(lambda current: current.delete_subject(subject, permanent=permanent))
        log.info("subject_deleted", subject=subject, versions=deleted_versions, permanent=permanent)
        return deleted_versions

    @app.delete("/subjects/{subject:encoded}/versions/{version}")
    def delete_version(subject: str, version: str, permanent: bool = False) -> int:
        number = store.write(lambda current: current.delete_version(subject, version, permanent=permanent))
        log.info("version_deleted", subject=subject, version=number, permanent=permanent)
        return number

    _add_compatibility_routes(app, store)


def _add_compatibility_routes(app: FastAPI, store: SchemaStore) -> None:
    @app.post("/compatibility/subjects/{subject:encoded}/versions/{version}")
    def compatible_with_version(
        subject: str, version: str, body: SchemaRequest, normalize: bool = False, verbose: bool = False
    ) -> dict[str, Any]:
        against = store.state.compatibility_against(subject, version)
        return _check(store, subject, body, normalize, verbose, against)

    @app.post("/compatibility/subjects/{subject:encoded}/versions")
    def compatible_with_all(
        subject: str, body: SchemaRequest, normalize: bool = False, verbose: bool = False
    ) -> dict[str, Any]:
        return _check(store, subject, body, normalize, verbose, store.state.versions(subject))


def _check(
    store: SchemaStore,
    subject: str,
    body: SchemaRequest,
    normalize: bool,
    verbose: bool,
    against: list[SchemaVersion],
) -> dict[str, Any]:
    """A compatibility verdict; a schema registration would refuse as invalid is refused here too."""
    candidate = _candidate(store, body, normalize)
    state = store.state
    state.validate_candidate(subject, candidate, source=body.schema_text, normalized=normalize)
    messages = state.compatibility_messages(subject, candidate, against)
    body_out: dict[str, Any] = {"is_compatible": not messages}
    if verbose:
        body_out["messages"] = messages
    return body_out


def _level(raw: str | None) -> CompatibilityLevel:
    try:
        return CompatibilityLevel(str(raw).upper())
    except ValueError:
        raise RegistryError(422, 42203, f"Invalid compatibility level: {raw}") from None


def _requested(body: ConfigRequest) -> tuple[CompatibilityLevel | None, dict[str, Any]]:
    """The level a PUT /config asks for (None: unchanged) and the answer echoing what it set."""
    raw = body.compatibility if body.compatibility is not None else body.compatibility_level
    if raw is None and body.decimal_strict is None:
        raise RegistryError(422, 42203, "Invalid compatibility level: none given")
    level = None if raw is None else _level(raw)
    echo: dict[str, Any] = {} if level is None else {"compatibility": level.value}
    if body.decimal_strict is not None:
        echo["decimalStrict"] = body.decimal_strict
    return level, echo


def _rendered(config: Config, fallback: Config) -> dict[str, Any]:
    """A config as GET /config answers it: each setting from `config`, else from `fallback`."""
    level = config.level or fallback.level or DEFAULT_LEVEL
    body: dict[str, Any] = {"compatibilityLevel": level.value}
    strict = config.decimal_strict if config.decimal_strict is not None else fallback.decimal_strict
    if strict is not None:
        body["decimalStrict"] = strict
    return body


def _add_config_routes(app: FastAPI, store: SchemaStore) -> None:
    @app.get("/config")
    def global_config() -> dict[str, Any]:
        return _rendered(store.state.config(None), Config())

    @app.put("/config")
    def set_global_config(body: ConfigRequest) -> dict[str, Any]:
        level, echo = _requested(body)
        store.write(lambda current: (None, current.set_config(None, level, body.decimal_strict)))
        return echo

    @app.delete("/config")
    def delete_global_config() -> dict[str, Any]:
        previous = store.write(lambda current: current.delete_config(None))
        return _rendered(previous, Config())

    @app.get("/config/{subject:encoded}")
    def subject_config(subject: str, defaultToGlobal: bool = False) -> dict[str, Any]:
        own = store.state.configs.get(subject)
        if own is None and not defaultToGlobal:
            raise RegistryError(404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured")
        # The level is always answered (clients read it); decimalStrict only where it is set.
        inherited = store.state.config(None).decimal_strict if defaultToGlobal else None
        return _rendered(own or Config(), Config(store.state.global_level, inherited))

    @app.put("/config/{subject:encoded}")
    def set_subject_config(subject: str, body: ConfigRequest) -> dict[str, Any]:
        level, echo = _requested(body)
        store.write(lambda current: (None, current.set_config(subject, level, body.decimal_strict)))
        return echo

    @app.delete("/config/{subject:encoded}")
    def delete_subject_config(subject: str) -> dict[str, Any]:
        previous = store.write(lambda current: current.delete_config(subject))
        return _rendered(previous, Config(store.state.global_level))
