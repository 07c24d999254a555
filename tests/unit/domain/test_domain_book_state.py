"""The billing core's state is updated in place: what that must never change.

A book's running totals always equal the sum over its ledgers and are rebuilt alike from the ledgers
alone; an operation reports exactly the ledgers it changed; an operation that fails half-way leaves
the book as it was; the output events built without validation are what validation would build; an
entry remembers a bounded number of event ids.
"""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from domain_builders import ROUTING, approval, client, contract, entry, master_data, project, reject, worker

from backbone.domain import billing
from backbone.domain.billing import Context, book_of, reprice
from backbone.domain.entries import SEEN_EVENT_IDS, Outcome, new_entry, record
from backbone.domain.pipeline import BillingPipeline
from backbone.domain.reference import ReferenceData

D = Decimal


def run(*events):
    pipeline = BillingPipeline(ROUTING)
    outputs = []
    for event in events:
        outputs += pipeline.handle(event)
    return pipeline, outputs


CAPPED = [
    client(),
    project(),
    worker(),
    contract(not_to_exceed=D("200")),
    *[e for n in range(4) for e in (entry(time_entry_id=f"E{n}"), approval(time_entry_id=f"E{n}"))],
    entry(time_entry_id="E1", revision=2, duration_seconds=600),
    approval(time_entry_id="E1", revision=2),
    reject(time_entry_id="E2"),
    entry(time_entry_id="E5", worker_id="W9"),
    approval(time_entry_id="E5"),
]
SCENARIOS = {
    "capped-with-adjustments-and-unapprovals": CAPPED,
    "cap-raised": [*CAPPED, contract(version=2, not_to_exceed=D("900"))],
    "project-closed": [*CAPPED, project(status="CLOSED")],
    "moved-between-projects": [
        *master_data(),
        project(project_id="P2"),
        contract(contract_id="K2", project_id="P2"),
        entry(),
        approval(),
        entry(revision=2, project_id="P2"),
        approval(revision=2),
    ],
}


def _totals(book):
    billed, at_risk = {}, {}
    for ledger in book.ledgers.values():
        if ledger.contract_id is not None:
            billed[ledger.contract_id] = billed.get(ledger.contract_id, D(0)) + ledger.billed
            at_risk[ledger.contract_id] = at_risk.get(ledger.contract_id, D(0)) + ledger.at_risk
    return {k: v for k, v in billed.items() if v}, {k: v for k, v in at_risk.items() if v}


@pytest.mark.parametrize("events", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_running_totals_equal_the_sum_over_the_ledgers_and_rebuild_from_them(events) -> None:
    pipeline, _ = run(*events)
    for project_id, book in pipeline.books.items():
        assert (book.billed_by_contract, book.at_risk_by_contract) == _totals(book)
        rebuilt = book_of(project_id, book.ledgers.values())
        assert (rebuilt.billed_by_contract, rebuilt.at_risk_by_contract) == _totals(book)


def _context(reference, at=datetime(2026, 11, 3, tzinfo=UTC)):
    return Context(reference=reference, routing=ROUTING, at=at)


def test_an_operation_reports_exactly_the_ledgers_it_changed() -> None:
    pipeline, _ = run(*CAPPED)
    book = pipeline.books["P1"]
    unchanged = reprice(book, _context(pipeline.reference))
    assert unchanged.events == () and unchanged.changed == ()
    pipeline.reference.apply(contract(version=2, not_to_exceed=D("900")))
    raised = reprice(book, _context(pipeline.reference))
    touched = {e.time_entry_id for e in raised.events if hasattr(e, "time_entry_id")}
    assert touched and {ledger.time_entry_id for ledger in raised.changed} >= touched
    assert all(book.ledgers[ledger.time_entry_id] is ledger for ledger in raised.changed)


def test_a_booked_change_always_reports_its_ledger() -> None:
    recorded = record(record(new_entry("E1"), entry()).state, approval())
    [change] = recorded.changes
    settled = billing.book_entry(billing.new_book("P1"), change, _context(ReferenceData.of(*master_data())))
    assert [ledger.time_entry_id for ledger in settled.changed] == ["E1"]
    assert settled.book.ledgers["E1"] is settled.changed[0]


def test_a_change_reaching_the_book_after_a_later_one_of_its_entry_changes_nothing() -> None:
    """A change can reach its book through the book-commands topic after a later one priced in place
    (topology/stages.py): the later one carries the entry's whole priced view, so the earlier is stale."""
    state = new_entry("E1")
    approved = record(record(state, entry()).state, approval()).changes
    longer = record(record(state, entry(revision=2, duration_seconds=7200)).state, approval(revision=2)).changes
    rejected = record(state, reject(revision=2)).changes
    (first,), (second,), (third,) = approved, longer, rejected
    assert (first.sequence, second.sequence, third.sequence) == (1, 2, 3)
    book, context = billing.new_book("P1"), _context(ReferenceData.of(*master_data()))

    in_order = [billing.book_entry(book, change, context) for change in (first, third)]
    # revision 1 billed; revision 2 approved, then rejected: back to revision 1, which the book already prices
    assert billing.net_billed(e for settled in in_order for e in settled.events) == {"E1": D("150.00")}
    late = billing.book_entry(book, second, context)
    assert late.events == () and late.changed == ()
    assert book.ledgers["E1"].sequence == 3 and book.ledgers["E1"].billed == D("150.00")


def test_a_change_without_a_number_is_always_priced() -> None:
    """Changes written before they were numbered (sequence 0) are priced as they come, as before."""
    state = new_entry("E1")
    (first,) = record(record(state, entry()).state, approval()).changes
    (rejected,) = record(state, reject()).changes
    book, context = billing.new_book("P1"), _context(ReferenceData.of(*master_data()))
    billing.book_entry(book, rejected, context)
    assert billing.book_entry(book, first.model_copy(update={"sequence": 0}), context).events  # billed again


def test_an_operation_that_fails_half_way_leaves_the_book_as_it_was() -> None:
    pipeline, _ = run(*CAPPED)
    book = pipeline.books["P1"]
    before = {k: billing._snapshot(v) for k, v in book.ledgers.items()}
    totals = (dict(book.billed_by_contract), dict(book.at_risk_by_contract))
    # a rate so large that no amount fits the working precision: pricing raises in the middle of settling
    # (the model refuses it as input; copied in unvalidated, it stands for a rule that fails half-way)
    pipeline.reference.apply(contract(version=2).model_copy(update={"default_hourly_rate": D("1E+100")}))
    with pytest.raises(ArithmeticError):
        reprice(book, _context(pipeline.reference))
    assert {k: billing._snapshot(v) for k, v in book.ledgers.items()} == before
    assert (book.billed_by_contract, book.at_risk_by_contract) == totals
    # and the book still works once the data is fixed
    pipeline.reference.apply(contract(version=2, not_to_exceed=D("900")))
    assert reprice(book, _context(pipeline.reference)).events


def test_a_failed_booking_of_a_new_entry_leaves_no_ledger_behind() -> None:
    unpriceable = contract().model_copy(update={"default_hourly_rate": D("1E+100")})  # unvalidated: see above
    reference = ReferenceData.of(client(), project(), worker(), unpriceable)
    recorded = record(record(new_entry("E1"), entry()).state, approval())
    book = billing.new_book("P1")
    with pytest.raises(ArithmeticError):
        billing.book_entry(book, recorded.changes[0], _context(reference))
    assert book.ledgers == {} and book.billed_by_contract == {}


@pytest.mark.parametrize("events", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_outputs_built_without_validation_are_what_validation_builds(events) -> None:
    _, outputs = run(*events)
    assert outputs
    for event in outputs:
        validated = type(event).model_validate(event.model_dump())
        assert validated == event
        assert validated.model_dump_json() == event.model_dump_json()


def test_the_context_instant_is_normalised_to_utc() -> None:
    local = datetime(2026, 11, 3, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    at = _context(ReferenceData(), at=local).at
    assert at == local and at.tzinfo is UTC
    with pytest.raises(ValueError, match="aware"):
        _context(ReferenceData(), at=datetime(2026, 11, 3))


def test_an_entry_remembers_its_latest_event_ids_only() -> None:
    state = new_entry("E1")
    record(state, entry(event_id="first"))
    for n in range(SEEN_EVENT_IDS):
        record(state, approval(event_id=f"decision-{n}"))
    assert len(state.seen_event_ids) == SEEN_EVENT_IDS
    assert "first" not in state.seen_event_ids
    assert record(state, approval(event_id=f"decision-{SEEN_EVENT_IDS - 1}")).outcome == Outcome.DUPLICATE


def test_a_duplicate_older_than_the_window_changes_nothing() -> None:
    state = new_entry("E1")
    first = entry(event_id="first")
    record(state, first)
    record(state, approval(event_id="approved"))
    for n in range(SEEN_EVENT_IDS):
        record(state, approval(event_id=f"again-{n}"))
    again = record(state, first)
    assert again.outcome == Outcome.APPLIED and again.changes == ()
