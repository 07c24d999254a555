"""billing-rules.md's promise: the same set of input events ends in the same money, whatever the order.

Hypothesis draws a small firm (workers, projects, contract versions with and without a cap, entries
with revisions, decisions and deletions) and feeds its events to the pipeline in many interleavings.
Order is only kept where Kafka keeps it: per topic and key (an entry's revisions, its decisions, the
versions of one reference record). Every interleaving must give each entry its expected net amount
(the final billed revision priced under the final reference data), the same cost, and per capped
contract: billed ≤ cap and billed + at risk = what the entries are worth uncapped.

"Expected" is computed twice: with the production functions (which proves order independence) and
with the independent `reference_pricing` (which proves the money itself). The firm carries discounts,
rate card lines, rounding increments, half-minute durations and yen or dinar contracts and costs, so
a pricing mistake that every interleaving repeats alike still fails here.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

import reference_pricing as ref
from domain_builders import ROUTING, approval, client, contract, entry, line, project, worker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbone.domain.billing import evaluate, net_billed
from backbone.domain.entries import new_entry, priced_view, record
from backbone.domain.models import (
    BusinessException,
    ContractVersion,
    ExceptionKind,
    ExceptionStatus,
    PostingRequest,
    PostingType,
    Project,
    Worker,
)
from backbone.domain.pipeline import BillingPipeline
from backbone.domain.rating import contract_cap
from backbone.domain.reference import ReferenceData

D = Decimal
DATES = [date(2026, 10, 20), date(2026, 11, 5)]
DISCOUNTS = [D("0"), D("10"), D("12.5"), D("33.3333")]
DURATIONS = st.integers(0, 4 * 3600) | st.integers(0, 480).map(lambda n: 30 * n)  # half minutes are ties


@st.composite
def firms(draw):
    """Chains of events: each chain is one topic+key, in the order Kafka delivers it."""
    chains: dict[str, list] = {"client:C1": [client()]}
    for worker_id in ("W1", "W2"):  # W3 never exists: UNKNOWN_WORKER
        roles = draw(st.lists(st.sampled_from(["consultant", "senior"]), min_size=1, max_size=2))
        cost_currency = draw(st.sampled_from(["EUR", "JPY", "KWD"]))
        chains[f"worker:{worker_id}"] = [
            worker(worker_id=worker_id, role=r, cost_rate=D("61.37"), cost_currency=cost_currency) for r in roles
        ]
    statuses = draw(st.lists(st.sampled_from(["ACTIVE", "ACTIVE", "ON_HOLD"]), min_size=1, max_size=2))
    chains["project:P1"] = [project(status=s) for s in statuses]
    chains["project:P2"] = [
        project(project_id="P2", billing_type=draw(st.sampled_from(["TIME_AND_MATERIALS", "FIXED_FEE"])))
    ]
    cap = draw(st.sampled_from([None, D("100"), D("250"), D("250"), D("600")]))
    card = (line("200.00", role="senior"), line("175.50", worker_id="W2", task_id="T1"))
    chains["contract:K1:1"] = [contract(not_to_exceed=cap, rate_card=card, **_draw_pricing_terms(draw))]
    if draw(st.booleans()):
        amendment = dict(
            version=2,
            effective_from=DATES[1],
            default_hourly_rate=D("180.00"),
            rate_card=card,
            not_to_exceed=draw(st.one_of(st.none(), st.sampled_from([D("150"), D("900")]))),
            **_draw_pricing_terms(draw),
        )
        chains["contract:K1:2"] = [contract(**amendment)]
        if draw(st.booleans()):
            chains["contract:K1:2"].append(contract(**amendment, status="TERMINATED"))
    chains["contract:K2:1"] = [
        contract(
            contract_id="K2",
            project_id="P2",
            tax_code=draw(st.sampled_from(["VAT", None])),
            currency=draw(st.sampled_from(["EUR", "JPY", "KWD"])),
            discount_percent=draw(st.sampled_from(DISCOUNTS)),
        )
    ]
    for n in range(draw(st.integers(2, 7))):
        _draw_entry(draw, chains, f"E{n}")
    return chains


def _draw_pricing_terms(draw):
    return dict(
        discount_percent=draw(st.sampled_from(DISCOUNTS)),
        rounding_increment_minutes=draw(st.sampled_from([1, 1, 6, 15])),
        rounding_mode=draw(st.sampled_from(["NEAREST", "UP", "DOWN"])),
    )


def _draw_entry(draw, chains, entry_id):
    revisions = draw(st.integers(1, 3))
    base = dict(
        time_entry_id=entry_id,
        worker_id=draw(st.sampled_from(["W1", "W1", "W2", "W3"])),
        project_id=draw(st.sampled_from(["P1", "P1", "P1", "P2"])),
        task_id=draw(st.sampled_from([None, "T1"])),
    )
    revs = [
        entry(
            **base,
            revision=r,
            work_date=draw(st.sampled_from(DATES)),
            duration_seconds=draw(DURATIONS),
            billable=draw(st.booleans()) or r > 1,
        )
        for r in range(1, revisions + 1)
    ]
    if draw(st.integers(0, 5)) == 0:
        revs.append(entry(**base, revision=revisions + 1, deleted=True))
    chains[f"entry:{entry_id}"] = revs
    decisions = draw(
        st.lists(
            st.tuples(st.integers(1, revisions), st.sampled_from(["APPROVED", "APPROVED", "REJECTED"])),
            min_size=1,
            max_size=4,
        )
    )
    chains[f"approval:{entry_id}"] = [approval(time_entry_id=entry_id, revision=r, decision=d) for r, d in decisions]


def interleave(chains, order):
    cursors = {name: iter(events) for name, events in chains.items()}
    return [next(cursors[name]) for name in order]


def labels(chains):
    return [name for name, events in chains.items() for _ in events]


def expected(chains):
    """Per entry: the final priced view under the final reference data (order does not matter here)."""
    reference = ReferenceData()
    for name, events in chains.items():
        if not name.startswith(("entry:", "approval:")):
            for event in events:
                reference.apply(event)
    worth, cost, priced = {}, {}, {}
    for name in chains:
        if name.startswith("entry:"):
            entry_id = name.split(":")[1]
            state = new_entry(entry_id)
            for event in chains[name] + chains[f"approval:{entry_id}"]:
                state = record(state, event).state
            valuation = evaluate(priced_view(state), reference)
            worth[entry_id], cost[entry_id], priced[entry_id] = (
                valuation.worth,
                valuation.cost or D(0),
                valuation.pricing,
            )
    return reference, worth, cost, priced


def reference_expected(chains):
    """Per entry, what `reference_pricing` alone says it is worth and costs; and K1's cap. No production code."""
    final = [events[-1] for name, events in chains.items() if not name.startswith(("entry:", "approval:"))]
    workers = {e.worker_id: e for e in final if isinstance(e, Worker)}
    projects = {e.project_id: e for e in final if isinstance(e, Project)}
    versions = [e for e in final if isinstance(e, ContractVersion)]
    money = {}
    for name in chains:
        if name.startswith("entry:"):
            entry_id = name.split(":")[1]
            revision = ref.billed_revision(chains[name], chains[f"approval:{entry_id}"])
            money[entry_id] = ref.expected_money(revision, workers, projects, versions)
    return money, ref.contract_cap(versions, "K1")


def assert_money_is_the_references(billed, costs, money, cap):
    """Net billed and cost per entry as the independent reference prices them (and cuts them, under a cap)."""
    assert {k: v for k, v in costs.items() if v} == {k: m.cost for k, m in money.items() if m.cost}
    under_k1 = {k for k, m in money.items() if m.contract_id == "K1"}
    others = {k: m.worth for k, m in money.items() if k not in under_k1 and m.worth}
    assert {k: v for k, v in billed.items() if k not in under_k1 and v} == others
    total = sum((billed.get(k, D(0)) for k in under_k1), D(0))
    uncapped = sum((money[k].worth for k in under_k1), D(0))
    assert total == (uncapped if cap is None else min(cap, uncapped))
    if cap is None:
        assert {k: v for k, v in billed.items() if k in under_k1 and v} == {
            k: money[k].worth for k in under_k1 if money[k].worth
        }


def outcome(chains, order):
    pipeline = BillingPipeline(ROUTING)
    outputs = []
    for event in interleave(chains, order):
        outputs += pipeline.handle(event)
    return pipeline, outputs


def net_cost(outputs):
    totals = defaultdict(lambda: D(0))
    for event in outputs:
        if isinstance(event, PostingRequest) and event.posting_type == PostingType.COST:
            totals[event.time_entry_id] += event.amount
    return totals


def open_cap_risk(outputs):
    latest = {}
    for event in outputs:
        if isinstance(event, BusinessException) and event.kind == ExceptionKind.CAP_EXCEEDED:
            latest[event.subject_id] = event
    return {k: e.amount_at_risk for k, e in latest.items() if e.status == ExceptionStatus.OPEN}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_interleaving_ends_in_the_same_money(data) -> None:
    chains = data.draw(firms())
    reference, worth, cost, priced = expected(chains)
    cap = contract_cap(reference.contract_versions("P1"), "K1")
    money, reference_cap = reference_expected(chains)
    # the production valuation is the independent one, to the last digit and the currency's scale
    assert {k: str(v) for k, v in worth.items() if v} == {k: str(m.worth) for k, m in money.items() if m.worth}
    assert {k: str(v) for k, v in cost.items() if v} == {k: str(m.cost) for k, m in money.items() if m.cost}
    assert {k for k, p in priced.items() if p is not None and p.contract_id == "K1"} == {
        k for k, m in money.items() if m.contract_id == "K1"
    }
    assert cap == reference_cap
    results = []
    for _ in range(3):
        order = data.draw(st.permutations(labels(chains)))
        pipeline, outputs = outcome(chains, order)
        billed = net_billed(outputs)
        assert_money_is_the_references(billed, net_cost(outputs), money, reference_cap)
        # cost never depends on the cap or the order
        assert {k: v for k, v in net_cost(outputs).items() if v} == {k: v for k, v in cost.items() if v}
        revenue = defaultdict(lambda: D(0))
        for event in outputs:
            if isinstance(event, PostingRequest) and event.posting_type == PostingType.REVENUE:
                revenue[event.time_entry_id] += event.amount
        assert {k: v for k, v in revenue.items() if v} == {k: v for k, v in billed.items() if v}
        under_k1 = [k for k, p in priced.items() if p is not None and p.contract_id == "K1"]
        if cap is None:
            assert {k: v for k, v in billed.items() if v} == {k: v for k, v in worth.items() if v}
        else:
            others = {k: v for k, v in worth.items() if k not in under_k1 and v}
            assert {k: v for k, v in billed.items() if k not in under_k1 and v} == others
            total = sum((billed.get(k, D(0)) for k in under_k1), D(0))
            uncapped = sum((worth[k] for k in under_k1), D(0))
            at_risk = sum(open_cap_risk(outputs).values(), D(0))
            assert total <= cap
            assert total == min(cap, uncapped)
            assert total + at_risk == uncapped
            book_risk = (
                sum((ledger.at_risk for ledger in pipeline.books["P1"].ledgers.values()), D(0))
                if "P1" in pipeline.books
                else D(0)
            )
            assert book_risk == at_risk
        results.append(sum(billed.values(), D(0)))
    assert len(set(results)) == 1
