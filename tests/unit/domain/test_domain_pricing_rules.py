"""billing-rules.md §3–§9 end to end, with money worked out by hand: discounts in every kind of line.

Each case feeds events to `BillingPipeline` and compares what it emits with literal amounts derived
from the rule (the working sits next to each case). The discount must reach TIME, ADJUSTMENT and
REVERSAL lines, lines priced from a rate card, and candidates cut by a cap; ties sit where half-even
rounding would differ; yen and dinar amounts are compared as text so their scale is checked too.
Where a case prices one entry, the independent `reference_pricing` must reach the same literal.
"""

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import reference_pricing as ref
from domain_builders import ROUTING, T0, approval, client, contract, entry, line, project, reject, worker

from backbone.domain.billing import Context, net_billed, settle
from backbone.domain.models import (
    BusinessException,
    CandidateKind,
    ExceptionKind,
    ExceptionStatus,
    InvoiceCandidate,
    PostingRequest,
    PostingType,
    RoundingMode,
)
from backbone.domain.pipeline import BillingPipeline
from backbone.domain.rating import contract_cap, resolve_rate, select_contract_version

D = Decimal
TIME, ADJUSTMENT, REVERSAL = CandidateKind.TIME, CandidateKind.ADJUSTMENT, CandidateKind.REVERSAL
CONSULTANT_200 = (line("200.00", role="consultant"),)


def run(*events: Any) -> list[Any]:
    pipeline = BillingPipeline(ROUTING)
    outputs: list[Any] = []
    for event in events:
        outputs += pipeline.handle(event)
    return outputs


def candidates(outputs: list[Any]) -> list[InvoiceCandidate]:
    return [e for e in outputs if isinstance(e, InvoiceCandidate)]


def postings(outputs: list[Any], posting_type: PostingType) -> list[PostingRequest]:
    return [e for e in outputs if isinstance(e, PostingRequest) and e.posting_type == posting_type]


def lines_of(outputs: list[Any]) -> list[tuple[str, str, str]]:
    """(entry, kind, amount as text): the text keeps the scale, so 135.00 and 135 differ."""
    return [(c.time_entry_id, c.kind, str(c.amount)) for c in candidates(outputs)]


def open_cap_risk(outputs: list[Any]) -> dict[str, str]:
    latest: dict[str, BusinessException] = {}
    for e in outputs:
        if isinstance(e, BusinessException) and e.kind == ExceptionKind.CAP_EXCEEDED:
            latest[e.subject_id] = e
    return {k: str(e.amount_at_risk) for k, e in latest.items() if e.status == ExceptionStatus.OPEN}


def reference_worth(the_worker: Any, the_entry: Any, *versions: Any) -> Decimal:
    """What the independent reference says the entry is worth under these contract versions."""
    return ref.expected_money(the_entry, {the_worker.worker_id: the_worker}, {"P1": project()}, versions).worth


# --- TIME: one approved entry, priced once ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract_changes", "entry_changes", "amount", "rate", "discount", "minutes"),
    [
        # 3725 s → 62 min; 62 × 150 × 90 / 6000 = 139.50
        pytest.param(
            {"discount_percent": D("10")},
            {"duration_seconds": 3725},
            "139.50",
            "150.00",
            "10",
            62,
            id="time-line-carries-the-contract-discount",
        ),
        # 62 × 150 × 87.5 / 6000 = 135.625 → 135.63 (half-even: 135.62)
        pytest.param(
            {"discount_percent": D("12.5")},
            {"duration_seconds": 3725},
            "135.63",
            "150.00",
            "12.5",
            62,
            id="time-line-half-up-tie-with-discount",
        ),
        # 3 × 150.10 × 90 / 6000 = 6.7545 → 6.75 (rounding 7.505 first would give 6.76)
        pytest.param(
            {"discount_percent": D("10"), "default_hourly_rate": D("150.10")},
            {"duration_seconds": 180},
            "6.75",
            "150.10",
            "10",
            3,
            id="time-line-discount-before-the-only-rounding",
        ),
        # role line 200; 60 × 200 × 90 / 6000 = 180.00
        pytest.param(
            {"discount_percent": D("10"), "rate_card": CONSULTANT_200},
            {},
            "180.00",
            "200.00",
            "10",
            60,
            id="rate-card-role-line-keeps-the-discount",
        ),
        # worker line 240 beats role line 200; 45 × 240 × 75 / 6000 = 135.00
        pytest.param(
            {"discount_percent": D("25"), "rate_card": (*CONSULTANT_200, line("240.00", worker_id="W1"))},
            {"duration_seconds": 2700},
            "135.00",
            "240.00",
            "25",
            45,
            id="rate-card-worker-line-keeps-the-discount",
        ),
        # task line 220; 62 × 220 × 87.5 / 6000 = 198.9166.. → 198.92
        pytest.param(
            {"discount_percent": D("12.5"), "rate_card": (line("220.00", task_id="T1"),)},
            {"duration_seconds": 3725, "task_id": "T1"},
            "198.92",
            "220.00",
            "12.5",
            62,
            id="rate-card-task-line-keeps-the-discount",
        ),
        # 3725 s UP to 15 → 75 min; role line 200; 75 × 200 × 90 / 6000 = 225.00
        pytest.param(
            {
                "discount_percent": D("10"),
                "rate_card": CONSULTANT_200,
                "rounding_increment_minutes": 15,
                "rounding_mode": RoundingMode.UP,
            },
            {"duration_seconds": 3725},
            "225.00",
            "200.00",
            "10",
            75,
            id="rate-card-line-with-increment-and-discount",
        ),
        # 150 s = 2.5 min → 3 (half-even: 2); 3 × 150 / 60 = 7.50
        pytest.param({}, {"duration_seconds": 150}, "7.50", "150.00", "0", 3, id="nearest-2.5-min-bills-3-min"),
        # 90 × 12000 × 90 / 6000 = 16200
        pytest.param(
            {"currency": "JPY", "default_hourly_rate": D("12000"), "discount_percent": D("10")},
            {"duration_seconds": 5400},
            "16200",
            "12000",
            "10",
            90,
            id="jpy-line-with-discount-has-no-decimals",
        ),
        # 6 × 250 × 50 / 6000 = 12.5 → 13 (half-even: 12)
        pytest.param(
            {"currency": "JPY", "default_hourly_rate": D("250"), "discount_percent": D("50")},
            {"duration_seconds": 360},
            "13",
            "250",
            "50",
            6,
            id="jpy-line-half-up-tie-with-discount",
        ),
        # 6 × 20.005 / 60 = 2.0005 → 2.001 (half-even: 2.000)
        pytest.param(
            {"currency": "KWD", "default_hourly_rate": D("20.005")},
            {"duration_seconds": 360},
            "2.001",
            "20.005",
            "0",
            6,
            id="kwd-line-half-up-tie-has-three-decimals",
        ),
        # 60 × 10.001 × 50 / 6000 = 5.0005 → 5.001 (half-even: 5.000)
        pytest.param(
            {"currency": "BHD", "default_hourly_rate": D("10.001"), "discount_percent": D("50")},
            {},
            "5.001",
            "10.001",
            "50",
            60,
            id="bhd-line-with-discount-half-up-tie-has-three-decimals",
        ),
        # no default rate: the only line must match on the entry's own worker / role / task (§2 step 7, §4)
        # 60 × 240 × 90 / 6000 = 216.00
        pytest.param(
            {"default_hourly_rate": None, "discount_percent": D("10"), "rate_card": (line("240.00", worker_id="W1"),)},
            {},
            "216.00",
            "240.00",
            "10",
            60,
            id="worker-line-prices-without-a-default-rate",
        ),
        pytest.param(
            {"default_hourly_rate": None, "discount_percent": D("10"), "rate_card": CONSULTANT_200},
            {},
            "180.00",
            "200.00",
            "10",
            60,
            id="role-line-prices-without-a-default-rate",
        ),
        # 60 × 220 × 87.5 / 6000 = 192.50
        pytest.param(
            {"default_hourly_rate": None, "discount_percent": D("12.5"), "rate_card": (line("220.00", task_id="T1"),)},
            {"task_id": "T1"},
            "192.50",
            "220.00",
            "12.5",
            60,
            id="task-line-prices-without-a-default-rate",
        ),
        pytest.param(
            {"currency": "KWD", "default_hourly_rate": D("12")},
            {},
            "12.000",
            "12",
            "0",
            60,
            id="kwd-whole-amount-keeps-three-decimals",
        ),
    ],
)
def test_time_line_is_priced_as_worked_by_hand(
    contract_changes, entry_changes, amount, rate, discount, minutes
) -> None:
    the_worker, the_contract, the_entry = worker(), contract(**contract_changes), entry(**entry_changes)
    out = run(client(), project(), the_worker, the_contract, the_entry, approval())
    [c] = candidates(out)
    assert (c.kind, str(c.amount), c.hourly_rate, c.discount_percent, c.billable_minutes, c.capped) == (
        TIME,
        amount,
        D(rate),
        D(discount),
        minutes,
        False,
    )
    [revenue] = postings(out, PostingType.REVENUE)
    assert str(revenue.amount) == amount
    assert str(reference_worth(the_worker, the_entry, the_contract)) == amount


def test_amendment_with_a_new_discount_prices_only_the_dates_it_covers() -> None:
    october = entry(time_entry_id="E-OCT", work_date=date(2026, 10, 20))
    november = entry(time_entry_id="E-NOV", work_date=date(2026, 11, 3))
    v1 = contract(discount_percent=D("10"))
    v2 = contract(
        version=2, effective_from=date(2026, 11, 1), default_hourly_rate=D("180.00"), discount_percent=D("20")
    )
    out = run(
        client(),
        project(),
        worker(),
        v1,
        v2,
        october,
        approval(time_entry_id="E-OCT"),
        november,
        approval(time_entry_id="E-NOV"),
    )
    # October under v1: 60 × 150 × 90 / 6000 = 135.00; November under v2: 60 × 180 × 80 / 6000 = 144.00
    assert lines_of(out) == [("E-OCT", TIME, "135.00"), ("E-NOV", TIME, "144.00")]
    assert [c.discount_percent for c in candidates(out)] == [D("10"), D("20")]
    assert [str(reference_worth(worker(), e, v1, v2)) for e in (october, november)] == ["135.00", "144.00"]


@pytest.mark.parametrize(
    ("worker_changes", "seconds", "cost"),
    [
        # 150 s = 2.5 min → 3 (half-even: 2); 3 × 60 / 60 = 3.00
        pytest.param({}, 150, "3.00", id="cost-posting-of-2.5-min-is-3-min"),
        # 3630 s = 60.5 min → 61; 61 × 60 / 60 = 61.00
        pytest.param({}, 3630, "61.00", id="cost-posting-of-60.5-min-is-61-min"),
        # 150 s → 3 min; 3 × 7000 / 60 = 350
        pytest.param(
            {"cost_rate": D("7000"), "cost_currency": "JPY"}, 150, "350", id="cost-posting-in-yen-no-decimals"
        ),
        # 360 s → 6 min; 6 × 20.005 / 60 = 2.0005 → 2.001
        pytest.param({"cost_rate": D("20.005"), "cost_currency": "KWD"}, 360, "2.001", id="cost-posting-in-dinar-tie"),
    ],
)
def test_cost_posting_is_priced_as_worked_by_hand(worker_changes, seconds, cost) -> None:
    out = run(client(), project(), worker(**worker_changes), contract(), entry(duration_seconds=seconds), approval())
    [posting] = postings(out, PostingType.COST)
    assert str(posting.amount) == cost


def test_a_new_cost_currency_reverses_the_cost_in_the_old_one_and_posts_it_in_the_new() -> None:
    out = run(client(), project(), worker(), contract(), entry(), approval(), worker(cost_currency="GBP"))
    # 60 × 60.00 / 60 = 60.00, first in EUR, then in GBP: a delta across currencies would be meaningless
    assert [(str(p.amount), p.currency) for p in postings(out, PostingType.COST)] == [
        ("60.00", "EUR"),
        ("-60.00", "EUR"),
        ("60.00", "GBP"),
    ]


# --- ADJUSTMENT and REVERSAL: the discount reaches every delta -------------------------------------------------

TEN_OFF = {"discount_percent": D("10")}


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # rev 1: 60 × 150 × 0.9 = 135.00; rev 2: 90 × 150 × 0.9 = 202.50; delta 67.50
        pytest.param(
            [contract(**TEN_OFF), entry(), approval(), entry(revision=2, duration_seconds=5400), approval(revision=2)],
            [(TIME, "135.00"), (ADJUSTMENT, "67.50")],
            id="amended-revision-adjusts-at-the-discounted-rate",
        ),
        # rev 1: 60 × 150 × 87.5 / 6000 = 131.25; rev 2: 62 min → 135.625 → 135.63; delta 4.38
        pytest.param(
            [
                contract(discount_percent=D("12.5")),
                entry(),
                approval(),
                entry(revision=2, duration_seconds=3725),
                approval(revision=2),
            ],
            [(TIME, "131.25"), (ADJUSTMENT, "4.38")],
            id="adjustment-to-a-half-up-tie-with-discount",
        ),
        # v1 10 % off: 135.00; v2 20 % off: 60 × 150 × 80 / 6000 = 120.00; delta −15.00
        pytest.param(
            [contract(**TEN_OFF), entry(), approval(), contract(version=2, discount_percent=D("20"))],
            [(TIME, "135.00"), (ADJUSTMENT, "-15.00")],
            id="discount-amendment-adjusts-by-the-discount-difference",
        ),
        # default 150 × 0.9 = 135.00; as senior the role line 200 × 0.9 = 180.00; delta 45.00
        pytest.param(
            [
                contract(rate_card=(line("200.00", role="senior"),), **TEN_OFF),
                entry(),
                approval(),
                worker(role="senior"),
            ],
            [(TIME, "135.00"), (ADJUSTMENT, "45.00")],
            id="role-change-onto-a-rate-card-line-adjusts-at-the-discounted-rate",
        ),
        # role line 200 × 0.9 = 180.00; rev 2 at 30 min: 90.00; delta −90.00
        pytest.param(
            [
                contract(rate_card=CONSULTANT_200, **TEN_OFF),
                entry(),
                approval(),
                entry(revision=2, duration_seconds=1800),
                approval(revision=2),
            ],
            [(TIME, "180.00"), (ADJUSTMENT, "-90.00")],
            id="shortened-revision-on-a-rate-card-line-adjusts-at-the-discounted-rate",
        ),
        pytest.param(
            [contract(**TEN_OFF), entry(), approval(), reject()],
            [(TIME, "135.00"), (REVERSAL, "-135.00")],
            id="unapproval-reverses-the-discounted-amount",
        ),
        pytest.param(
            [contract(**TEN_OFF), entry(), approval(), entry(revision=2, deleted=True)],
            [(TIME, "135.00"), (REVERSAL, "-135.00")],
            id="deletion-reverses-the-discounted-amount",
        ),
        pytest.param(
            [contract(rate_card=CONSULTANT_200, **TEN_OFF), entry(), approval(), reject()],
            [(TIME, "180.00"), (REVERSAL, "-180.00")],
            id="unapproval-reverses-the-discounted-rate-card-amount",
        ),
        pytest.param(
            [contract(**TEN_OFF), entry(), approval(), contract(**TEN_OFF, status="TERMINATED")],
            [(TIME, "135.00"), (REVERSAL, "-135.00")],
            id="terminated-contract-reverses-the-discounted-amount",
        ),
        # JPY 12000/h, 10 % off: 60 min 10800; 90 min 16200; delta 5400; then un-approval −16200
        pytest.param(
            [
                contract(currency="JPY", default_hourly_rate=D("12000"), **TEN_OFF),
                entry(),
                approval(),
                entry(revision=2, duration_seconds=5400),
                approval(revision=2),
                reject(revision=2),
            ],
            [(TIME, "10800"), (ADJUSTMENT, "5400"), (ADJUSTMENT, "-5400")],
            id="jpy-deltas-with-discount-have-no-decimals",
        ),
    ],
)
def test_every_delta_carries_the_discount(events, expected) -> None:
    out = run(client(), project(), worker(), *events)
    assert [(kind, amount) for _, kind, amount in lines_of(out)] == expected
    revenue = [str(p.amount) for p in postings(out, PostingType.REVENUE)]
    assert revenue == [amount for _, amount in expected]


def test_adjustment_and_reversal_lines_show_the_discount_they_were_priced_with() -> None:
    out = run(
        client(),
        project(),
        worker(),
        contract(**TEN_OFF),
        entry(),
        approval(),
        entry(revision=2, duration_seconds=5400),
        approval(revision=2),
        reject(revision=2),
    )
    # rev 2 rejected: rev 1 (approved) is billed again, 202.50 → 135.00
    assert [(c.kind, str(c.amount), c.discount_percent) for c in candidates(out)] == [
        (TIME, "135.00", D("10")),
        (ADJUSTMENT, "67.50", D("10")),
        (ADJUSTMENT, "-67.50", D("10")),
    ]


# --- §8 the cap, with discounted worths -------------------------------------------------------------------------


def capped(cap: str, *extra: Any, second_seconds: int = 3600) -> tuple[BillingPipeline, list[Any]]:
    """Two entries of one hour (E2's length varies) under contract K1 at 150/h, 10 % off, capped at `cap`."""
    pipeline = BillingPipeline(ROUTING)
    events = [
        client(),
        project(),
        worker(),
        contract(not_to_exceed=D(cap), **TEN_OFF),
        entry(time_entry_id="E1"),
        approval(time_entry_id="E1"),
        entry(time_entry_id="E2", duration_seconds=second_seconds),
        approval(time_entry_id="E2"),
        *extra,
    ]
    return pipeline, [out for event in events for out in pipeline.handle(event)]


@pytest.mark.parametrize(
    ("cap", "extra", "second_seconds", "lines", "at_risk"),
    [
        # each entry 60 × 150 × 0.9 = 135.00; cap 200 leaves 65.00 for E2, 70.00 at risk
        pytest.param(
            "200",
            [],
            3600,
            [("E1", TIME, "135.00", False), ("E2", TIME, "65.00", True)],
            {"E2": "70.00"},
            id="cap-cuts-the-discounted-worth-not-the-list-price",
        ),
        pytest.param(
            "135",
            [],
            3600,
            [("E1", TIME, "135.00", False)],
            {"E2": "135.00"},
            id="discounted-worth-exactly-at-the-cap-leaves-nothing",
        ),
        # E2 90 min: 90 × 150 × 0.9 = 202.50; cap 250 leaves 115.00, 87.50 at risk
        pytest.param(
            "250",
            [],
            5400,
            [("E1", TIME, "135.00", False), ("E2", TIME, "115.00", True)],
            {"E2": "87.50"},
            id="cap-cut-of-a-discounted-longer-entry",
        ),
        # a raise to 1000 (still 10 % off) bills the rest of E2: +70.00
        pytest.param(
            "200",
            [contract(version=2, not_to_exceed=D("1000"), **TEN_OFF)],
            3600,
            [("E1", TIME, "135.00", False), ("E2", TIME, "65.00", True), ("E2", ADJUSTMENT, "70.00", False)],
            {},
            id="cap-raise-bills-the-rest-of-the-discounted-worth",
        ),
        # 20 % off makes each 120.00: 240.00 fits under 250; E1 −15.00 first, then E2 +5.00
        pytest.param(
            "250",
            [contract(version=2, not_to_exceed=D("250"), discount_percent=D("20"))],
            3600,
            [
                ("E1", TIME, "135.00", False),
                ("E2", TIME, "115.00", True),
                ("E1", ADJUSTMENT, "-15.00", False),
                ("E2", ADJUSTMENT, "5.00", False),
            ],
            {},
            id="discount-raise-under-a-cap-frees-budget-for-the-cut-entry",
        ),
    ],
)
def test_cap_arithmetic_uses_discounted_worths(cap, extra, second_seconds, lines, at_risk) -> None:
    pipeline, out = capped(cap, *extra, second_seconds=second_seconds)
    assert [(*line_, c.capped) for line_, c in zip(lines_of(out), candidates(out), strict=True)] == lines
    assert open_cap_risk(out) == at_risk
    # the book's own at-risk figures (reconciliation and the cap's rebalancing read them) say the same
    book = pipeline.books["P1"]
    assert {k: str(ledger.at_risk) for k, ledger in book.ledgers.items() if ledger.at_risk} == at_risk


def exceptions(outputs: list[Any]) -> list[BusinessException]:
    return [e for e in outputs if isinstance(e, BusinessException)]


def test_a_small_billed_amount_is_what_goes_at_risk_when_its_contract_ends() -> None:
    # 60 s at 30.00/h: 1 × 30 / 60 = 0.50 billed; terminating the only contract reverses it and puts it at risk
    rate = {"default_hourly_rate": D("30.00")}
    out = run(
        client(),
        project(),
        worker(),
        contract(**rate),
        entry(duration_seconds=60),
        approval(),
        contract(**rate, status="TERMINATED"),
    )
    assert lines_of(out) == [("E1", TIME, "0.50"), ("E1", REVERSAL, "-0.50")]
    [raised] = exceptions(out)
    assert (raised.kind, raised.status, str(raised.amount_at_risk), raised.currency, raised.resolved_at) == (
        ExceptionKind.NO_CONTRACT,
        ExceptionStatus.OPEN,
        "0.50",
        "EUR",
        None,
    )


def test_re_pricing_that_changes_no_money_raises_no_exception_again() -> None:
    pipeline, out = capped("200")
    assert [(e.kind, e.status) for e in exceptions(out)] == [(ExceptionKind.CAP_EXCEEDED, ExceptionStatus.OPEN)]
    assert pipeline.handle(contract(not_to_exceed=D("200"), **TEN_OFF)) == []


def test_a_re_valued_cap_exception_keeps_the_time_it_was_opened() -> None:
    pipeline, out = capped("200")
    [first] = exceptions(out)
    later = pipeline.handle(entry(time_entry_id="E2", revision=2, duration_seconds=5400))
    later += pipeline.handle(approval(time_entry_id="E2", revision=2))
    # E2 is now worth 90 × 150 × 0.9 = 202.50 and still cut to 65.00: 137.50 at risk
    assert lines_of(later) == []
    [revalued] = exceptions(later)
    assert (revalued.status, str(revalued.amount_at_risk), revalued.opened_at, revalued.resolved_at) == (
        ExceptionStatus.OPEN,
        "137.50",
        first.opened_at,
        None,
    )
    assert revalued.occurred_at > first.occurred_at


def test_settling_one_entry_after_the_cap_fell_claws_back_from_the_others_too() -> None:
    pipeline, _ = capped("1000")
    pipeline.reference.apply(contract(version=2, not_to_exceed=D("100"), **TEN_OFF))
    settled = settle(pipeline.books["P1"], ["E1"], Context(pipeline.reference, ROUTING, T0))
    # E1 (135.00) goes first while E2's 135.00 alone exceeds 100; then E2 is clawed back to the cap
    assert lines_of(list(settled.events)) == [("E1", REVERSAL, "-135.00"), ("E2", ADJUSTMENT, "-35.00")]
    assert settled.book.billed_by_contract == {"K1": D("100.00")}


def test_reference_cap_arithmetic_matches_the_hand_worked_cut() -> None:
    assert ref.cut_to_cap([D("135.00"), D("135.00")], D("200")) == [(D("135.00"), D("0")), (D("65.00"), D("70.00"))]
    assert ref.cut_to_cap([D("135.00"), D("202.50")], D("250")) == [(D("135.00"), D("0")), (D("115.00"), D("87.50"))]
    totals = net_billed(capped("200")[1])
    assert totals == {"E1": D("135.00"), "E2": D("65.00")}


# --- §9: money lines of different entries never share an id ------------------------------------------------


def test_identical_lines_of_two_entries_get_different_ids() -> None:
    _, out = capped("1000")
    # both entries are worth 135.00 under the same contract version: only the entry tells their lines apart
    assert lines_of(out) == [("E1", TIME, "135.00"), ("E2", TIME, "135.00")]
    candidate_ids = [c.candidate_id for c in candidates(out)]
    posting_ids = [p.posting_id for p in out if isinstance(p, PostingRequest)]
    assert len(set(candidate_ids)) == 2 and len(set(posting_ids)) == 4


# --- §3 and §4: the reference agrees with the rules' selection, as production does ---------------------------

OCT, NOV = date(2026, 10, 15), date(2026, 11, 15)
V1 = contract(version=1, effective_from=date(2026, 1, 1))
V2_NOV = contract(version=2, effective_from=date(2026, 11, 1))


@pytest.mark.parametrize(
    ("versions", "work_date", "chosen"),
    [
        pytest.param([V2_NOV, V1], NOV, 2, id="highest-covering-version-wins"),
        pytest.param([V1, V2_NOV], OCT, 1, id="amendment-leaves-dates-before-it-alone"),
        pytest.param([V1, V2_NOV.model_copy(update={"status": "TERMINATED"})], NOV, 1, id="terminated-covers-nothing"),
        pytest.param([V1.model_copy(update={"effective_to": OCT})], OCT, 1, id="effective-to-is-inclusive"),
        pytest.param([V1, V2_NOV], date(2026, 11, 1), 2, id="effective-from-is-inclusive"),
        pytest.param([V1, V2_NOV], date(2026, 10, 31), 1, id="the-day-before-effective-from-keeps-the-old-version"),
        pytest.param([V1.model_copy(update={"effective_to": date(2026, 10, 14)})], OCT, None, id="after-effective-to"),
        pytest.param([V2_NOV], OCT, None, id="before-effective-from"),
    ],
)
def test_contract_version_selection(versions, work_date, chosen) -> None:
    for select in (select_contract_version, ref.applicable_version):
        version = select(versions, work_date)
        assert (version.version if version is not None else None) == chosen


@pytest.mark.parametrize(
    ("card", "task_id", "rate"),
    [
        pytest.param(
            (line("110", role="consultant"), line("120", task_id="T1")), "T1", "120", id="task-2-beats-role-1"
        ),
        pytest.param((line("120", task_id="T1"), line("140", worker_id="W1")), "T1", "140", id="worker-4-beats-task-2"),
        pytest.param(
            (line("130", role="consultant", task_id="T1"), line("140", worker_id="W1")),
            "T1",
            "140",
            id="worker-4-beats-task+role-3",
        ),
        pytest.param((line("90", role="consultant"), line("95", role="consultant")), None, "90", id="tie-earlier-wins"),
        pytest.param((line("120", task_id="T1"), line("99", worker_id="W9")), None, "150", id="no-match-takes-default"),
        pytest.param((line("99", role="senior"),), None, "150", id="set-selector-must-equal-the-role"),
    ],
)
def test_rate_selection(card, task_id, rate) -> None:
    version = contract(rate_card=card, default_hourly_rate=D("150"))
    for resolve in (resolve_rate, ref.hourly_rate):
        assert resolve(version, "W1", "consultant", task_id) == D(rate)


@pytest.mark.parametrize(
    ("versions", "cap"),
    [
        pytest.param(
            [contract(not_to_exceed=D("1000")), contract(version=3, not_to_exceed=D("5000")), contract(version=2)],
            "5000",
            id="the-highest-versions-figure-counts",
        ),
        pytest.param(
            [contract(not_to_exceed=D("1000")), contract(version=2)],
            None,
            id="a-highest-version-without-a-cap-lifts-it",
        ),
        pytest.param(
            [contract(contract_id="K2", not_to_exceed=D("10"))], None, id="another-contracts-cap-does-not-count"
        ),
        pytest.param([], None, id="no-versions-no-cap"),
    ],
)
def test_cap_is_the_figure_on_the_contracts_highest_version(versions, cap) -> None:
    for cap_of in (contract_cap, ref.contract_cap):
        assert cap_of(versions, "K1") == (D(cap) if cap is not None else None)
