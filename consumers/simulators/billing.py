"""The billing simulator: Stripe-shaped invoice items collected on draft invoices per client and month.

`POST /v1/invoiceitems` takes Stripe's parameters, form-encoded (`metadata[candidate_id]=…`) or as
JSON: `customer`, `amount` in signed integer minor units of `currency` (negative is a credit: an
adjustment or reversal), lowercase `currency`, `tax_code` (required here: a line without one is 400
`tax_code_missing`), `description`, `period[start]`/`period[end]` (Unix seconds) and `metadata`.
The item's work date is `metadata[work_date]` (YYYY-MM-DD) or else the day of `period[start]`; it
lands on the draft invoice of its customer, month and currency, created on first use. Totals are
sums of the stored items, never a counter that could drift. `Idempotency-Key` behaves like Stripe's
(see `idempotency.py`): the first response is stored in the same transaction as the item and
replayed with `Idempotent-Replayed: true`. Creates arriving together share one transaction (group
commit, `BillingStore`); each is answered after it commits.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import psycopg
from fastapi import Query, Response
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row

from consumers.simulators.amounts import minor_units_text
from consumers.simulators.faults import FaultSchedule
from consumers.simulators.group_commit import GroupCommit
from consumers.simulators.idempotency import Decision, StoredRequest, decide, fingerprint, key_problem
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
from consumers.simulators.settings import BillingSimSettings

MIGRATIONS = Path(__file__).parent / "migrations" / "billing"
ITEMS_PATH = "/v1/invoiceitems"
KNOWN_PARAMS = {"customer", "amount", "currency", "tax_code", "description", "period", "metadata"}
MAX_AMOUNT = 10**15
_LOWER_CURRENCY = re.compile(r"^[a-z]{3}$")
_INTEGER = re.compile(r"^-?[0-9]{1,16}$")
_PERIOD = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


class StripeProblem(Exception):
    """A refused request, worded like a Stripe error object."""

    def __init__(
        self, status: int, code: str | None, message: str, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.kind = kind or ("api_error" if status >= 500 else "invalid_request_error")


def stripe_problem(status: int, code: str, message: str, field: str | None = None) -> Answer:
    return _problem_answer(StripeProblem(status, code, message, field))


def _problem_answer(problem: StripeProblem) -> Answer:
    error: dict[str, Any] = {"type": problem.kind, "message": problem.message}
    if problem.code is not None:
        error["code"] = problem.code
    if problem.param is not None:
        error["param"] = problem.param
    return Answer(problem.status, orjson.dumps({"error": error}))


# --- parameters ---------------------------------------------------------------------------------


def parse_params(body: bytes, content_type: str) -> dict[str, Any]:
    """Stripe's form encoding (one level of `a[b]` nesting) or a JSON object, as one nested dict."""
    if "json" in content_type:
        try:
            document = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as error:
            raise StripeProblem(400, "parameter_invalid", f"the body is not JSON: {error}") from None
        if not isinstance(document, dict):
            raise StripeProblem(400, "parameter_invalid", "the body must be a JSON object")
        return document
    params: dict[str, Any] = {}
    for name, value in parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True):
        outer, bracket, inner = name.partition("[")
        if bracket and inner.endswith("]"):
            params.setdefault(outer, {})[inner[:-1]] = value
        else:
            params[name] = value
    return params


@dataclass(frozen=True)
class InvoiceItemParams:
    """A validated invoice item request."""

    customer: str
    amount: int
    currency: str
    tax_code: str
    work_date: date
    description: str | None = None
    period_start: int | None = None
    period_end: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    invoice: tuple[str, str, str] = field(init=False, repr=False, compare=False)
    """Which draft invoice the item lands on: its customer, month (`period`) and currency."""

    def __post_init__(self) -> None:
        # asked three times per write (which invoice, the item's answer and its row), so made once, here:
        # a cached_property's first read takes a lock (Python 3.11)
        object.__setattr__(self, "invoice", (self.customer, f"{self.work_date:%Y-%m}", self.currency))

    @property
    def period(self) -> str:
        """The invoice period: the month of the work date."""
        return self.invoice[1]

    def canonical(self) -> dict[str, Any]:
        """The parameters as compared for idempotency (form and JSON spellings agree)."""
        return {
            "customer": self.customer,
            "amount": self.amount,
            "currency": self.currency,
            "tax_code": self.tax_code,
            "work_date": self.work_date.isoformat(),
            "description": self.description,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "metadata": dict(self.metadata),
        }


def invoice_item_params(params: Mapping[str, Any]) -> InvoiceItemParams:
    """Validate Stripe's invoice item parameters; StripeProblem (400) names the first bad one."""
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise StripeProblem(400, "parameter_unknown", f"Received unknown parameter: {unknown[0]}", unknown[0])
    customer = _required_text(params, "customer")
    amount = _amount(params.get("amount"))
    currency = _currency(params.get("currency"))
    tax_code = params.get("tax_code")
    if not isinstance(tax_code, str) or not tax_code.strip():
        raise StripeProblem(400, "tax_code_missing", "every invoice item needs a tax_code", "tax_code")
    metadata = _metadata(params.get("metadata"))
    period_start, period_end = _period(params.get("period"))
    description = params.get("description")
    if description is not None and not isinstance(description, str):
        raise StripeProblem(400, "parameter_invalid", "description must be a string", "description")
    work_date = _work_date(metadata, period_start)
    return InvoiceItemParams(
        customer, amount, currency, tax_code, work_date, description, period_start, period_end, metadata
    )


def _required_text(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise StripeProblem(400, "parameter_missing", f"Missing required param: {name}.", name)
    if not isinstance(value, str):
        raise StripeProblem(400, "parameter_invalid", f"{name} must be a string", name)
    return value


def _amount(value: Any) -> int:
    if value is None or value == "":
        raise StripeProblem(400, "parameter_missing", "Missing required param: amount.", "amount")
    if isinstance(value, str) and _INTEGER.match(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) >= MAX_AMOUNT:
        message = "amount is an integer in the currency's minor units (cents, yen, fils): 1500, not 15.00"
        raise StripeProblem(400, "parameter_invalid_integer", message, "amount")
    return value


def _currency(value: Any) -> str:
    if value is None or value == "":
        raise StripeProblem(400, "parameter_missing", "Missing required param: currency.", "currency")
    if not isinstance(value, str) or not _LOWER_CURRENCY.match(value):
        raise StripeProblem(400, "parameter_invalid", "currency is a lowercase ISO 4217 code, e.g. usd", "currency")
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) and len(v) <= 500 for v in value.values()):
        raise StripeProblem(400, "parameter_invalid", "metadata is a map of strings (500 characters)", "metadata")
    return {str(k): v for k, v in value.items()}


def _period(value: Any) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict) or set(value) - {"start", "end"}:
        raise StripeProblem(400, "parameter_invalid", "period has start and end (Unix seconds)", "period")
    start, end = (_timestamp(value.get(part), f"period[{part}]") for part in ("start", "end"))
    if start is not None and end is not None and end < start:
        raise StripeProblem(400, "parameter_invalid", "period[end] is before period[start]", "period[end]")
    return start, end


def _timestamp(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 253402300800:
        raise StripeProblem(400, "parameter_invalid_integer", f"{param} is a Unix timestamp in seconds", param)
    return value


def _work_date(metadata: Mapping[str, str], period_start: int | None) -> date:
    if "work_date" in metadata:
        try:
            return date.fromisoformat(metadata["work_date"])
        except ValueError:
            raise StripeProblem(
                400, "parameter_invalid", "metadata[work_date] is a date, YYYY-MM-DD", "metadata[work_date]"
            ) from None
    if period_start is not None:
        return datetime.fromtimestamp(period_start, UTC).date()
    raise StripeProblem(
        400, "parameter_missing", "give metadata[work_date] or period[start]: it picks the invoice", "period[start]"
    )


# --- documents ----------------------------------------------------------------------------------


def item_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored item as Stripe shows an invoiceitem (plus `display_amount`, the decimal amount)."""
    return {
        "id": row["id"],
        "object": "invoiceitem",
        "amount": row["amount"],
        "currency": row["currency"],
        "customer": row["customer"],
        "date": int(row["created_at"].timestamp()),
        "description": row["description"],
        "invoice": row["invoice_id"],
        "livemode": False,
        "metadata": row["metadata"],
        "period": {"start": row["period_start"], "end": row["period_end"]},
        "tax_code": row["tax_code"],
        "work_date": row["work_date"].isoformat(),
        "display_amount": minor_units_text(row["amount"], row["currency"]),
    }


def invoice_object(row: Mapping[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """A draft invoice as Stripe shows one, with its lines; totals are the sum of its items."""
    total = sum(item["amount"] for item in items)
    return {
        "id": row["id"],
        "object": "invoice",
        "customer": row["customer"],
        "currency": row["currency"],
        "status": row["status"],
        "period": row["period"],
        "created": int(row["created_at"].timestamp()),
        "livemode": False,
        "subtotal": total,
        "total": total,
        "amount_due": total,
        "display_total": minor_units_text(total, row["currency"]),
        "lines": {"object": "list", "data": items, "has_more": False, "total_count": len(items)},
    }


def _listed(url: str, data: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "url": url, "has_more": has_more, "data": data}


def _new_id(prefix: str) -> str:
    """A random id like Stripe's: the object's prefix and 24 hex digits (96 random bits)."""
    return f"{prefix}_{os.urandom(12).hex()}"


def _invoice_of(item: InvoiceItemParams) -> tuple[str, str, str]:
    """Which draft invoice an item lands on: its customer, month and currency."""
    return item.invoice


def _new_item_object(item_id: str, invoice_id: str, item: InvoiceItemParams, created_at: datetime) -> dict[str, Any]:
    """The invoiceitem a create answers, from what is being inserted (the row is written with these values)."""
    return item_object(
        {
            "id": item_id,
            "invoice_id": invoice_id,
            "customer": item.customer,
            "amount": item.amount,
            "currency": item.currency,
            "description": item.description,
            "tax_code": item.tax_code,
            "period_start": item.period_start,
            "period_end": item.period_end,
            "work_date": item.work_date,
            "metadata": item.metadata,
            "created_at": created_at,
        }
    )


# --- store --------------------------------------------------------------------------------------

_ITEM_COLUMNS = (
    "id, invoice_id, customer, amount, currency, description, tax_code, period_start, period_end, work_date,"
    " metadata, created_at"
)


@dataclass(frozen=True)
class Outcome:
    """The answer to a create request (its exact bytes) and whether it was replayed from an idempotency record."""

    status: int
    body: bytes
    replayed: bool = False


@dataclass(frozen=True)
class ItemRequest:
    """One create request waiting for its group commit: the item, and its key and fingerprint when keyed."""

    item: InvoiceItemParams
    key: str | None = None
    fingerprint: str = ""


class BillingStore:
    """Invoices, items and idempotency records in PostgreSQL.

    Creates are group-committed (`group_commit.py`): the requests that arrive together are written by
    at most three statements in one transaction, whatever their number: the keys they carry are read,
    the draft invoices they land on are created or found (unless this process knows them all already:
    an invoice, once committed, keeps its id), and the new items and their idempotency records are
    inserted. The transaction holds an advisory lock of the schema, so batches of one schema are written
    one after the other even by several processes, and a key is looked up after every earlier write of
    it has committed. A batch costs two round trips to the server (three when an invoice is new): BEGIN,
    the lock and the lookup go as one query string, the inserts and COMMIT as another (PostgreSQL runs
    the statements of one string one after the other, each with a snapshot of its own, so the lookup
    still sees every write committed before the lock was granted). Such strings take no parameters, so
    the inserts are a statement prepared once per connection (`STATEMENTS`) and EXECUTEd, and the
    documents travel as literals escaped by libpq. Five round trips per batch made the batch's
    wait, which all its requests share, longer on a busy machine; psycopg's pipeline mode, which saves
    the same round trips, cost more CPU than it saved (0.37 against 0.33 ms per item, docs/delivery.md).
    A second request with a key while the first is still queued or being written is answered 409
    `idempotency_key_in_use` at once, as Stripe does.
    """

    LOOKUP = (
        b" SELECT now(), k.key, k.fingerprint, k.status_code, k.response, k.created_at"
        b" FROM (SELECT 1) AS one LEFT JOIN idempotency_keys AS k"
        b" ON k.key = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))"
    )
    """The batch's lookup of its keys. Planned for each batch: prepared on a connection's first batch, its
    generic plan was made while the table was empty and kept a sequential scan as the table grew (in three
    runs of eight, PostgreSQL's CPU per item went from ~0.08 to ~0.2 ms)."""

    STATEMENTS = (
        b"PREPARE billing_sim_insert (jsonb, jsonb) AS"
        b" WITH items AS (INSERT INTO invoice_items (id, invoice_id, customer, amount, currency, description,"
        b"   tax_code, period_start, period_end, work_date, metadata, created_at)"
        b"   SELECT *, now() FROM jsonb_to_recordset($1) AS i (id text, invoice_id text,"
        b"   customer text, amount bigint, currency text, description text, tax_code text, period_start bigint,"
        b"   period_end bigint, work_date date, metadata jsonb))"
        b" INSERT INTO idempotency_keys (key, fingerprint, status_code, response, created_at)"
        b" SELECT key, fingerprint, 200, response, now()"
        b"   FROM jsonb_to_recordset($2) AS k (key text, fingerprint text, response text)"
        b" ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint,"
        b" status_code = excluded.status_code, response = excluded.response, created_at = excluded.created_at"
    )
    """The batch's inserts, prepared on each connection before its first batch. The keys and the rows
    travel as JSON documents: psycopg's array dumpers quote each value in Python."""

    MAX_KNOWN_INVOICES = 100_000
    """Invoice ids remembered at most (customers x months x currencies); forgotten all at once beyond."""

    def __init__(
        self, pool: ConnectionPool, schema: str, idempotency_ttl: timedelta, *, group_commit_s: float = 0.002
    ) -> None:
        self.pool, self.schema, self.ttl = pool, schema, idempotency_ttl
        self._batch = LockedBatch(f"billing-sim\x00{schema}", self.STATEMENTS, self.LOOKUP)
        self._writes: GroupCommit[ItemRequest, Outcome] = GroupCommit(self._write, window_s=group_commit_s)
        self._keys_in_flight: set[str] = set()
        self._known_invoices: dict[tuple[str, str, str], str] = {}

    async def create_item(self, item: InvoiceItemParams) -> Outcome:
        return await self._writes.submit(ItemRequest(item))

    async def create_item_once(self, key: str, request_fingerprint: str, item: InvoiceItemParams) -> Outcome:
        """Create under `key` unless the key has a live record; see `idempotency.py` for the rules."""
        if key in self._keys_in_flight:
            raise StripeProblem(
                409,
                "idempotency_key_in_use",
                "There is currently another in-progress request using this idempotency key. Try again later.",
            )
        self._keys_in_flight.add(key)
        try:
            return await self._writes.submit(ItemRequest(item, key, request_fingerprint))
        finally:
            self._keys_in_flight.discard(key)

    async def _write(self, requests: Sequence[ItemRequest]) -> list[Outcome | Exception]:
        """One transaction for a batch of creates; each request's outcome, or its own StripeProblem."""
        try:
            async with self.pool.connection() as conn:
                cursor = conn.cursor()
                literal = await self._batch.begin(conn, cursor, [r.key for r in requests if r.key is not None])
                now, stored = await self._stored_keys(cursor)
                answers: list[Outcome | Exception | None] = []
                created: list[tuple[ItemRequest, str]] = []
                for request in requests:
                    answer = self._answer_from_key(request, stored.get(request.key or ""), now)
                    answers.append(answer)
                    if answer is None:
                        created.append((request, _new_id("ii")))
                invoices = await self._draft_invoices(cursor, [r.item for r, _ in created])
                bodies = [
                    orjson.dumps(_new_item_object(item_id, invoices[_invoice_of(r.item)], r.item, now))
                    for r, item_id in created
                ]
                await self._insert_and_commit(cursor, literal, created, invoices, bodies)
        except BaseException:
            self._known_invoices.clear()  # in case an invoice was removed under this process
            raise
        self._remember(invoices)  # committed: they exist
        fresh = iter(Outcome(200, body) for body in bodies)
        return [answer if answer is not None else next(fresh) for answer in answers]

    def _remember(self, invoices: dict[tuple[str, str, str], str]) -> None:
        if len(self._known_invoices) + len(invoices) > self.MAX_KNOWN_INVOICES:
            self._known_invoices.clear()
        self._known_invoices.update(invoices)

    @staticmethod
    async def _stored_keys(
        cursor: psycopg.AsyncCursor[Any],
    ) -> tuple[datetime, dict[str, tuple[str, int, str, datetime]]]:
        """The transaction's time and the records kept for the batch's keys, from `LOOKUP`'s rows."""
        rows = await cursor.fetchall()
        stored = {row[1]: (row[2], row[3], row[4], row[5]) for row in rows if row[1] is not None}
        return rows[0][0], stored

    def _answer_from_key(
        self, request: ItemRequest, stored: tuple[str, int, str, datetime] | None, now: datetime
    ) -> Outcome | StripeProblem | None:
        """The answer a keyed request gets from its stored record (replay, mismatch); None: create the item."""
        if request.key is None:
            return None
        kept = StoredRequest(stored[0], stored[3]) if stored is not None else None
        decision = decide(kept, request.fingerprint, now, self.ttl)
        if decision is Decision.MISMATCH:
            return StripeProblem(
                400,
                None,
                "Keys for idempotent requests can only be used with the same parameters they were first used "
                f"with. Try using a key other than '{request.key}' if you meant to execute a different request.",
                kind="idempotency_error",
            )
        if decision is Decision.REPLAY:
            assert stored is not None
            return Outcome(stored[1], stored[2].encode(), replayed=True)
        return None

    async def _draft_invoices(
        self, cursor: psycopg.AsyncCursor[Any], items: list[InvoiceItemParams]
    ) -> dict[tuple[str, str, str], str]:
        """The draft invoice of each (customer, month, currency), created on first use; one statement, none
        when every one is known already."""
        invoices = {_invoice_of(item) for item in items}
        known = self._known_invoices
        if all(invoice in known for invoice in invoices):
            return {invoice: known[invoice] for invoice in invoices}
        wanted = sorted(invoices)
        rows = [
            {"id": _new_id("in"), "customer": customer, "period": period, "currency": currency}
            for customer, period, currency in wanted
        ]
        await cursor.execute(
            "WITH wanted AS (SELECT * FROM jsonb_to_recordset(%s::jsonb)"
            "   AS w (id text, customer text, period text, currency text)),"
            " created AS (INSERT INTO invoices (id, customer, period, currency) SELECT * FROM wanted"
            "   ON CONFLICT (customer, period, currency) DO NOTHING RETURNING id, customer, period, currency)"
            " SELECT id, customer, period, currency FROM created"
            " UNION ALL SELECT i.id, i.customer, i.period, i.currency FROM invoices AS i"
            "   JOIN wanted AS w ON (i.customer, i.period, i.currency) = (w.customer, w.period, w.currency)",
            (orjson.dumps(rows).decode(),),
        )
        return {(customer, period, currency): str(id_) for id_, customer, period, currency in await cursor.fetchall()}

    async def _insert_and_commit(
        self,
        cursor: psycopg.AsyncCursor[Any],
        literal: EscapeLiteral,
        created: list[tuple[ItemRequest, str]],
        invoices: dict[tuple[str, str, str], str],
        bodies: list[bytes],
    ) -> None:
        """The new items and, for the keyed ones, their idempotency records (the answer's exact bytes),
        created at the transaction's time; then COMMIT, in the same round trip."""
        if not created:
            await cursor.execute(b"COMMIT")
            return
        rows = [
            {
                "id": item_id,
                "invoice_id": invoices[_invoice_of(r.item)],
                "customer": r.item.customer,
                "amount": r.item.amount,
                "currency": r.item.currency,
                "description": r.item.description,
                "tax_code": r.item.tax_code,
                "period_start": r.item.period_start,
                "period_end": r.item.period_end,
                "work_date": r.item.work_date,
                "metadata": r.item.metadata,
            }
            for r, item_id in created
        ]
        keys = [
            {"key": r.key, "fingerprint": r.fingerprint, "response": body.decode()}
            for (r, _), body in zip(created, bodies, strict=True)
            if r.key is not None
        ]
        documents = literal(orjson.dumps(rows)), literal(orjson.dumps(keys))
        await cursor.execute(b"EXECUTE billing_sim_insert(%s, %s); COMMIT" % documents)

    async def item(self, item_id: str) -> dict[str, Any] | None:
        rows = await self._items("id = %s", [item_id], limit=1)
        return rows[0] if rows else None

    async def items(self, filters: Mapping[str, str], limit: int) -> list[dict[str, Any]]:
        where = " AND ".join(f"{column} = %s" for column in filters) or "true"
        return await self._items(where, list(filters.values()), limit=limit)

    async def _items(self, where: str, values: list[Any], *, limit: int) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                f"SELECT {_ITEM_COLUMNS} FROM invoice_items WHERE {where} ORDER BY created_at, id LIMIT %s",
                [*values, limit],
            )
            return [item_object(row) for row in await cursor.fetchall()]

    async def invoices(self, filters: Mapping[str, str], limit: int) -> list[dict[str, Any]]:
        """Invoices matching every filter (column = value), each with its lines and totals."""
        where = " AND ".join(f"{column} = %s" for column in filters) or "true"
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT id, customer, period, currency, status, created_at FROM invoices"
                f" WHERE {where} ORDER BY customer, period, currency LIMIT %s",
                [*filters.values(), limit],
            )
            invoices = await cursor.fetchall()
        found = []
        for invoice in invoices:
            lines = await self._items("invoice_id = %s", [invoice["id"]], limit=100_000)
            found.append(invoice_object(invoice, lines))
        return found


# --- the app ------------------------------------------------------------------------------------

_ITEM_SCHEMA = {
    "type": "object",
    "required": ["customer", "amount", "currency", "tax_code"],
    "properties": {
        "customer": {"type": "string"},
        "amount": {"type": "integer", "description": "Signed minor units; negative is a credit."},
        "currency": {"type": "string", "pattern": "^[a-z]{3}$"},
        "tax_code": {"type": "string"},
        "description": {"type": "string"},
        "period": {"type": "object", "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}}},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_ITEM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _ITEM_SCHEMA},
            "application/json": {"schema": _ITEM_SCHEMA},
        },
    },
    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}],
}


def create_billing_app(
    settings: BillingSimSettings, conninfo: str, *, schedule: FaultSchedule | None = None
) -> SimulatorApp:
    """The billing simulator's app; its schema must be migrated already (`run_billing_sim` does that)."""
    pool = ConnectionPool(conninfo, settings.db_schema, settings.pool_size)
    store = BillingStore(
        pool,
        settings.db_schema,
        timedelta(seconds=settings.idempotency_ttl_s),
        group_commit_s=settings.group_commit_ms / 1000,
    )
    metrics = SimulatorMetrics("billing-sim")

    @asynccontextmanager
    async def lifespan(app: SimulatorApp) -> AsyncIterator[None]:
        yield
        await pool.close()

    app = SimulatorApp(
        title="Billing engine simulator",
        version="1",
        description="Stripe-shaped invoice items and draft invoices, with Stripe's Idempotency-Key rules.",
        lifespan=lifespan,
        telemetry=WITHOUT_TELEMETRY,
    )
    app.state.store = store
    app.state.schedule = schedule or FaultSchedule(settings.faults)
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    install_common(
        app,
        name="billing-sim",
        schedule=app.state.schedule,
        metrics=metrics,
        problem=stripe_problem,
        admin_token=admin_token,
    )

    async def create_invoice_item(request: Incoming) -> Answer:
        key = request.headers.get("idempotency-key")
        try:
            params = parse_params(await request.body(), request.headers.get("content-type", ""))
            item = invoice_item_params(params)
            if key is None:
                outcome = await store.create_item(item)
            else:
                if (problem := key_problem(key)) is not None:
                    raise StripeProblem(400, "idempotency_key_invalid", problem)
                request_fingerprint = fingerprint("POST", ITEMS_PATH, item.canonical())
                outcome = await store.create_item_once(key, request_fingerprint, item)
        except StripeProblem as problem:
            return _problem_answer(problem)
        metrics.count_document("replayed" if outcome.replayed else "created")
        headers: tuple[tuple[str, str], ...] = (("Idempotency-Key", key),) if key is not None else ()
        if outcome.replayed:
            headers += (("Idempotent-Replayed", "true"),)
        return Answer(outcome.status, outcome.body, headers)

    add_hot_route(
        app,
        ITEMS_PATH,
        create_invoice_item,
        summary="Create an invoice item (Stripe parameters, form or JSON)",
        openapi_extra=_ITEM_BODY,
    )

    @app.get(ITEMS_PATH + "/{item_id}", summary="One invoice item")
    async def get_invoice_item(item_id: str) -> Response:
        found = await store.item(item_id)
        if found is None:
            return stripe_problem(404, "resource_missing", f"No such invoiceitem: '{item_id}'", "id").response()
        return JSONResponse(found)

    @app.get(ITEMS_PATH, summary="Invoice items, by customer or invoice")
    async def list_invoice_items(
        customer: str | None = None, invoice: str | None = None, limit: int = Query(default=100, ge=1, le=10_000)
    ) -> Response:
        filters = {column: value for column, value in (("customer", customer), ("invoice_id", invoice)) if value}
        return JSONResponse(_listed(ITEMS_PATH, await store.items(filters, limit)))

    @app.get("/v1/invoices/{invoice_id}", summary="One draft invoice with its lines and totals")
    async def get_invoice(invoice_id: str) -> Response:
        found = await store.invoices({"id": invoice_id}, 1)
        if not found:
            return stripe_problem(404, "resource_missing", f"No such invoice: '{invoice_id}'", "id").response()
        return JSONResponse(found[0])

    @app.get("/v1/invoices", summary="Draft invoices by customer and period (YYYY-MM), with totals")
    async def list_invoices(
        customer: str | None = None,
        period: str | None = None,
        currency: str | None = None,
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> Response:
        if period is not None and not _PERIOD.match(period):
            return stripe_problem(400, "parameter_invalid", "period is a month, YYYY-MM", "period").response()
        wanted = (("customer", customer), ("period", period), ("currency", currency))
        filters = {column: value for column, value in wanted if value}
        return JSONResponse(_listed("/v1/invoices", await store.invoices(filters, limit)))

    return app
