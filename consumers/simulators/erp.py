"""The ERP simulator: journal lines shaped like NetSuite / Dynamics 365 project actuals, upserted by external id.

A posting request becomes one line: `externalId` (the backbone's `posting_id`), `type` COST or REVENUE
(D365's Cost and Unbilled Sales actuals), `project`, `worker`, `tranDate`, a signed decimal-string
`amount` with its `currency`, optionally `costCentre`, `memo` and `reversesExternalId`. Like NetSuite's
upsert by `externalId`, a retried request never creates a second document: the same content answers
200 with the stored document. The same external id with *different* content is refused with 409
`EXTERNAL_ID_CONFLICT` by default (posting ids are deterministic, so that is a bug upstream), or, with
`on_conflict=update`, updates the document and bumps its `version`. Business validation answers 422
with a code: `PERIOD_CLOSED`, `UNKNOWN_PROJECT`, `UNKNOWN_COST_CENTRE`; malformed requests 400. Each
named instance keeps its documents in its own schema, `erp_sim_<name>`. Upserts arriving together
share one transaction (group commit, `ErpStore`); each is answered after it commits.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import orjson
import psycopg
from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from backbone.domain.money import minor_units
from consumers.simulators.amounts import AmountError, check_currency, fits_currency, parse_decimal
from consumers.simulators.faults import FaultSchedule
from consumers.simulators.group_commit import GroupCommit
from consumers.simulators.locked_batch import EscapeLiteral, LockedBatch
from consumers.simulators.pool import ConnectionPool
from consumers.simulators.service import (
    WITHOUT_TELEMETRY,
    Answer,
    Incoming,
    SimulatorApp,
    SimulatorMetrics,
    add_hot_route,
    install_common,
)
from consumers.simulators.settings import ErpSimSettings

MIGRATIONS = Path(__file__).parent / "migrations" / "erp"

UpsertResult = Literal["created", "unchanged", "updated"]


class JournalLineIn(BaseModel):
    """A posting as the ERP accepts it (camelCase on the wire, like NetSuite's REST records)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    external_id: str = Field(min_length=1, max_length=255)
    type: Literal["COST", "REVENUE"]
    project: str = Field(min_length=1, max_length=255)
    worker: str = Field(min_length=1, max_length=255)
    tran_date: date
    amount: str = Field(description='Signed decimal string, e.g. "-150.00"; never a JSON number.')
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    cost_centre: str | None = Field(default=None, max_length=255)
    memo: str | None = Field(default=None, max_length=4000)
    reverses_external_id: str | None = Field(default=None, max_length=255)


class ErpProblem(Exception):
    """A refused line: HTTP status, the ERP's error code, a message and the offending field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def parse_line(body: bytes) -> tuple[JournalLineIn, Decimal]:
    """The line and its exact amount, or ErpProblem 400 saying what is malformed."""
    try:
        line = JournalLineIn.model_validate_json(body, strict=True)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        raise ErpProblem(400, "INVALID_REQUEST", f"{where or 'body'}: {first['msg']}", where) from None
    try:
        amount = parse_decimal(line.amount)
        check_currency(line.currency)
    except AmountError as error:
        raise ErpProblem(400, "INVALID_AMOUNT", str(error), "amount") from None
    if not fits_currency(amount, line.currency):
        places = minor_units(line.currency)
        raise ErpProblem(400, "INVALID_AMOUNT", f"{line.currency} amounts have {places} decimal places", "amount")
    return line, amount


def period_closed(day: date, settings: ErpSimSettings) -> bool:
    """True when the accounting period (month) of `day` is closed."""
    if settings.closed_before is not None and day < settings.closed_before:
        return True
    return f"{day:%Y-%m}" in settings.closed_periods


def business_problem(line: JournalLineIn, settings: ErpSimSettings) -> ErpProblem | None:
    """The first business rule `line` breaks (closed period, unknown project or cost centre), if any."""
    if period_closed(line.tran_date, settings):
        return ErpProblem(422, "PERIOD_CLOSED", f"the period {line.tran_date:%Y-%m} is closed", "tranDate")
    unknown = settings.projects is not None and line.project not in settings.projects
    pattern = settings.reject_project_pattern
    if unknown or (pattern is not None and re.search(pattern, line.project)):
        return ErpProblem(422, "UNKNOWN_PROJECT", f"project {line.project} does not exist in this ERP", "project")
    known = settings.cost_centres
    if line.cost_centre is not None and known is not None and line.cost_centre not in known:
        message = f"cost centre {line.cost_centre} does not exist in this ERP"
        return ErpProblem(422, "UNKNOWN_COST_CENTRE", message, "costCentre")
    return None


_HASHED = tuple(sorted(name for name in JournalLineIn.model_fields if name != "external_id"))
"""The fields a content hash covers, in the order of `json.dumps(..., sort_keys=True)`."""


def content_hash(line: JournalLineIn, amount: Decimal) -> str:
    """What makes two postings with one external id the same: every field, the amount by value.

    The hash is stored with each line, so its text must stay that of `json.dumps(content,
    sort_keys=True)`; when every value is a string or None (always, today) that text is written here
    with the same string encoder, without `model_dump` and the generic encoder (~8% of a line's CPU)."""
    content: dict[str, Any] = {name: getattr(line, name) for name in _HASHED}
    content["amount"] = str(amount.quantize(Decimal(1).scaleb(-minor_units(line.currency))))
    content["tran_date"] = line.tran_date.isoformat()
    if all(value is None or type(value) is str for value in content.values()):
        text = ", ".join(f"{_quoted(name)}: {'null' if v is None else _quoted(v)}" for name, v in content.items())
        canonical = "{" + text + "}"
    else:  # a field of another type: the model's own JSON, as the hash was first made
        content = line.model_dump(mode="json", exclude={"external_id"}) | {"amount": content["amount"]}
        canonical = json.dumps(content, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


_quoted = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


_COLUMNS = (
    "id, external_id, line_type, project, worker, tran_date, amount, currency, cost_centre, memo, "
    "reverses_external_id, content_hash, version, created_at, updated_at"
)


def document(row: dict[str, Any], erp: str) -> dict[str, Any]:
    """A stored line as the API shows it."""
    places = Decimal(1).scaleb(-minor_units(row["currency"]))
    return {
        "id": str(row["id"]),
        "erp": erp,
        "externalId": row["external_id"],
        "type": row["line_type"],
        "project": row["project"],
        "worker": row["worker"],
        "tranDate": row["tran_date"].isoformat(),
        "amount": str(row["amount"].quantize(places)),
        "currency": row["currency"],
        "costCentre": row["cost_centre"],
        "memo": row["memo"],
        "reversesExternalId": row["reverses_external_id"],
        "version": row["version"],
        "createdAt": row["created_at"].isoformat(),
        "updatedAt": row["updated_at"].isoformat(),
    }


@dataclass(frozen=True)
class LineRequest:
    """One upsert waiting for its group commit: the line, its exact amount and its content hash."""

    line: JournalLineIn
    amount: Decimal
    digest: str


_INSERTED = (
    "external_id",
    "line_type",
    "project",
    "worker",
    "tran_date",
    "amount",
    "currency",
    "cost_centre",
    "memo",
    "reverses_external_id",
    "content_hash",
)
_RECORD = (
    "external_id text, line_type text, project text, worker text, tran_date date, amount numeric, currency text,"
    " cost_centre text, memo text, reverses_external_id text, content_hash text"
)


class ErpStore:
    """The instance's journal lines in PostgreSQL.

    Upserts are group-committed (`group_commit.py`): the lines that arrive together are looked up by
    one statement and the new ones inserted by another, in one transaction that holds an advisory
    lock of the schema (so batches are written one after the other, even by several processes). Two
    upserts of one external id never share a batch: the second waits for the next one and finds the
    first's document, exactly as if it had come later. As in the billing simulator (`BillingStore`),
    BEGIN, the lock and the lookup go to the server as one query string and the insert and COMMIT as
    another: two round trips per batch instead of five (plus one per changed line); the insert is
    prepared once per connection (`STATEMENTS`) and EXECUTEd, the documents travel as literals.
    """

    LOOKUP = (
        f" SELECT {_COLUMNS} FROM journal_lines"
        " WHERE external_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))"
    ).encode()
    """The batch's lookup, planned for each batch (a plan prepared while the table was empty may keep a
    sequential scan as it grows: `BillingStore.LOOKUP`)."""

    STATEMENTS = (
        f"PREPARE erp_sim_insert (jsonb) AS INSERT INTO journal_lines ({', '.join(_INSERTED)})"
        f" SELECT * FROM jsonb_to_recordset($1) AS l ({_RECORD}) RETURNING {_COLUMNS}"
    ).encode()
    """The batch's insert, prepared on each connection before its first batch (the ids and rows travel
    as JSON documents: psycopg's array dumper quotes each value in Python)."""

    def __init__(self, pool: ConnectionPool, settings: ErpSimSettings, *, group_commit_s: float = 0.002) -> None:
        self.pool, self.settings = pool, settings
        self._batch = LockedBatch(f"erp-sim\x00{settings.db_schema}", self.STATEMENTS, self.LOOKUP)
        self._writes: GroupCommit[LineRequest, tuple[UpsertResult, dict[str, Any]]] = GroupCommit(
            self._write, window_s=group_commit_s, apart_by=lambda request: request.line.external_id
        )

    async def upsert(self, line: JournalLineIn, amount: Decimal) -> tuple[UpsertResult, dict[str, Any]]:
        """Create, find unchanged, or update the line with `line.external_id`; ErpProblem when refused."""
        return await self._writes.submit(LineRequest(line, amount, content_hash(line, amount)))

    async def _write(self, requests: Sequence[LineRequest]) -> list[tuple[UpsertResult, dict[str, Any]] | Exception]:
        """One transaction for a batch of upserts; each line's result, or its own ErpProblem."""
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            literal = await self._batch.begin(conn, cursor, [r.line.external_id for r in requests])
            existing = {row["external_id"]: row for row in await cursor.fetchall()}
            answers: list[tuple[UpsertResult, dict[str, Any]] | Exception | None] = []
            for request in requests:
                answers.append(await self._answer(cursor, existing.get(request.line.external_id), request))
            new = [r for r, answer in zip(requests, answers, strict=True) if answer is None]
            created = await self._insert_and_commit(cursor, literal, new)
        return [
            answer if answer is not None else ("created", created[r.line.external_id])
            for r, answer in zip(requests, answers, strict=True)
        ]

    async def _answer(
        self, cursor: psycopg.AsyncCursor[dict[str, Any]], existing: dict[str, Any] | None, request: LineRequest
    ) -> tuple[UpsertResult, dict[str, Any]] | ErpProblem | None:
        """The result of a line against what is stored, its ErpProblem, or None: insert it."""
        try:
            if existing is not None:
                return await self._against_existing(cursor, existing, request.line, request.amount, request.digest)
            if (problem := business_problem(request.line, self.settings)) is not None:
                raise problem
        except ErpProblem as problem:
            return problem
        return None

    async def _insert_and_commit(
        self,
        cursor: psycopg.AsyncCursor[dict[str, Any]],
        literal: EscapeLiteral,
        requests: list[LineRequest],
    ) -> dict[str, dict[str, Any]]:
        """Insert the new lines with one statement (the rows travel as one JSON document) and COMMIT, in
        one round trip; the inserted rows by external id."""
        if not requests:
            await cursor.execute(b"COMMIT")
            return {}
        rows = [
            dict(zip(_INSERTED, (*_values(r.line, r.amount), r.digest), strict=True)) | {"amount": str(r.amount)}
            for r in requests
        ]
        # its first result, the inserted rows, is the cursor's
        await cursor.execute(b"EXECUTE erp_sim_insert(%s); COMMIT" % literal(orjson.dumps(rows)))
        return {row["external_id"]: row for row in await cursor.fetchall()}

    async def _against_existing(
        self,
        cursor: psycopg.AsyncCursor[dict[str, Any]],
        existing: dict[str, Any],
        line: JournalLineIn,
        amount: Decimal,
        digest: str,
    ) -> tuple[UpsertResult, dict[str, Any]]:
        if existing["content_hash"] == digest:
            return "unchanged", existing
        if self.settings.on_conflict == "reject":
            raise ErpProblem(
                409,
                "EXTERNAL_ID_CONFLICT",
                f"document {existing['id']} has external id {line.external_id} with other content",
                "externalId",
            )
        if period_closed(existing["tran_date"], self.settings):
            raise ErpProblem(422, "PERIOD_CLOSED", f"document {existing['id']} is in a closed period", "tranDate")
        if (problem := business_problem(line, self.settings)) is not None:
            raise problem
        await cursor.execute(
            "UPDATE journal_lines SET line_type = %s, project = %s, worker = %s, tran_date = %s, amount = %s,"
            " currency = %s, cost_centre = %s, memo = %s, reverses_external_id = %s, content_hash = %s,"
            f" version = version + 1, updated_at = now() WHERE external_id = %s RETURNING {_COLUMNS}",
            (*_values(line, amount)[1:], digest, line.external_id),
        )
        updated = await cursor.fetchone()
        assert updated is not None  # the row is locked by this transaction
        return "updated", updated

    async def get(self, external_id: str) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(f"SELECT {_COLUMNS} FROM journal_lines WHERE external_id = %s", (external_id,))
            return await cursor.fetchone()

    async def search(self, filters: dict[str, Any], limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Lines matching every given filter (column = value), oldest first, and how many match in all."""
        where = " AND ".join(f"{column} = %s" for column in filters) or "true"
        values = list(filters.values())
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(f"SELECT count(*) AS n FROM journal_lines WHERE {where}", values)
            total = await cursor.fetchone()
            await cursor.execute(
                f"SELECT {_COLUMNS} FROM journal_lines WHERE {where} ORDER BY id LIMIT %s OFFSET %s",
                [*values, limit, offset],
            )
            return await cursor.fetchall(), int(total["n"]) if total else 0


def _values(line: JournalLineIn, amount: Decimal) -> tuple[Any, ...]:
    return (
        line.external_id,
        line.type,
        line.project,
        line.worker,
        line.tran_date,
        amount,
        line.currency,
        line.cost_centre,
        line.memo,
        line.reverses_external_id,
    )


def erp_problem(status: int, code: str, message: str, field: str | None = None) -> Answer:
    """An error the way NetSuite's REST API words one, plus a top-level `code` for convenience."""
    detail: dict[str, Any] = {"detail": message, "o:errorCode": code.upper()}
    if field is not None:
        detail["o:errorPath"] = field
    body = {"status": status, "code": code.upper(), "title": message, "o:errorDetails": [detail]}
    return Answer(status, orjson.dumps(body))


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_STATUS_OF: dict[UpsertResult, int] = {"created": 201, "unchanged": 200, "updated": 200}
_FILTERS = {"project": "project", "worker": "worker", "type": "line_type", "externalId": "external_id"}


def create_erp_app(settings: ErpSimSettings, conninfo: str, *, schedule: FaultSchedule | None = None) -> SimulatorApp:
    """The ERP simulator's app; its schema must be migrated already (`run_erp_sim` does that)."""
    pool = ConnectionPool(conninfo, settings.db_schema, settings.pool_size)
    store = ErpStore(pool, settings, group_commit_s=settings.group_commit_ms / 1000)
    metrics = SimulatorMetrics(f"erp-sim:{settings.name}")

    @asynccontextmanager
    async def lifespan(app: SimulatorApp) -> AsyncIterator[None]:
        yield
        await pool.close()

    app = SimulatorApp(
        title=f"ERP simulator {settings.name}",
        version="1",
        description="Journal lines like NetSuite / Dynamics 365 project actuals, upserted by externalId.",
        lifespan=lifespan,
        telemetry=WITHOUT_TELEMETRY,
    )
    app.state.store = store
    app.state.schedule = schedule or FaultSchedule(settings.faults)
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    install_common(
        app,
        name=f"erp-sim:{settings.name}",
        schedule=app.state.schedule,
        metrics=metrics,
        problem=erp_problem,
        admin_token=admin_token,
    )

    async def post_line(request: Incoming) -> Answer:
        try:
            line, amount = parse_line(await request.body())
            result, row = await store.upsert(line, amount)
        except ErpProblem as problem:
            return erp_problem(problem.status, problem.code, problem.message, problem.field)
        metrics.count_document(result)
        location = f"/v1/journal-lines/{quote(row['external_id'], safe='')}"
        headers = (("X-Upsert-Result", result), ("Location", location))
        return Answer(_STATUS_OF[result], orjson.dumps(document(row, settings.name)), headers)

    add_hot_route(
        app,
        "/v1/journal-lines",
        post_line,
        status_code=201,
        summary="Upsert a journal line by externalId (201 created; 200 unchanged or updated)",
        openapi_extra=_json_body(JournalLineIn.model_json_schema(by_alias=True)),
    )

    @app.get("/v1/journal-lines/{external_id}", summary="One journal line by externalId")
    async def get_line(external_id: str) -> Response:
        row = await store.get(external_id)
        if row is None:
            message = f"no journal line has external id {external_id}"
            return erp_problem(404, "RECORD_NOT_FOUND", message, "externalId").response()
        return JSONResponse(document(row, settings.name))

    @app.get("/v1/journal-lines", summary="Journal lines, filtered by project, worker, type or externalId")
    async def list_lines(
        request: Request,
        limit: int = Query(default=100, ge=1, le=1000),
        offset: int = Query(default=0, ge=0),
    ) -> Response:
        filters = {
            column: request.query_params[name] for name, column in _FILTERS.items() if name in request.query_params
        }
        rows, total = await store.search(filters, limit, offset)
        items = [document(row, settings.name) for row in rows]
        return JSONResponse(
            {
                "items": items,
                "count": len(items),
                "offset": offset,
                "totalResults": total,
                "hasMore": offset + len(items) < total,
            }
        )

    return app
