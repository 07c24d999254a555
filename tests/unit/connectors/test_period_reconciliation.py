"""Period imports (issue 10 part 3): a re-export is the tracker's truth for its period, so after any
number of re-exports the billed amount is the last export's, whatever ids edits gave the entries.

The reconciliation is pure (`producers.periods.Reconciliation`); here its ledger lives in memory and its
output is billed by the pure core (`BillingPipeline`), the same code the topology runs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from backbone.domain.billing import net_billed
from backbone.domain.models import ApprovalDecision, BusinessException, Event, ExceptionKind, TimeEntry
from backbone.domain.pipeline import BillingPipeline
from backbone.errors import InvalidInputError
from producers.harvest import read_harvest
from producers.identity import EntryMapper, IdentityMap
from producers.importing import accepted_events, validate
from producers.parsing import ReadOptions, revision_at
from producers.periods import LedgerEntry, Period, Reconciliation, Scope, published_id, records_of, within
from tests.unit.domain.domain_builders import ROUTING, client, contract, project, worker

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "periods"
MARCH = Period(date(2024, 3, 1), date(2024, 3, 31))
IDENTITY = IdentityMap.from_rows(
    [
        {"kind": "worker", "attribute": "id", "value": "E-17", "canonical_id": "W1"},
        {"kind": "project", "attribute": "code", "value": "WR-01", "canonical_id": "P1"},
    ]
)
MASTER_DATA = [client(), project(), worker(), contract(effective_from=date(2024, 1, 1))]
D = Decimal


def _events(fixture: str, exported_at: datetime) -> list[Event]:
    options = ReadOptions(exported_at=exported_at, date_order="YMD")
    return list(accepted_events(within(MARCH)(read_harvest(FIXTURES / fixture, options, EntryMapper(IDENTITY)))))


class Tracker:
    """Imports of one scope: the ledger the imports leave behind and every event they published."""

    def __init__(self) -> None:
        self.ledger: dict[str, LedgerEntry] = {}
        self.published: list[Event] = []

    def import_period(self, fixture: str, exported_at: datetime) -> Reconciliation:
        reconciliation = Reconciliation(MARCH, dict(self.ledger), exported_at)
        self.published += reconciliation.publishable(_events(fixture, exported_at))
        self.ledger.update(reconciliation.updates)
        return reconciliation

    def billed(self) -> tuple[dict[str, Decimal], list[Event]]:
        pipeline = BillingPipeline(ROUTING)
        outputs = [out for event in [*MASTER_DATA, *self.published] for out in pipeline.handle(event)]
        return {k: v for k, v in net_billed(outputs).items() if v}, outputs


def _day(at: int) -> datetime:
    return datetime(2024, 4, at, 8, tzinfo=UTC)


def _billed_by_notes(tracker: Tracker) -> dict[str, Decimal]:
    nets, _ = tracker.billed()
    latest = {e.time_entry_id: e for e in tracker.published if isinstance(e, TimeEntry)}
    return {latest[entry_id].notes or "": amount for entry_id, amount in nets.items()}


def test_a_re_export_with_one_edited_and_one_removed_entry_bills_the_re_export() -> None:
    tracker = Tracker()
    tracker.import_period("harvest_march_v1.csv", _day(1))
    assert sum(_billed_by_notes(tracker).values()) == D("750.00")  # 5 h at 150

    second = tracker.import_period("harvest_march_v2.csv", _day(2))

    # Wireframes' note was edited (a new id: the old one withdrawn), Checkout's hours changed (same id),
    # Review was removed, Deploy is unchanged, Hotfix is new
    assert _billed_by_notes(tracker) == {
        "Wireframes for the landing page": D("225.00"),
        "Checkout": D("450.00"),
        "Deploy": D("75.00"),
        "Hotfix": D("150.00"),
    }
    assert (second.withdrawn, second.unchanged) == (2, 1)


def test_any_number_of_re_exports_end_at_the_last_one() -> None:
    tracker = Tracker()
    for fixture, day in [("harvest_march_v1.csv", 1), ("harvest_march_v2.csv", 2), ("harvest_march_v3.csv", 3)]:
        tracker.import_period(fixture, _day(day))
    again = tracker.import_period("harvest_march_v3.csv", _day(4))

    assert _billed_by_notes(tracker) == {
        "Wireframes for the landing page": D("225.00"),
        "Checkout (two sessions)": D("450.00"),
        "Review": D("150.00"),  # removed in v2, back in v3: billed again under a new id
    }
    # the same export twice publishes nothing the second time
    assert (again.withdrawn, again.unchanged, again.updates) == (0, 5, {})
    _, outputs = tracker.billed()
    reports = [e for e in outputs if isinstance(e, BusinessException) and e.kind == ExceptionKind.INVOICED_AT_SOURCE]
    assert len(reports) == 1 and reports[0].amount_at_risk is None


def test_an_entry_withdrawn_and_back_again_gets_a_new_id_because_a_deletion_is_terminal() -> None:
    tracker = Tracker()
    tracker.import_period("harvest_march_v1.csv", _day(1))
    tracker.import_period("harvest_march_v2.csv", _day(2))
    tracker.import_period("harvest_march_v3.csv", _day(3))
    review = [e for e in tracker.published if isinstance(e, TimeEntry) and e.notes == "Review"]
    first_id = review[0].time_entry_id
    assert [(e.time_entry_id, e.deleted) for e in review] == [
        (first_id, False),
        (first_id, True),
        (published_id(first_id, 2), False),
    ]


def test_a_changed_entry_outranks_what_was_published_even_from_an_older_export() -> None:
    tracker = Tracker()
    tracker.import_period("harvest_march_v1.csv", _day(5))
    tracker.import_period("harvest_march_v2.csv", _day(1))  # an --exported-at before the first import's
    checkout = [e for e in tracker.published if isinstance(e, TimeEntry) and e.notes == "Checkout"]
    assert [e.revision for e in checkout] == [revision_at(_day(5)), revision_at(_day(5)) + 1]
    approvals = [e for e in tracker.published if isinstance(e, ApprovalDecision)]
    assert approvals[-1].revision == tracker.ledger[approvals[-1].time_entry_id].entry.revision
    assert _billed_by_notes(tracker)["Checkout"] == D("450.00")


def test_withdrawals_are_deletion_revisions_of_the_entry_as_published() -> None:
    tracker = Tracker()
    tracker.import_period("harvest_march_v1.csv", _day(1))
    reconciliation = Reconciliation(MARCH, dict(tracker.ledger), _day(2))
    withdrawn = list(reconciliation.withdrawals())  # an export of March that is empty now
    assert len(withdrawn) == 4
    for deletion in withdrawn:
        before = tracker.ledger[deletion.time_entry_id].entry
        assert deletion.deleted and deletion.revision > before.revision
        assert (deletion.project_id, deletion.work_date, deletion.duration_seconds) == (
            before.project_id,
            before.work_date,
            before.duration_seconds,
        )


def test_entries_of_other_dates_are_left_alone() -> None:
    tracker = Tracker()
    tracker.import_period("harvest_march_v1.csv", _day(1))
    first_week = Reconciliation(Period(date(2024, 3, 1), date(2024, 3, 5)), dict(tracker.ledger), _day(2))
    assert {e.work_date for e in first_week.withdrawals()} == {date(2024, 3, 4), date(2024, 3, 5)}


def test_a_row_outside_the_period_is_rejected_with_its_line() -> None:
    options = ReadOptions(exported_at=_day(1), date_order="YMD")
    outcomes = within(MARCH)(read_harvest(FIXTURES / "harvest_march_outside.csv", options, EntryMapper(IDENTITY)))
    checked = validate(outcomes)
    assert [str(r) for r in checked.shown] == [
        "line 3: work_date: 2024-04-01 is outside the period 2024-03-01..2024-03-31"
    ]


def test_the_ledger_record_round_trips() -> None:
    [entry, *_] = _events("harvest_march_v1.csv", _day(1))
    assert isinstance(entry, TimeEntry)
    record = LedgerEntry("base", entry, "print", incarnation=3, withdrawn=True)
    assert LedgerEntry.from_json("base", record.to_json()) == record


def test_records_are_regrouped_with_their_decisions() -> None:
    events = _events("harvest_march_v1.csv", _day(1))
    groups = list(records_of(events))
    assert len(groups) == 4 and all(len(g) == 2 and isinstance(g[1], ApprovalDecision) for g in groups)


@pytest.mark.parametrize("text", ["2024-03", "2024-03-31..2024-03-01", "march", "2024-03-01..2024-02-30"], ids=str)
def test_a_period_that_is_not_from_to_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        Period.parse(text)


def test_a_scope_keeps_its_partition_across_processes() -> None:
    # CRC-32, not Python's per-process salted hash: every import of the scope reads the same partition
    assert Scope("harvest", "acme").partition(3) == Scope("harvest", "acme").partition(3) == 1
    with pytest.raises(InvalidInputError):
        Scope("toggl", "a b|c")
