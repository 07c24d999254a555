"""Acknowledgments built without validation are the events the model builds: same values, id and bytes.

`systems.acknowledge` constructs an acknowledgment straight from its values when the parts the system
answered are plain strings, and derives its id from the same values. Each case here builds the same
acknowledgment the way the connector did before (the model validates it, then it is copied with the id
`derive_event_id` gives), and holds the two to equality, the same id, the same Avro body and the same
JSON. An answer part the model would refuse takes the model's way and is refused as before.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from backbone.domain import ids
from backbone.domain.models import (
    BillingResponse,
    BillingStatus,
    Event,
    InvoiceCandidate,
    PostingAck,
    PostingRequest,
    PostingStatus,
)
from backbone.kafka import wire
from consumers.delivery import systems
from consumers.delivery.policy import Judgement, Verdict
from consumers.delivery.systems import BillingEngine, Erp

AT = datetime(2026, 11, 2, 9, 30, 0, 123456, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systems, "_now", lambda: AT)


def candidate(**change: Any) -> InvoiceCandidate:
    fields: dict[str, Any] = {
        "occurred_at": datetime(2026, 11, 1, tzinfo=UTC),
        "source_system": "backbone",
        "correlation_id": "TE-1",
        "candidate_id": "cand-1",
        "kind": "TIME",
        "time_entry_id": "TE-1",
        "revision": 1,
        "project_id": "P-1",
        "client_id": "C-1",
        "worker_id": "W-1",
        "work_date": date(2026, 11, 3),
        "contract_id": "K-1",
        "contract_version": 1,
        "billable_minutes": 90,
        "hourly_rate": Decimal("150.00"),
        "discount_percent": Decimal("0"),
        "amount": Decimal("225.00"),
        "currency": "EUR",
        "tax_code": "VAT20",
    }
    return InvoiceCandidate(**(fields | change))


def posting(**change: Any) -> PostingRequest:
    fields: dict[str, Any] = {
        "occurred_at": datetime(2026, 11, 1, tzinfo=UTC),
        "source_system": "backbone",
        "correlation_id": "TE-1",
        "posting_id": "post-1",
        "posting_type": "COST",
        "time_entry_id": "TE-1",
        "revision": 1,
        "project_id": "P-1",
        "worker_id": "W-1",
        "work_date": date(2026, 11, 3),
        "amount": Decimal("82.9"),
        "currency": "JPY",
        "erp_target": "cloud-erp",
    }
    return PostingRequest(**(fields | change))


def billing_by_model(event: InvoiceCandidate, judgement: Judgement, body: Any) -> Event:
    """The billing engine's acknowledgment as the connector built it before: validated, then copied with its id."""
    accepted = judgement.verdict is Verdict.ACCEPTED
    validated = BillingResponse(
        occurred_at=AT,
        source_system="billing-engine",
        correlation_id=event.correlation_id,
        candidate_id=event.candidate_id,
        status=BillingStatus.ACCEPTED if accepted else BillingStatus.REJECTED,
        invoice_id=body.get("invoice") if accepted and isinstance(body, dict) else None,
        reason_code=None if accepted else judgement.code,
        message=None if accepted else (judgement.message or "")[:1000],
        project_id=event.project_id,
        amount=event.amount,
        currency=event.currency,
        time_entry_id=event.time_entry_id,
    )
    return validated.model_copy(update={"event_id": ids.derive_event_id(validated)})


def erp_by_model(event: PostingRequest, judgement: Judgement, body: Any) -> Event:
    """An ERP's acknowledgment as the connector built it before."""
    posted = judgement.verdict is Verdict.ACCEPTED
    document = body.get("id") if posted and isinstance(body, dict) else None
    validated = PostingAck(
        occurred_at=AT,
        source_system=event.erp_target,
        correlation_id=event.correlation_id,
        posting_id=event.posting_id,
        erp_target=event.erp_target,
        status=PostingStatus.POSTED if posted else PostingStatus.REJECTED,
        erp_document_id=None if document is None else str(document),
        error_code=None if posted else judgement.code,
        error_message=None if posted else (judgement.message or "")[:1000],
        project_id=event.project_id,
        amount=event.amount,
        currency=event.currency,
    )
    return validated.model_copy(update={"event_id": ids.derive_event_id(validated)})


REFUSED = Judgement(Verdict.REJECTED, "tax_code_missing", "a line needs a tax_code")
BILLING_CASES = [
    pytest.param(candidate(), Judgement(Verdict.ACCEPTED), {"invoice": "in_1"}, id="accepted-with-invoice"),
    pytest.param(candidate(), Judgement(Verdict.ACCEPTED), {"id": "ii_1"}, id="accepted-without-invoice"),
    pytest.param(candidate(), Judgement(Verdict.ACCEPTED), None, id="accepted-body-not-json"),
    pytest.param(candidate(), REFUSED, None, id="refused-with-code"),
    pytest.param(candidate(), Judgement(Verdict.REJECTED, "HTTP_400", None), None, id="refused-without-message"),
    pytest.param(
        candidate(), Judgement(Verdict.REJECTED, "x", "é" * 1500), None, id="refused-long-unicode-message-cut"
    ),
    pytest.param(
        candidate(correlation_id=None, tax_code=None, amount=Decimal("-0.0100"), kind="REVERSAL"),
        REFUSED,
        None,
        id="no-correlation-negative-amount",
    ),
]
ERP_CASES = [
    pytest.param(posting(), Judgement(Verdict.ACCEPTED), {"id": 42}, id="posted-numeric-document"),
    pytest.param(posting(), Judgement(Verdict.ACCEPTED), {"id": "JE-9"}, id="posted-text-document"),
    pytest.param(posting(), Judgement(Verdict.REJECTED, "PERIOD_CLOSED", "closed"), {}, id="refused"),
]


def same_event(fast: Event, slow: Event) -> None:
    assert fast == slow
    assert fast.event_id == slow.event_id == ids.derive_event_id(fast)
    assert fast.__dict__ == slow.__dict__ and list(fast.__dict__) == list(slow.__dict__)
    write = wire.body_writer(type(fast))
    assert write(fast.__dict__) == write(slow.__dict__)
    assert fast.model_dump_json() == slow.model_dump_json()
    assert type(fast).model_validate(fast.model_dump()) == fast  # the model accepts every value as it is


@pytest.mark.parametrize(("event", "judgement", "body"), BILLING_CASES)
def test_a_billing_acknowledgment_is_the_event_the_model_builds(
    event: InvoiceCandidate, judgement: Judgement, body: Any
) -> None:
    same_event(BillingEngine().acknowledgment(event, judgement, body), billing_by_model(event, judgement, body))


@pytest.mark.parametrize(("event", "judgement", "body"), ERP_CASES)
def test_an_erp_acknowledgment_is_the_event_the_model_builds(
    event: PostingRequest, judgement: Judgement, body: Any
) -> None:
    same_event(Erp("cloud-erp").acknowledgment(event, judgement, body), erp_by_model(event, judgement, body))


@pytest.mark.parametrize(
    ("judgement", "body"),
    [
        pytest.param(Judgement(Verdict.ACCEPTED), {"invoice": 17}, id="invoice-id-a-number"),
        pytest.param(Judgement(Verdict.REJECTED, 402, "x"), None, id="code-a-number"),  # type: ignore[arg-type]
    ],
)
def test_an_answer_the_model_would_refuse_is_refused_by_the_model(judgement: Judgement, body: Any) -> None:
    with pytest.raises(ValidationError):
        billing_by_model(candidate(), judgement, body)
    with pytest.raises(ValidationError):
        BillingEngine().acknowledgment(candidate(), judgement, body)
