"""Business exceptions from what the ERP and the billing engine answer (POSTING_REJECTED, BILLING_REJECTED),
or fail to answer in time (POSTING_ACK_TIMEOUT), and the refusals the project books must learn.

A rejection opens an exception about the posting or candidate; a later acceptance of the same id (after
someone fixed the cause and the request was re-driven) resolves it. The only state is when the
exception was opened, kept by the caller per posting or candidate id.

A candidate the billing engine refuses is also a `Refusal` for the book that emitted it: the engine does
not hold the line, so the book must not count it as billed (`billing.refuse`), and it resolves the
BILLING_REJECTED itself when it bills the entry again under changed terms (docs/delivery.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from backbone.domain import ids
from backbone.domain.models import (
    BillingResponse,
    BillingStatus,
    BusinessException,
    ExceptionKind,
    ExceptionStatus,
    Owner,
    PostingAck,
    PostingStatus,
    SubjectType,
)

Opened = datetime | None
"""When the rejection exception for one id was opened; None while nothing is open."""


def posting_feedback(opened: Opened, ack: PostingAck) -> tuple[Opened, list[BusinessException]]:
    """POSTING_REJECTED opens on a rejected ack and resolves when the same posting is later POSTED."""
    detail = f"{ack.erp_target} rejected posting {ack.posting_id}: {ack.error_code or '-'} {ack.error_message or ''}"
    return _feedback(
        opened,
        ack.status == PostingStatus.REJECTED,
        ack,
        ExceptionKind.POSTING_REJECTED,
        SubjectType.POSTING,
        ack.posting_id,
        detail.strip(),
    )


def billing_feedback(opened: Opened, response: BillingResponse) -> tuple[Opened, list[BusinessException]]:
    """BILLING_REJECTED opens on a rejected candidate and resolves when it is later ACCEPTED."""
    detail = (
        f"the billing engine rejected candidate {response.candidate_id}: "
        f"{response.reason_code or '-'} {response.message or ''}"
    )
    return _feedback(
        opened,
        response.status == BillingStatus.REJECTED,
        response,
        ExceptionKind.BILLING_REJECTED,
        SubjectType.CANDIDATE,
        response.candidate_id,
        detail.strip(),
    )


class Refusal(BaseModel):
    """The billing engine refused a line of a time entry: what the entry's project book must learn.

    A pydantic model, not state: it travels from the feedback stage to the books as JSON (`BookCommand`).
    """

    model_config = ConfigDict(frozen=True)

    candidate_id: str
    time_entry_id: str
    project_id: str
    refused_at: datetime
    """When BILLING_REJECTED opened; the book resolves the exception with the same `opened_at`."""


def refusal_of(was_open: Opened, response: BillingResponse) -> Refusal | None:
    """The refusal to hand to the books when this answer opens BILLING_REJECTED (once per candidate).

    None for an acceptance, for a rejection already open, and for answers from connectors that did not
    say which entry and project the line was for (the books could not find it; an operator re-drives).
    """
    if response.status != BillingStatus.REJECTED or was_open is not None:
        return None
    if response.time_entry_id is None or response.project_id is None:
        return None
    return Refusal(
        candidate_id=response.candidate_id,
        time_entry_id=response.time_entry_id,
        project_id=response.project_id,
        refused_at=response.occurred_at,
    )


def _feedback(
    opened: Opened,
    rejected: bool,
    answer: PostingAck | BillingResponse,
    kind: ExceptionKind,
    subject_type: SubjectType,
    subject_id: str,
    details: str,
) -> tuple[Opened, list[BusinessException]]:
    if rejected == (opened is not None):
        return opened, []  # already open, or nothing was ever open
    opened_at = opened or answer.occurred_at
    exception = BusinessException(
        occurred_at=answer.occurred_at,
        source_system="backbone",
        correlation_id=answer.correlation_id,
        exception_id=ids.exception_id(kind=kind, subject_type=subject_type, subject_id=subject_id),
        kind=kind,
        status=ExceptionStatus.OPEN if rejected else ExceptionStatus.RESOLVED,
        subject_type=subject_type,
        subject_id=subject_id,
        project_id=answer.project_id,
        owner=Owner.FINANCE_OPS,
        amount_at_risk=answer.amount,  # what the system refused to hold; None from connectors that do not say
        currency=answer.currency,
        details=details,
        opened_at=opened_at,
        resolved_at=None if rejected else answer.occurred_at,
    )
    exception = exception.model_copy(update={"event_id": ids.derive_event_id(exception)})
    return (opened_at if rejected else None), [exception]


def ack_timeout(posting: PendingPosting, *, at: datetime, resolved: bool) -> BusinessException:
    """POSTING_ACK_TIMEOUT about a posting: OPEN when no acknowledgment came in time, RESOLVED when one came.

    The amount at risk is the posting's amount: money the ERP may not hold. Raised by the ERP connector,
    which holds every posting it has not acknowledged yet (docs/delivery.md says why there).
    """
    waited = f"{posting.timeout_s:g} s"
    details = (
        f"{posting.erp_target} acknowledged posting {posting.posting_id} late (after more than {waited})"
        if resolved
        else f"no acknowledgment from {posting.erp_target} for posting {posting.posting_id} after {waited}"
    )
    exception = BusinessException(
        occurred_at=at,
        source_system="backbone",
        correlation_id=posting.correlation_id,
        exception_id=ids.exception_id(
            kind=ExceptionKind.POSTING_ACK_TIMEOUT, subject_type=SubjectType.POSTING, subject_id=posting.posting_id
        ),
        kind=ExceptionKind.POSTING_ACK_TIMEOUT,
        status=ExceptionStatus.RESOLVED if resolved else ExceptionStatus.OPEN,
        subject_type=SubjectType.POSTING,
        subject_id=posting.posting_id,
        project_id=posting.project_id,
        owner=Owner.FINANCE_OPS,
        amount_at_risk=posting.amount,
        currency=posting.currency,
        details=details,
        opened_at=posting.raised_at or at,
        resolved_at=at if resolved else None,
    )
    return exception.model_copy(update={"event_id": ids.derive_event_id(exception)})


@dataclass(frozen=True)
class PendingPosting:
    """A posting request a connector has seen and not acknowledged yet, and whether its timeout was raised."""

    posting_id: str
    erp_target: str
    project_id: str
    amount: Decimal
    currency: str
    correlation_id: str | None
    requested_at: datetime
    timeout_s: float
    raised_at: datetime | None = None
