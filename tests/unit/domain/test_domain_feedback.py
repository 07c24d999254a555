"""POSTING_REJECTED and BILLING_REJECTED: open on a rejection, resolve on a later acceptance."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from backbone.domain.feedback import billing_feedback, posting_feedback, refusal_of
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


def test_a_rejection_puts_the_refused_amount_at_risk_and_names_the_project() -> None:
    refused = BillingResponse(
        occurred_at=T,
        source_system="billing-sim",
        candidate_id="CA1",
        status="REJECTED",
        project_id="P1",
        amount=Decimal("123.4500"),
        currency="EUR",
    )
    _, [opened] = billing_feedback(None, refused)
    assert (opened.amount_at_risk, opened.currency, opened.project_id) == (Decimal("123.4500"), "EUR", "P1")
    rejected_posting = ack("REJECTED").model_copy(
        update={"project_id": "P2", "amount": Decimal("-80"), "currency": "JPY"}
    )
    _, [posting] = posting_feedback(None, rejected_posting)
    assert (posting.amount_at_risk, posting.currency, posting.project_id) == (Decimal("-80"), "JPY", "P2")


def test_an_answer_from_a_connector_that_does_not_say_the_amount_leaves_it_unknown() -> None:
    _, [opened] = billing_feedback(None, response("REJECTED"))
    assert (opened.amount_at_risk, opened.currency, opened.project_id) == (None, None, None)


def _line_response(status: str, **kw) -> BillingResponse:
    line = {"project_id": "P1", "time_entry_id": "E1", "amount": Decimal("150.00"), "currency": "EUR"}
    return BillingResponse(
        occurred_at=T, source_system="billing-engine", candidate_id="CA1", status=status, **(line | kw)
    )


@pytest.mark.parametrize(
    ("was_open", "answer", "told"),
    [
        pytest.param(None, _line_response("REJECTED"), True, id="a-first-refusal-goes-to-the-book"),
        pytest.param(T, _line_response("REJECTED"), False, id="a-repeated-refusal-does-not"),
        pytest.param(None, _line_response("ACCEPTED"), False, id="an-acceptance-does-not"),
        pytest.param(None, _line_response("REJECTED", time_entry_id=None), False, id="an-older-connector-cannot"),
    ],
)
def test_the_book_learns_each_refusal_once(was_open, answer, told) -> None:
    refusal = refusal_of(was_open, answer)
    assert (refusal is not None) == told
    if refusal is not None:
        assert (refusal.candidate_id, refusal.time_entry_id, refusal.project_id, refusal.refused_at) == (
            "CA1",
            "E1",
            "P1",
            T,
        )
        # the book resolves with the opened_at of the exception the feedback stage opens
        _, [opened] = billing_feedback(was_open, answer)
        assert opened.opened_at == refusal.refused_at
