"""What each delivery connector sends and what it publishes back: the billing engine and the ERPs.

A `System` turns one canonical record into one HTTP request that carries the record's id as the
system's idempotency key (a candidate's `candidate_id` as Stripe's `Idempotency-Key`, a posting's
`posting_id` as the ERP's `externalId`), and turns the system's answer into the acknowledgment event
(`BillingResponse`, `PostingAck`). Sending the same record twice therefore makes one document, which
is what makes at-least-once calls safe (docs/delivery.md). Pure mapping: no client, no Kafka.

An acknowledgment is built without pydantic's validation when it may be (`acknowledge`): its values
are the validated record's own, the current instant and constants, except the few the system
answered (its document id, code and message), which are taken as they are only when they are plain
strings, the only values their fields accept; anything else is validated by the model, which accepts
it or says why not. Validating every acknowledgment, then copying it to add its id, was a fifth of
the connector's CPU per record once its HTTP client was cheap (docs/delivery.md, "Throughput").
tests/unit/test_delivery_systems.py holds both ways to the same event, id and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from backbone.domain import ids
from backbone.domain.construction import construct_from
from backbone.domain.models import (
    BillingResponse,
    BillingStatus,
    Event,
    InvoiceCandidate,
    PostingAck,
    PostingRequest,
    PostingStatus,
)
from backbone.domain.money import minor_units
from consumers.delivery.policy import Judgement, Verdict

INVOICE_ITEMS_PATH = "/v1/invoiceitems"
JOURNAL_LINES_PATH = "/v1/journal-lines"


@dataclass(frozen=True)
class Call:
    """One HTTP request to a system: path, JSON body and headers."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class System(Protocol):
    """A delivery target: the requests it takes and the acknowledgments its answers become."""

    name: str

    def wants(self, event: Event) -> bool: ...

    def call(self, event: Event) -> Call: ...

    def error_of(self, body: Any) -> tuple[str | None, str | None]: ...

    def acknowledgment(self, event: Event, judgement: Judgement, body: Any) -> Event: ...


def sequence_key(event: Event) -> str:
    """Records with one sequence key are delivered in order: a time entry's lines (a reversal after its original)."""
    return str(getattr(event, "time_entry_id", event.key))


def record_id(event: Event) -> str:
    """The id the system dedupes on (candidate or posting id)."""
    return str(getattr(event, "candidate_id", None) or getattr(event, "posting_id", None) or event.key)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """`amount` in integer minor units of `currency`; ValueError when that would round (it never should)."""
    scaled = amount.scaleb(minor_units(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} has more decimal places than {currency} allows")
    return int(scaled)


def _now() -> datetime:
    return datetime.now(UTC)


def _with_id(event: Event) -> Event:
    return event.model_copy(update={"event_id": ids.derive_event_id(event)})


E = TypeVar("E", bound=Event)


def acknowledge(model: type[E], values: dict[str, Any], answered: tuple[str, ...]) -> E:
    """The acknowledgment `model` holding `values` (every field but `event_id`), with its derived id.

    `answered` names the values that came from the system's answer: when each is None or a plain
    string, every value is one the model accepts as it is, so the event is constructed without
    validation and its id derived from the same values; otherwise the model validates them."""
    if all(values[name] is None or type(values[name]) is str for name in answered):
        # the id's payload is every field but event_id, as derive_event_id reads it from a validated event
        return construct_from(model, {"event_id": ids.event_id_from_payload(model.event_type, values), **values})
    return _with_id(model(**values))  # type: ignore[return-value]


class BillingEngine:
    """The Stripe-shaped billing engine: an invoice item per candidate, `Idempotency-Key` = candidate id."""

    name = "billing"

    def wants(self, event: Event) -> bool:
        return isinstance(event, InvoiceCandidate)

    def call(self, event: Event) -> Call:
        assert isinstance(event, InvoiceCandidate)
        metadata = {
            "candidate_id": event.candidate_id,
            "kind": str(event.kind),
            "time_entry_id": event.time_entry_id,
            "project_id": event.project_id,
            "work_date": event.work_date.isoformat(),
        }
        if event.replaces_candidate_id:
            metadata["replaces_candidate_id"] = event.replaces_candidate_id
        body: dict[str, Any] = {
            "customer": event.client_id,
            "amount": to_minor_units(event.amount, event.currency),
            "currency": event.currency.lower(),
            "description": f"{event.kind} {event.billable_minutes} min, {event.worker_id}, {event.work_date}",
            "metadata": metadata,
        }
        if event.tax_code is not None:
            body["tax_code"] = event.tax_code
        headers = {"Idempotency-Key": event.candidate_id, "X-Correlation-Id": event.correlation_id or ""}
        return Call(INVOICE_ITEMS_PATH, body, headers)

    def error_of(self, body: Any) -> tuple[str | None, str | None]:
        """Stripe's error object: `{"error": {"type", "code", "message"}}`."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return None, None
        return error.get("code") or error.get("type"), error.get("message")

    def acknowledgment(self, event: Event, judgement: Judgement, body: Any) -> Event:
        assert isinstance(event, InvoiceCandidate)
        accepted = judgement.verdict is Verdict.ACCEPTED
        invoice = body.get("invoice") if accepted and isinstance(body, dict) else None
        values = {
            "occurred_at": _now(),
            "source_system": "billing-engine",
            "correlation_id": event.correlation_id,
            "candidate_id": event.candidate_id,
            "status": BillingStatus.ACCEPTED if accepted else BillingStatus.REJECTED,
            "invoice_id": invoice,
            "reason_code": None if accepted else judgement.code,
            "message": None if accepted else (judgement.message or "")[:1000],
            "project_id": event.project_id,
            "amount": event.amount,
            "currency": event.currency,
            "time_entry_id": event.time_entry_id,
        }
        return acknowledge(BillingResponse, values, ("invoice_id", "reason_code", "message"))


class Erp:
    """One named ERP: a journal line per posting request routed to it, `externalId` = posting id."""

    def __init__(self, target: str) -> None:
        self.name = target

    def wants(self, event: Event) -> bool:
        return isinstance(event, PostingRequest) and event.erp_target == self.name

    def call(self, event: Event) -> Call:
        assert isinstance(event, PostingRequest)
        places = Decimal(1).scaleb(-minor_units(event.currency))
        body: dict[str, Any] = {
            "externalId": event.posting_id,
            "type": str(event.posting_type),
            "project": event.project_id,
            "worker": event.worker_id,
            "tranDate": event.work_date.isoformat(),
            "amount": str(event.amount.quantize(places)),
            "currency": event.currency,
            "memo": f"time entry {event.time_entry_id} revision {event.revision}",
        }
        if event.reverses_posting_id:
            body["reversesExternalId"] = event.reverses_posting_id
        return Call(JOURNAL_LINES_PATH, body, {"X-Correlation-Id": event.correlation_id or ""})

    def error_of(self, body: Any) -> tuple[str | None, str | None]:
        """NetSuite's error shape: a top-level `code` and `title`, or `o:errorDetails[0]`."""
        if not isinstance(body, dict):
            return None, None
        details = body.get("o:errorDetails") or [{}]
        first = details[0] if isinstance(details, list) and details and isinstance(details[0], dict) else {}
        return body.get("code") or first.get("o:errorCode"), body.get("title") or first.get("detail")

    def acknowledgment(self, event: Event, judgement: Judgement, body: Any) -> Event:
        assert isinstance(event, PostingRequest)
        posted = judgement.verdict is Verdict.ACCEPTED
        document = body.get("id") if posted and isinstance(body, dict) else None
        values = {
            "occurred_at": _now(),
            "source_system": self.name,
            "correlation_id": event.correlation_id,
            "posting_id": event.posting_id,
            "erp_target": self.name,
            "status": PostingStatus.POSTED if posted else PostingStatus.REJECTED,
            "erp_document_id": None if document is None else str(document),
            "error_code": None if posted else judgement.code,
            "error_message": None if posted else (judgement.message or "")[:1000],
            "project_id": event.project_id,
            "amount": event.amount,
            "currency": event.currency,
        }
        return acknowledge(PostingAck, values, ("erp_document_id", "error_code", "error_message"))
