"""POSTING_REJECTED and BILLING_REJECTED: open on a rejection, resolve on a later acceptance."""

from datetime import UTC, datetime

import pytest

from backbone.domain.feedback import billing_feedback, posting_feedback
from backbone.domain.models import BillingResponse, ExceptionKind, ExceptionStatus, PostingAck, SubjectType

T = datetime(2026, 11, 2, tzinfo=UTC)


def ack(status: str) -> PostingAck:
    return PostingAck(
        occurred_at=T,
        source_system="erp-sim",
        posting_id="PO1",
        erp_target="legacy-erp",
        status=status,
        error_code="E42" if status == "REJECTED" else None,
        correlation_id="E1",
    )


def response(status: str) -> BillingResponse:
    return BillingResponse(occurred_at=T, source_system="billing-sim", candidate_id="CA1", status=status)


@pytest.mark.parametrize(
    ("decide", "answers", "statuses"),
    [
        pytest.param(posting_feedback, [ack("POSTED")], [], id="posted-raises-nothing"),
        pytest.param(posting_feedback, [ack("REJECTED")], ["OPEN"], id="rejected-posting-opens"),
        pytest.param(posting_feedback, [ack("REJECTED"), ack("REJECTED")], ["OPEN"], id="repeated-rejection-once"),
        pytest.param(
            posting_feedback,
            [ack("REJECTED"), ack("POSTED")],
            ["OPEN", "RESOLVED"],
            id="posted-after-rejection-resolves",
        ),
        pytest.param(
            billing_feedback,
            [response("REJECTED"), response("ACCEPTED")],
            ["OPEN", "RESOLVED"],
            id="accepted-after-rejection-resolves",
        ),
    ],
)
def test_rejections_open_and_acceptances_resolve(decide, answers, statuses) -> None:
    opened, emitted = None, []
    for answer in answers:
        opened, out = decide(opened, answer)
        emitted += out
    assert [e.status for e in emitted] == [ExceptionStatus(s) for s in statuses]


def test_rejection_exception_names_its_subject_and_owner() -> None:
    _, [posting] = posting_feedback(None, ack("REJECTED"))
    assert (posting.kind, posting.subject_type, posting.subject_id, posting.correlation_id) == (
        ExceptionKind.POSTING_REJECTED,
        SubjectType.POSTING,
        "PO1",
        "E1",
    )
    _, [billing] = billing_feedback(None, response("REJECTED"))
    assert (billing.kind, billing.subject_type, billing.subject_id) == (
        ExceptionKind.BILLING_REJECTED,
        SubjectType.CANDIDATE,
        "CA1",
    )
