"""A line the billing engine refuses (docs/delivery.md, "A line the billing engine refuses").

The engine's refusal means it does not hold the line, so the book takes it back (its REVENUE posting is
reversed, nothing goes to the engine), waits while the entry would only get the same line again, and
bills the entry again under corrected terms with a new candidate id, resolving BILLING_REJECTED and
naming the replacement. Each case runs the core's dispatch in memory (`BillingPipeline`) against a small
engine that refuses every line without a usable tax code, as the billing simulator does.
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from domain_builders import ROUTING, approval, client, contract, entry, project, reject, worker

from backbone.domain import billing
from backbone.domain.feedback import Refusal
from backbone.domain.models import (
    BillingResponse,
    BillingStatus,
    BusinessException,
    CandidateKind,
    Event,
    ExceptionKind,
    ExceptionStatus,
    InvoiceCandidate,
    PostingRequest,
    PostingType,
)
from backbone.domain.pipeline import BillingPipeline

D = Decimal
BLANK = " "
"""A tax code the core cannot tell from a real one (it is not empty) and the engine refuses as missing."""
ANSWERED_AT = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)


class Engine:
    """Holds what it accepts; refuses a line whose tax code is missing or blank, like the billing simulator."""

    def __init__(self) -> None:
        self.held: dict[str, InvoiceCandidate] = {}
        self.answered: set[str] = set()
        self.clock = ANSWERED_AT

    def answer(self, candidate: InvoiceCandidate) -> BillingResponse:
        self.answered.add(candidate.candidate_id)
        self.clock += timedelta(seconds=1)
        accepted = bool((candidate.tax_code or "").strip())
        if accepted:
            self.held[candidate.candidate_id] = candidate
        return BillingResponse(
            occurred_at=self.clock,
            source_system="billing-engine",
            correlation_id=candidate.correlation_id,
            candidate_id=candidate.candidate_id,
            status=BillingStatus.ACCEPTED if accepted else BillingStatus.REJECTED,
            reason_code=None if accepted else "tax_code_missing",
            project_id=candidate.project_id,
            amount=candidate.amount,
            currency=candidate.currency,
            time_entry_id=candidate.time_entry_id,
        )

    def holds(self, time_entry_id: str = "E1") -> tuple[Decimal, int]:
        """The entry's amount and minutes on the engine's invoices."""
        lines = [c for c in self.held.values() if c.time_entry_id == time_entry_id]
        return sum((c.amount for c in lines), D(0)), sum(c.billable_minutes for c in lines)


class Run:
    """The pipeline, the engine, and everything emitted; `deliver` answers every candidate not answered yet."""

    def __init__(self) -> None:
        self.pipeline = BillingPipeline(ROUTING)
        self.engine = Engine()
        self.out: list[Event] = []

    def feed(self, *events: Event) -> list[Event]:
        new: list[Event] = []
        for event in events:
            new += self.pipeline.handle(event)
        for output in new:  # the core builds outputs without validation: each must still be valid
            assert type(output).model_validate(output.model_dump()) == output
        self.out += new
        return new

    def deliver(self) -> list[Event]:
        """The connector's loop: every unanswered candidate to the engine, its answer back to the topology."""
        new: list[Event] = []
        while pending := [c for c in self.candidates() if c.candidate_id not in self.engine.answered]:
            for candidate in pending:
                new += self.feed(self.engine.answer(candidate))
        return new

    def candidates(self) -> list[InvoiceCandidate]:
        return [e for e in self.out if isinstance(e, InvoiceCandidate)]

    def revenue(self) -> Decimal:
        return sum(
            (e.amount for e in self.out if isinstance(e, PostingRequest) and e.posting_type == PostingType.REVENUE),
            D(0),
        )

    def rejections(self) -> list[BusinessException]:
        return [e for e in self.out if isinstance(e, BusinessException) and e.kind == ExceptionKind.BILLING_REJECTED]


def refused_then(*later: Event, tax_code: str = BLANK) -> Run:
    """E1 (60 min at 150/h = 150.00) approved under K1 v1 with `tax_code`, delivered, then `later`."""
    run = Run()
    run.feed(client(), project(), worker(), contract(tax_code=tax_code), entry(), approval())
    run.deliver()
    run.feed(*later)
    run.deliver()
    return run


def test_a_refused_line_is_not_billed_its_revenue_goes_back_and_billing_rejected_opens() -> None:
    run = refused_then()
    [refused] = run.candidates()
    [opened] = run.rejections()
    assert (opened.status, opened.subject_id, opened.amount_at_risk) == (
        ExceptionStatus.OPEN,
        refused.candidate_id,
        D("150.00"),
    )
    assert run.engine.holds() == (0, 0)
    assert run.revenue() == 0  # +150.00 with the line, -150.00 when the engine refused it
    assert run.pipeline.books["P1"].ledgers["E1"].billed == 0


def test_correcting_the_contract_bills_the_entry_again_under_a_new_id_and_resolves_the_refusal() -> None:
    run = refused_then(contract(tax_code="VAT20"))  # the same version, corrected
    refused, again = run.candidates()
    assert (again.kind, again.amount, again.tax_code) == (CandidateKind.TIME, D("150.00"), "VAT20")
    assert again.candidate_id != refused.candidate_id
    assert again.replaces_candidate_id is None  # the engine holds nothing else of this entry
    opened, resolved = run.rejections()
    assert resolved.status == ExceptionStatus.RESOLVED
    assert (resolved.exception_id, resolved.opened_at) == (opened.exception_id, opened.opened_at)
    assert again.candidate_id in resolved.details
    assert run.engine.holds() == (D("150.00"), 60)
    assert run.revenue() == D("150.00")


def test_a_new_contract_version_with_a_tax_code_bills_the_entry_again_too() -> None:
    run = refused_then(contract(version=2, tax_code="VAT20", default_hourly_rate=D("180.00")))
    assert [(c.contract_version, c.amount) for c in run.candidates()] == [(1, D("150.00")), (2, D("180.00"))]
    assert [e.status for e in run.rejections()] == [ExceptionStatus.OPEN, ExceptionStatus.RESOLVED]
    assert run.engine.holds() == (D("180.00"), 60)
    assert run.revenue() == D("180.00")


def test_the_engine_is_not_sent_the_line_it_refused_again_while_the_terms_are_unchanged() -> None:
    run = refused_then(project(), worker(), contract(tax_code=BLANK, rate_card=()))
    assert len(run.candidates()) == 1
    assert [e.status for e in run.rejections()] == [ExceptionStatus.OPEN]


def test_a_refused_line_is_never_reversed_at_the_engine() -> None:
    run = refused_then(reject())
    assert [c.kind for c in run.candidates()] == [CandidateKind.TIME]  # no REVERSAL of what the engine never held
    assert run.engine.holds() == (0, 0)
    assert run.revenue() == 0
    _, resolved = run.rejections()
    assert resolved.status == ExceptionStatus.RESOLVED and "nothing is left to bill" in resolved.details


def test_a_correction_that_overtakes_the_refusal_bills_again_as_soon_as_the_refusal_arrives() -> None:
    run = Run()
    run.feed(client(), project(), worker(), contract(tax_code=BLANK), entry(), approval())
    assert run.feed(contract(tax_code="VAT20")) == []  # same amount: nothing to bill while the line is held
    run.deliver()
    refused, again = run.candidates()
    assert again.tax_code == "VAT20" and again.candidate_id != refused.candidate_id
    assert [e.status for e in run.rejections()] == [ExceptionStatus.OPEN, ExceptionStatus.RESOLVED]
    assert run.engine.holds() == (D("150.00"), 60)


def test_a_refused_adjustment_is_taken_back_to_the_cent_and_the_minute() -> None:
    amended = entry(revision=2, duration_seconds=5400)  # 90 min: +75.00 on top of the accepted 150.00
    run = refused_then(
        contract(version=2, effective_from=date(2026, 11, 1), tax_code=BLANK),
        amended,
        approval(revision=2),
        tax_code="VAT20",
    )
    time, adjustment = run.candidates()
    assert (adjustment.kind, adjustment.amount, adjustment.billable_minutes) == (
        CandidateKind.ADJUSTMENT,
        D("75.00"),
        30,
    )
    assert run.engine.holds() == (D("150.00"), 60)  # the TIME line it accepted
    assert run.revenue() == D("150.00")
    run.feed(contract(version=2, effective_from=date(2026, 11, 1), tax_code="VAT20"))
    run.deliver()
    again = run.candidates()[-1]
    assert (again.kind, again.amount, again.billable_minutes) == (CandidateKind.ADJUSTMENT, D("75.00"), 30)
    assert again.replaces_candidate_id == time.candidate_id
    assert run.engine.holds() == (D("225.00"), 90)
    assert run.revenue() == D("225.00")


def test_a_repeated_refusal_or_one_for_a_candidate_the_book_never_emitted_changes_nothing() -> None:
    run = refused_then()
    [refused] = run.candidates()
    book = run.pipeline.books["P1"]
    context = billing.Context(reference=run.pipeline.reference, routing=ROUTING, at=ANSWERED_AT)
    for candidate_id, entry_id in ((refused.candidate_id, "E1"), ("someone-elses", "E1"), (refused.candidate_id, "E9")):
        refusal = Refusal(candidate_id=candidate_id, time_entry_id=entry_id, project_id="P1", refused_at=ANSWERED_AT)
        settled = billing.refuse(book, refusal, context)
        assert (settled.events, settled.changed) == ((), ())
    assert book.ledgers["E1"].billed == 0


def test_replaying_the_same_history_repeats_every_id() -> None:
    inputs = [client(), project(), worker(), contract(tax_code=BLANK), entry(), approval()]
    correction = contract(tax_code="VAT20")

    def history() -> list[str | None]:
        run = Run()
        run.feed(*inputs)
        run.deliver()
        run.feed(correction)
        run.deliver()
        return [getattr(e, "candidate_id", None) or getattr(e, "posting_id", None) or e.event_id for e in run.out]

    first = history()
    assert history() == first and len(set(first)) == len(first)
