"""The delivery connectors' rules without a network: which answers are retried, rejected or accepted,
how long to wait, when the circuit opens and closes, and what each system is sent and answers become."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from email.utils import format_datetime

import pytest
from tenacity import RetryCallState, wait_fixed

from backbone.domain.feedback import PendingPosting, ack_timeout
from backbone.domain.models import (
    BillingStatus,
    ExceptionStatus,
    InvoiceCandidate,
    PostingRequest,
    PostingStatus,
)
from consumers.delivery.policy import (
    BreakerOpen,
    BreakerState,
    CircuitBreaker,
    Judgement,
    RetryAfterOrBackoff,
    TransientFailure,
    Verdict,
    classify,
    parse_retry_after,
)
from consumers.delivery.systems import BillingEngine, Erp, sequence_key, to_minor_units
from consumers.delivery.worker import PendingCodec

AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        pytest.param(200, None, Verdict.ACCEPTED, id="2xx-accepted"),
        pytest.param(201, None, Verdict.ACCEPTED, id="created-accepted"),
        pytest.param(500, "server_error", Verdict.TRANSIENT, id="5xx-retried"),
        pytest.param(503, None, Verdict.TRANSIENT, id="unavailable-retried"),
        pytest.param(429, "rate_limit", Verdict.TRANSIENT, id="throttled-retried"),
        pytest.param(408, None, Verdict.TRANSIENT, id="request-timeout-retried"),
        pytest.param(409, "idempotency_key_in_use", Verdict.TRANSIENT, id="key-in-use-retried"),
        pytest.param(400, "tax_code_missing", Verdict.REJECTED, id="validation-rejected"),
        pytest.param(422, "PERIOD_CLOSED", Verdict.REJECTED, id="business-rule-rejected"),
        pytest.param(409, "EXTERNAL_ID_CONFLICT", Verdict.REJECTED, id="conflict-rejected"),
        pytest.param(400, "idempotency_error", Verdict.REJECTED, id="key-mismatch-rejected"),
    ],
)
def test_answers_are_accepted_retried_or_rejected(status: int, code: str | None, verdict: Verdict) -> None:
    assert classify(status, code, "msg", None).verdict is verdict


def test_a_rejection_keeps_the_systems_code_and_reason_and_invents_one_when_there_is_none() -> None:
    assert classify(422, "PERIOD_CLOSED", "the period 2026-10 is closed", None) == Judgement(
        Verdict.REJECTED, "PERIOD_CLOSED", "the period 2026-10 is closed"
    )
    assert classify(404, None, None, None).code == "HTTP_404"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0", 0.0), (None, None), ("", None), ("soon", None)],
    ids=["seconds", "zero", "absent", "empty", "garbage"],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    now = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    header = format_datetime(datetime(2026, 11, 2, 9, 30, 7, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(header, now=lambda: now.timestamp()) == pytest.approx(7.0)


def _state_failed_with(error: BaseException) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.set_exception((type(error), error, None))
    return state


def test_the_wait_honours_retry_after_up_to_its_cap_and_else_backs_off() -> None:
    wait = RetryAfterOrBackoff(wait_fixed(0.25), cap=5.0)
    assert wait(_state_failed_with(TransientFailure("429", retry_after=2.0))) == 2.0
    assert wait(_state_failed_with(TransientFailure("429", retry_after=60.0))) == 5.0
    assert wait(_state_failed_with(TransientFailure("500"))) == 0.25


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, moves: list[tuple[BreakerState, BreakerState]] | None = None) -> CircuitBreaker:
    on_change = (lambda old, new: moves.append((old, new))) if moves is not None else None
    return CircuitBreaker("billing", failure_threshold=3, reset_timeout=5.0, clock=clock, on_change=on_change)


def test_the_circuit_opens_after_repeated_system_failures_and_refuses_calls() -> None:
    clock, moves = Clock(), []
    breaker = _breaker(clock, moves)
    for _ in range(3):
        assert asyncio.run(breaker.enter()) is False
        breaker.failed("same-record", systemic=True)
    assert breaker.state is BreakerState.OPEN and moves == [(BreakerState.CLOSED, BreakerState.OPEN)]
    with pytest.raises(BreakerOpen):
        asyncio.run(breaker.enter())


def test_one_records_own_500s_never_open_the_circuit_but_two_records_do() -> None:
    breaker = _breaker(Clock())
    for _ in range(10):
        breaker.failed("poisoned", systemic=False)
    assert breaker.state is BreakerState.CLOSED
    breaker.failed("another", systemic=False)
    assert breaker.state is BreakerState.OPEN


def test_a_success_resets_the_count_of_failures() -> None:
    breaker = _breaker(Clock())
    breaker.failed("a")
    breaker.failed("b")
    breaker.succeeded()
    breaker.failed("c")
    assert breaker.state is BreakerState.CLOSED


def test_after_its_reset_timeout_one_probe_goes_through_and_its_success_closes_the_circuit() -> None:
    clock, moves = Clock(), []
    breaker = _breaker(clock, moves)
    for record in "abc":
        breaker.failed(record)
    clock.now = 5.0

    async def probe_then_others() -> list[bool]:
        probe = await breaker.enter()
        waiting = [asyncio.ensure_future(breaker.enter()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(task.done() for task in waiting), "others wait for the probe"
        breaker.succeeded()
        return [probe, *await asyncio.gather(*waiting)]

    assert asyncio.run(probe_then_others()) == [True, False, False, False]
    assert breaker.state is BreakerState.CLOSED
    assert [new for _, new in moves] == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_probe_opens_the_circuit_again_for_everyone_waiting_on_it() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for record in "abc":
        breaker.failed(record)
    clock.now = 5.0

    async def failing_probe() -> BaseException | None:
        assert await breaker.enter() is True
        waiter = asyncio.ensure_future(breaker.enter())
        await asyncio.sleep(0)
        breaker.failed("probe")
        try:
            await waiter
        except BreakerOpen as refused:
            return refused
        return None

    assert isinstance(asyncio.run(failing_probe()), BreakerOpen)
    assert breaker.state is BreakerState.OPEN and breaker.retry_at == 10.0


# --- what the systems are sent, and what their answers become -------------------------------------------


def _candidate(**change: object) -> InvoiceCandidate:
    fields: dict[str, object] = {
        "occurred_at": AT,
        "source_system": "backbone",
        "correlation_id": "TE-1",
        "candidate_id": "cand-1",
        "kind": "REVERSAL",
        "time_entry_id": "TE-1",
        "revision": 2,
        "project_id": "P-1",
        "client_id": "C-1",
        "worker_id": "W-1",
        "work_date": date(2026, 11, 3),
        "contract_id": "K-1",
        "contract_version": 1,
        "billable_minutes": -90,
        "hourly_rate": Decimal("150.00"),
        "discount_percent": Decimal("0"),
        "amount": Decimal("-225.00"),
        "currency": "EUR",
        "tax_code": "VAT20",
        "replaces_candidate_id": "cand-0",
    }
    return InvoiceCandidate(**(fields | change))  # type: ignore[arg-type]


def _posting(**change: object) -> PostingRequest:
    fields: dict[str, object] = {
        "occurred_at": AT,
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
        "currency": "EUR",
        "erp_target": "cloud-erp",
        "reverses_posting_id": "post-0",
    }
    return PostingRequest(**(fields | change))  # type: ignore[arg-type]


def test_a_candidate_is_a_stripe_invoice_item_in_minor_units_keyed_by_its_id() -> None:
    call = BillingEngine().call(_candidate())
    assert call.path == "/v1/invoiceitems"
    assert call.headers["Idempotency-Key"] == "cand-1"
    assert call.body["amount"] == -22500 and call.body["currency"] == "eur" and call.body["customer"] == "C-1"
    assert call.body["metadata"]["work_date"] == "2026-11-03"
    assert call.body["metadata"]["replaces_candidate_id"] == "cand-0"


def test_a_candidate_without_a_tax_code_is_sent_without_one_for_the_engine_to_judge() -> None:
    assert "tax_code" not in BillingEngine().call(_candidate(tax_code=None)).body


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [(Decimal("12.34"), "EUR", 1234), (Decimal("1500"), "JPY", 1500), (Decimal("1.234"), "KWD", 1234)],
    ids=["cents", "yen-has-none", "fils-three-places"],
)
def test_minor_units_follow_iso_4217(amount: Decimal, currency: str, units: int) -> None:
    assert to_minor_units(amount, currency) == units


def test_an_amount_finer_than_its_currency_is_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="decimal places"):
        to_minor_units(Decimal("1.005"), "EUR")


def test_a_posting_is_a_journal_line_with_its_id_as_external_id_and_exact_decimal_amount() -> None:
    erp = Erp("cloud-erp")
    call = erp.call(_posting())
    assert call.body["externalId"] == "post-1" and call.body["amount"] == "82.90"
    assert call.body["reversesExternalId"] == "post-0" and call.body["type"] == "COST"
    assert erp.wants(_posting()) and not erp.wants(_posting(erp_target="legacy-erp"))


def test_answers_become_acknowledgments_with_the_systems_reason() -> None:
    engine, erp = BillingEngine(), Erp("cloud-erp")
    accepted = engine.acknowledgment(_candidate(), Judgement(Verdict.ACCEPTED), {"invoice": "in_1"})
    assert (accepted.status, accepted.invoice_id, accepted.key) == (BillingStatus.ACCEPTED, "in_1", "cand-1")
    refused = engine.acknowledgment(
        _candidate(), Judgement(Verdict.REJECTED, "tax_code_missing", "needs a tax_code"), None
    )
    assert (refused.status, refused.reason_code, refused.message) == (
        BillingStatus.REJECTED,
        "tax_code_missing",
        "needs a tax_code",
    )
    # the refusal names the line's entry and project, so the topology can tell the entry's book
    assert (refused.time_entry_id, refused.project_id) == ("TE-1", "P-1")
    posted = erp.acknowledgment(_posting(), Judgement(Verdict.ACCEPTED), {"id": 42})
    assert (posted.status, posted.erp_document_id, posted.erp_target) == (PostingStatus.POSTED, "42", "cloud-erp")
    assert accepted.event_id and posted.event_id


def test_error_bodies_of_each_system_give_their_code_and_message() -> None:
    stripe = {"error": {"type": "invalid_request_error", "code": "tax_code_missing", "message": "needs one"}}
    netsuite = {"code": "PERIOD_CLOSED", "title": "closed", "o:errorDetails": [{"o:errorCode": "PERIOD_CLOSED"}]}
    assert BillingEngine().error_of(stripe) == ("tax_code_missing", "needs one")
    assert Erp("x").error_of(netsuite) == ("PERIOD_CLOSED", "closed")
    assert BillingEngine().error_of("<html>bad gateway</html>") == (None, None)


def test_a_time_entrys_lines_share_one_sequence() -> None:
    assert sequence_key(_candidate()) == sequence_key(_posting()) == "TE-1"


def test_posting_ack_timeout_opens_with_the_amount_at_risk_and_resolves_under_the_same_id() -> None:
    pending = PendingPosting("post-1", "cloud-erp", "P-1", Decimal("82.90"), "EUR", "TE-1", AT, 300.0)
    raised = PendingPosting(**{**pending.__dict__, "raised_at": AT})
    opened = ack_timeout(raised, at=AT, resolved=False)
    resolved = ack_timeout(raised, at=datetime(2026, 11, 2, 10, tzinfo=UTC), resolved=True)
    assert opened.status == ExceptionStatus.OPEN and resolved.status == ExceptionStatus.RESOLVED
    assert opened.exception_id == resolved.exception_id and opened.event_id != resolved.event_id
    assert (opened.amount_at_risk, opened.currency, opened.project_id) == (Decimal("82.90"), "EUR", "P-1")
    assert resolved.opened_at == AT and resolved.resolved_at is not None
    assert PendingCodec().decode(PendingCodec().encode(raised)) == raised
