"""billing-rules.md §2, §5–§8 end to end over the pure core: what an entry's events turn into.

Each case feeds master data and entry events to `BillingPipeline` (the topology's dispatch, in memory)
and checks the candidates, postings and exceptions it returns.
"""

from datetime import date
from decimal import Decimal

import pytest
from domain_builders import ROUTING, approval, client, contract, entry, line, master_data, project, reject, worker

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
from backbone.domain.routing import RoutingRule, RoutingRules

D = Decimal


def run(*events, routing: RoutingRules = ROUTING):
    pipeline = BillingPipeline(routing)
    outputs = []
    for event in events:
        outputs += pipeline.handle(event)
    return pipeline, outputs


def candidates(outputs):
    return [e for e in outputs if isinstance(e, InvoiceCandidate)]


def postings(outputs, posting_type):
    return [e for e in outputs if isinstance(e, PostingRequest) and e.posting_type == posting_type]


def exceptions(outputs):
    return [e for e in outputs if isinstance(e, BusinessException)]


def lines(outputs):
    return [(c.kind, c.amount) for c in candidates(outputs)]


def net(outputs, posting_type=None):
    items = candidates(outputs) if posting_type is None else postings(outputs, posting_type)
    return sum((e.amount for e in items), D(0))


# --- §5 worked examples, end to end -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract_changes", "seconds", "amount", "minutes"),
    [
        pytest.param({}, 3725, "155.00", 62, id="worked-example-3725s-nearest-155.00"),
        pytest.param(
            {"rounding_increment_minutes": 15, "rounding_mode": "UP"},
            3725,
            "187.50",
            75,
            id="worked-example-3725s-up-15-187.50",
        ),
        pytest.param(
            {"rounding_increment_minutes": 15, "rounding_mode": "DOWN"},
            3725,
            "150.00",
            60,
            id="worked-example-3725s-down-15-150.00",
        ),
        pytest.param(
            {"currency": "JPY", "default_hourly_rate": D("12000"), "discount_percent": D("10")},
            5400,
            "16200",
            90,
            id="worked-example-jpy-16200",
        ),
        pytest.param(
            {"currency": "KWD", "default_hourly_rate": D("33.333")}, 600, "5.556", 10, id="worked-example-kwd-5.556"
        ),
    ],
)
def test_worked_examples_become_one_time_candidate(contract_changes, seconds, amount, minutes) -> None:
    _, out = run(
        client(), project(), worker(), contract(**contract_changes), entry(duration_seconds=seconds), approval()
    )
    [candidate] = candidates(out)
    assert (candidate.kind, candidate.amount, candidate.billable_minutes) == (CandidateKind.TIME, D(amount), minutes)
    [revenue] = postings(out, PostingType.REVENUE)
    assert revenue.amount == D(amount) and revenue.reverses_posting_id is None


def test_time_candidate_is_enriched_for_the_billing_engine() -> None:
    _, out = run(*master_data(), entry(task_id="T1", correlation_id="corr-1"), approval())
    [c] = candidates(out)
    assert (c.client_id, c.billing_entity, c.role, c.task_id, c.tax_code, c.currency) == (
        "C1",
        "ACME EU BV",
        "consultant",
        "T1",
        "VAT20",
        "EUR",
    )
    assert (c.contract_id, c.contract_version, c.hourly_rate, c.discount_percent) == ("K1", 1, D("150.00"), D("0"))
    assert c.correlation_id == "corr-1" and not c.capped and c.replaces_candidate_id is None
    assert all(e.correlation_id == "corr-1" for e in out)


def test_cost_posting_uses_the_workers_cost_rate_and_currency() -> None:
    _, out = run(
        client(),
        project(),
        worker(cost_rate=D("45.50"), cost_currency="GBP"),
        contract(),
        entry(duration_seconds=3689),
        approval(),
    )
    [cost] = postings(out, PostingType.COST)
    assert (cost.amount, cost.currency, cost.erp_target) == (D("46.26"), "GBP", "legacy-erp")


# --- §2 validation ------------------------------------------------------------------------------------

NO_TAX = contract(tax_code=None)
NO_RATE_CONTRACT = contract(default_hourly_rate=None, rate_card=(line("99", worker_id="W9"),))


@pytest.mark.parametrize(
    ("reference", "entry_changes", "kind", "owner", "candidate_count", "cost_count", "at_risk"),
    [
        pytest.param(
            [project(), contract()],
            {},
            ExceptionKind.UNKNOWN_WORKER,
            Owner.MASTER_DATA,
            0,
            0,
            None,
            id="1-unknown-worker-blocks-everything",
        ),
        pytest.param(
            [contract()],
            {},
            ExceptionKind.UNKNOWN_WORKER,
            Owner.MASTER_DATA,
            0,
            0,
            None,
            id="1-unknown-worker-is-checked-before-unknown-project",
        ),
        pytest.param(
            [worker(), contract()],
            {},
            ExceptionKind.UNKNOWN_PROJECT,
            Owner.MASTER_DATA,
            0,
            0,
            None,
            id="2-unknown-project-blocks-everything",
        ),
        pytest.param(
            [worker(), project(status="ON_HOLD"), contract()],
            {},
            ExceptionKind.PROJECT_NOT_ACTIVE,
            Owner.PMO,
            0,
            0,
            D("150.00"),
            id="3-project-on-hold-blocks-everything-with-estimate",
        ),
        pytest.param(
            [worker(), project(status="CLOSED")],
            {"billable": False},
            ExceptionKind.PROJECT_NOT_ACTIVE,
            Owner.PMO,
            0,
            0,
            None,
            id="3-closed-project-blocks-even-non-billable-cost",
        ),
        pytest.param(
            [worker(), project(), contract()],
            {"billable": False},
            None,
            None,
            0,
            1,
            None,
            id="4-non-billable-entry-posts-cost-only",
        ),
        pytest.param(
            [worker(), project(billing_type="FIXED_FEE"), contract()],
            {},
            None,
            None,
            0,
            1,
            None,
            id="4-fixed-fee-project-posts-cost-only",
        ),
        pytest.param(
            [worker(), project()],
            {"billable": False},
            None,
            None,
            0,
            1,
            None,
            id="4-non-billable-stops-before-the-contract-check",
        ),
        pytest.param(
            [worker(), project()],
            {},
            ExceptionKind.NO_CONTRACT,
            Owner.FINANCE_OPS,
            0,
            1,
            None,
            id="5-no-contract-still-posts-cost",
        ),
        pytest.param(
            [worker(), project(), contract(effective_from=date(2026, 12, 1))],
            {},
            ExceptionKind.NO_CONTRACT,
            Owner.FINANCE_OPS,
            0,
            1,
            None,
            id="5-contract-not-yet-effective-is-no-contract",
        ),
        pytest.param(
            [worker(), project(), NO_TAX],
            {},
            ExceptionKind.MISSING_TAX_CODE,
            Owner.FINANCE_OPS,
            0,
            1,
            D("150.00"),
            id="6-missing-tax-code-still-posts-cost-and-estimates-risk",
        ),
        pytest.param(
            [worker(), project(), NO_RATE_CONTRACT.model_copy(update={"tax_code": None})],
            {},
            ExceptionKind.MISSING_TAX_CODE,
            Owner.FINANCE_OPS,
            0,
            1,
            None,
            id="6-tax-code-is-checked-before-rate",
        ),
        pytest.param(
            [worker(), project(), NO_RATE_CONTRACT],
            {},
            ExceptionKind.NO_RATE,
            Owner.FINANCE_OPS,
            0,
            1,
            None,
            id="7-no-rate-still-posts-cost",
        ),
        pytest.param([worker(), project(), contract()], {}, None, None, 1, 1, None, id="valid-entry-is-billed"),
    ],
)
def test_validation_order_names_the_first_failure(
    reference, entry_changes, kind, owner, candidate_count, cost_count, at_risk
) -> None:
    _, out = run(*reference, entry(**entry_changes), approval())
    raised = exceptions(out)
    assert [(e.kind, e.owner, e.status) for e in raised] == ([(kind, owner, ExceptionStatus.OPEN)] if kind else [])
    assert len(candidates(out)) == candidate_count
    assert len(postings(out, PostingType.COST)) == cost_count
    assert len(postings(out, PostingType.REVENUE)) == candidate_count
    if raised:
        assert raised[0].amount_at_risk == at_risk
        assert (raised[0].subject_type, raised[0].subject_id, raised[0].project_id) == ("TIME_ENTRY", "E1", "P1")


def test_unapproved_entry_is_worth_nothing() -> None:
    _, out = run(*master_data(), entry(), reject())
    assert out == []


# --- §6 deltas and §7 re-pricing ------------------------------------------------------------------------


def test_amended_revision_adjusts_by_the_difference_and_points_at_the_time_candidate() -> None:
    _, out = run(*master_data(), entry(), approval(), entry(revision=2, duration_seconds=5400), approval(revision=2))
    assert lines(out) == [(CandidateKind.TIME, D("150.00")), (CandidateKind.ADJUSTMENT, D("75.00"))]
    time, adjustment = candidates(out)
    assert adjustment.replaces_candidate_id == time.candidate_id
    assert (adjustment.revision, adjustment.billable_minutes) == (2, 30)
    revenue = postings(out, PostingType.REVENUE)
    assert [p.amount for p in revenue] == [D("150.00"), D("75.00")]
    assert revenue[1].reverses_posting_id == revenue[0].posting_id
    cost = postings(out, PostingType.COST)
    assert [p.amount for p in cost] == [D("60.00"), D("30.00")]
    assert cost[1].reverses_posting_id == cost[0].posting_id


def test_unapproval_after_billing_reverses_what_was_billed() -> None:
    _, out = run(*master_data(), entry(), approval(), reject())
    assert lines(out) == [(CandidateKind.TIME, D("150.00")), (CandidateKind.REVERSAL, D("-150.00"))]
    assert candidates(out)[1].billable_minutes == -60
    assert net(out, PostingType.REVENUE) == 0 and net(out, PostingType.COST) == 0


def test_deletion_after_billing_reverses_and_later_events_are_ignored() -> None:
    pipeline, out = run(
        *master_data(), entry(), approval(), entry(revision=2, deleted=True), entry(revision=3), approval(revision=3)
    )
    assert lines(out) == [(CandidateKind.TIME, D("150.00")), (CandidateKind.REVERSAL, D("-150.00"))]
    assert candidates(out)[1].revision == 2
    assert pipeline.ignored == 2


def test_approval_before_entry_bills_when_the_entry_arrives() -> None:
    _, before = run(*master_data(), approval())
    assert before == []
    _, out = run(*master_data(), approval(), entry())
    assert lines(out) == [(CandidateKind.TIME, D("150.00"))]


def test_entry_before_master_data_is_billed_when_it_arrives_and_the_exception_resolves() -> None:
    _, out = run(entry(), approval(), worker(), project(), client(), contract())
    assert [(e.kind, e.status) for e in exceptions(out)] == [
        (ExceptionKind.UNKNOWN_WORKER, ExceptionStatus.OPEN),
        (ExceptionKind.UNKNOWN_WORKER, ExceptionStatus.RESOLVED),
        (ExceptionKind.UNKNOWN_PROJECT, ExceptionStatus.OPEN),
        (ExceptionKind.UNKNOWN_PROJECT, ExceptionStatus.RESOLVED),
        (ExceptionKind.NO_CONTRACT, ExceptionStatus.OPEN),
        (ExceptionKind.NO_CONTRACT, ExceptionStatus.RESOLVED),
    ]
    assert lines(out) == [(CandidateKind.TIME, D("150.00"))]
    resolved = exceptions(out)[-1]
    assert resolved.resolved_at is not None and resolved.opened_at < resolved.resolved_at


def test_terminated_contract_after_billing_reverses_and_opens_no_contract_with_the_billed_amount_at_risk() -> None:
    _, out = run(*master_data(), entry(), approval(), contract(status="TERMINATED"))
    assert lines(out) == [(CandidateKind.TIME, D("150.00")), (CandidateKind.REVERSAL, D("-150.00"))]
    [raised] = exceptions(out)
    assert (raised.kind, raised.status, raised.amount_at_risk, raised.currency) == (
        ExceptionKind.NO_CONTRACT,
        ExceptionStatus.OPEN,
        D("150.00"),
        "EUR",
    )
    assert net(out, PostingType.COST) == D("60.00")  # cost does not depend on the contract


def test_retroactive_amendment_adjusts_only_the_dates_it_covers() -> None:
    october = entry(time_entry_id="E-OCT", work_date=date(2026, 10, 20))
    november = entry(time_entry_id="E-NOV", work_date=date(2026, 11, 3))
    amendment = contract(version=2, effective_from=date(2026, 11, 1), default_hourly_rate=D("180.00"))
    _, out = run(
        *master_data(), october, approval(time_entry_id="E-OCT"), november, approval(time_entry_id="E-NOV"), amendment
    )
    assert net_billed(out) == {"E-OCT": D("150.00"), "E-NOV": D("180.00")}
    adjustment = candidates(out)[-1]
    assert (adjustment.kind, adjustment.time_entry_id, adjustment.amount, adjustment.contract_version) == (
        CandidateKind.ADJUSTMENT,
        "E-NOV",
        D("30.00"),
        2,
    )


def test_worker_role_change_re_rates_that_workers_entries() -> None:
    card = contract(rate_card=(line("200.00", role="senior"),))
    _, out = run(client(), project(), worker(), card, entry(), approval(), worker(role="senior"))
    assert lines(out) == [(CandidateKind.TIME, D("150.00")), (CandidateKind.ADJUSTMENT, D("50.00"))]
    assert candidates(out)[1].role == "senior"


def test_project_closed_after_billing_reverses_revenue_and_cost() -> None:
    _, out = run(*master_data(), entry(), approval(), project(status="CLOSED"))
    assert net(out) == 0 and net(out, PostingType.REVENUE) == 0 and net(out, PostingType.COST) == 0
    assert [(e.kind, e.amount_at_risk) for e in exceptions(out)] == [(ExceptionKind.PROJECT_NOT_ACTIVE, D("150.00"))]


def test_contract_currency_change_reverses_in_the_old_currency_and_bills_in_the_new() -> None:
    _, out = run(*master_data(), entry(), approval(), contract(currency="USD", default_hourly_rate=D("160")))
    assert [(c.kind, c.amount, c.currency) for c in candidates(out)] == [
        (CandidateKind.TIME, D("150.00"), "EUR"),
        (CandidateKind.REVERSAL, D("-150.00"), "EUR"),
        (CandidateKind.TIME, D("160.00"), "USD"),
    ]


def test_entry_moved_to_another_project_is_reversed_there_and_billed_here() -> None:
    _, out = run(
        *master_data(),
        project(project_id="P2"),
        contract(contract_id="K2", project_id="P2"),
        entry(),
        approval(),
        entry(revision=2, project_id="P2"),
        approval(revision=2),
    )
    assert [(c.project_id, c.kind, c.amount) for c in candidates(out)] == [
        ("P1", CandidateKind.TIME, D("150.00")),
        ("P1", CandidateKind.REVERSAL, D("-150.00")),
        ("P2", CandidateKind.TIME, D("150.00")),
    ]


def test_unchanged_master_data_changes_nothing() -> None:
    pipeline, _ = run(*master_data(), entry(), approval())
    assert pipeline.handle(contract()) == [] and pipeline.handle(worker()) == [] and pipeline.handle(project()) == []


def test_erp_target_comes_from_the_routing_rules() -> None:
    rules = RoutingRules(default="legacy-erp", rules=(RoutingRule(region="EU", erp_target="cloud-erp"),))
    _, out = run(*master_data(), entry(), approval(), routing=rules)
    assert {p.erp_target for p in out if isinstance(p, PostingRequest)} == {"cloud-erp"}


# --- §8 not-to-exceed ------------------------------------------------------------------------------------


def capped_run(cap: str, *extra):
    first, second = entry(time_entry_id="E1"), entry(time_entry_id="E2")
    return run(
        client(),
        project(),
        worker(),
        contract(not_to_exceed=D(cap)),
        first,
        approval(time_entry_id="E1"),
        second,
        approval(time_entry_id="E2"),
        *extra,
    )


def test_cap_cuts_the_candidate_that_crosses_it_and_records_the_cut_off() -> None:
    _, out = capped_run("200")
    assert [(c.time_entry_id, c.amount, c.capped) for c in candidates(out)] == [
        ("E1", D("150.00"), False),
        ("E2", D("50.00"), True),
    ]
    [cap] = exceptions(out)
    assert (cap.kind, cap.subject_id, cap.amount_at_risk, cap.owner) == (
        ExceptionKind.CAP_EXCEEDED,
        "E2",
        D("100.00"),
        Owner.FINANCE_OPS,
    )


def test_no_remaining_budget_emits_no_candidate_only_the_exception() -> None:
    _, out = capped_run("150")
    assert [(c.time_entry_id, c.amount) for c in candidates(out)] == [("E1", D("150.00"))]
    assert [(e.subject_id, e.amount_at_risk) for e in exceptions(out)] == [("E2", D("150.00"))]


def test_negative_adjustment_frees_budget_for_the_cut_entry() -> None:
    _, out = capped_run("200", reject(time_entry_id="E1"))
    assert net_billed(out) == {"E1": D("0.00"), "E2": D("150.00")}
    assert [(e.subject_id, e.status) for e in exceptions(out)] == [
        ("E2", ExceptionStatus.OPEN),
        ("E2", ExceptionStatus.RESOLVED),
    ]


def test_cap_raise_by_a_new_version_re_evaluates_the_capped_entries() -> None:
    _, out = capped_run("200", contract(version=2, not_to_exceed=D("1000")))
    assert net_billed(out) == {"E1": D("150.00"), "E2": D("150.00")}
    assert exceptions(out)[-1].status == ExceptionStatus.RESOLVED


def test_cap_lowered_below_what_was_billed_claws_back() -> None:
    _, out = capped_run("1000", contract(version=2, not_to_exceed=D("100")))
    totals = net_billed(out)
    assert sum(totals.values()) == D("100")
    at_risk = {e.subject_id: e.amount_at_risk for e in exceptions(out) if e.status == ExceptionStatus.OPEN}
    assert sum(totals.values()) + sum(at_risk.values()) == D("300.00")


# --- §9 determinism and idempotency ----------------------------------------------------------------------


def test_replaying_the_same_events_reproduces_the_same_ids() -> None:
    events = [
        *master_data(),
        entry(),
        approval(),
        entry(revision=2, duration_seconds=7200),
        approval(revision=2),
        reject(revision=2),
        contract(not_to_exceed=D("100")),
    ]
    _, first = run(*events)
    _, second = run(*events)
    assert [e.model_dump() for e in first] == [e.model_dump() for e in second]
    keys = [e.key for e in first if not isinstance(e, BusinessException)]
    assert len(keys) > 3


def test_ids_of_different_deltas_differ_even_when_the_amounts_repeat() -> None:
    _, out = run(*master_data(), entry(), approval(), reject(), approval())
    assert lines(out) == [
        (CandidateKind.TIME, D("150.00")),
        (CandidateKind.REVERSAL, D("-150.00")),
        (CandidateKind.TIME, D("150.00")),
    ]
    ids = [c.candidate_id for c in candidates(out)] + [p.posting_id for p in out if isinstance(p, PostingRequest)]
    assert len(set(ids)) == len(ids)


def test_duplicate_input_event_produces_nothing_new() -> None:
    first_approval = approval()
    pipeline, _ = run(*master_data(), entry(), first_approval)
    assert pipeline.handle(first_approval) == []
    assert pipeline.duplicates == 1


def test_exception_id_is_one_per_kind_and_entry() -> None:
    _, out = run(entry(), approval(), worker(), project())
    by_kind = {}
    for e in exceptions(out):
        by_kind.setdefault(e.kind, set()).add(e.exception_id)
    assert all(len(v) == 1 for v in by_kind.values())
    assert len({next(iter(v)) for v in by_kind.values()}) == len(by_kind)
