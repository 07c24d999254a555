"""Time the source already invoiced (billing-rules.md §2 step 4): never billed again, never lost.

An approved billable entry whose revision says `invoiced_at_source` gets no invoice candidate and no
REVENUE posting; its cost is still posted, it is reported once as an `INVOICED_AT_SOURCE` exception that
is RESOLVED from the start (nobody has to act) with nothing at risk, and when the source takes the
invoice back (a later revision without it) the entry is billed as any other.
"""

from decimal import Decimal

from domain_builders import ROUTING, approval, contract, entry, master_data

from backbone.domain.billing import net_billed
from backbone.domain.models import (
    BusinessException,
    CandidateKind,
    ExceptionKind,
    ExceptionStatus,
    InvoiceCandidate,
    Owner,
    PostingRequest,
    PostingType,
)
from backbone.domain.pipeline import BillingPipeline

D = Decimal


def run(*events):
    pipeline = BillingPipeline(ROUTING)
    outputs = []
    for event in events:
        outputs += pipeline.handle(event)
    return pipeline, outputs


def of_type(outputs, cls):
    return [e for e in outputs if isinstance(e, cls)]


def invoiced(**kw):
    return entry(invoiced_at_source=True, source_invoice_id="INV-7", **kw)


def test_an_entry_the_source_invoiced_is_not_billed_but_its_cost_is_posted() -> None:
    _, out = run(*master_data(), invoiced(), approval())
    assert of_type(out, InvoiceCandidate) == []
    assert [p.posting_type for p in of_type(out, PostingRequest)] == [PostingType.COST]
    assert of_type(out, PostingRequest)[0].amount == D("60.00")


def test_it_is_reported_once_as_already_invoiced_resolved_and_with_nothing_at_risk() -> None:
    _, out = run(*master_data(), invoiced(), approval())
    [report] = of_type(out, BusinessException)
    assert (report.kind, report.status, report.owner) == (
        ExceptionKind.INVOICED_AT_SOURCE,
        ExceptionStatus.RESOLVED,
        Owner.FINANCE_OPS,
    )
    assert report.amount_at_risk is None and report.currency is None
    assert (report.subject_id, report.project_id) == ("E1", "P1")
    assert "INV-7" in report.details and report.resolved_at == report.opened_at


def test_re_pricing_the_project_reports_it_no_second_time() -> None:
    # a contract amendment re-settles every entry of the project
    _, out = run(*master_data(), invoiced(), approval(), contract(version=2, default_hourly_rate=D("200")))
    assert len(of_type(out, BusinessException)) == 1
    assert of_type(out, InvoiceCandidate) == []


def test_what_backbone_billed_before_the_source_invoiced_it_is_reversed() -> None:
    _, out = run(*master_data(), entry(), approval(), invoiced(revision=2), approval(revision=2))
    assert [(c.kind, c.amount) for c in of_type(out, InvoiceCandidate)] == [
        (CandidateKind.TIME, D("150.00")),
        (CandidateKind.REVERSAL, D("-150.00")),
    ]
    assert net_billed(out) == {"E1": D("0.00")}


def test_an_invoice_taken_back_at_the_source_is_billed_here_without_a_second_report() -> None:
    _, out = run(
        *master_data(),
        invoiced(),
        approval(),
        entry(revision=2, invoiced_at_source=False),
        approval(revision=2),
    )
    assert [(c.kind, c.amount) for c in of_type(out, InvoiceCandidate)] == [(CandidateKind.TIME, D("150.00"))]
    assert [e.status for e in of_type(out, BusinessException)] == [ExceptionStatus.RESOLVED]


def test_not_invoiced_and_unknown_are_billed_as_before() -> None:
    for flag in (False, None):
        _, out = run(*master_data(), entry(invoiced_at_source=flag), approval())
        assert [(c.kind, c.amount) for c in of_type(out, InvoiceCandidate)] == [(CandidateKind.TIME, D("150.00"))]
        assert of_type(out, BusinessException) == []


def test_a_non_billable_entry_invoiced_at_the_source_is_not_reported() -> None:
    # nothing would have been billed anyway: there is nothing to keep from being billed twice
    _, out = run(*master_data(), invoiced(billable=False), approval())
    assert of_type(out, BusinessException) == [] and of_type(out, InvoiceCandidate) == []
