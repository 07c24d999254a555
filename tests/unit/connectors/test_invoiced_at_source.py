"""The trackers' "already invoiced" columns reach the canonical time entry, so history imported from a
tracker that invoiced it is never billed again (issue 10 part 6).

Harvest `Invoiced?` (CSV) and `is_billed` / `invoice` (API), Clockify `Invoiced` / `Invoice ID`;
Toggl exports have no such column, so their entries say nothing (`None`). An invoiced entry the source
did not decide on counts as approved: the invoice settled it, and the topology needs an approved
revision to report it as already invoiced.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from backbone.domain.models import ApprovalDecision, Decision, TimeEntry
from producers.clockify import read_clockify
from producers.harvest import read_harvest
from producers.identity import EntryMapper
from producers.parsing import ImportReport, ReadOptions
from producers.toggl import read_toggl

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectors"
OPTIONS = ReadOptions(exported_at=datetime(2024, 4, 1, tzinfo=UTC), date_order="MDY")


def _read(reader, fixture: str) -> tuple[list[TimeEntry], dict[str, ApprovalDecision], ImportReport]:
    report = ImportReport()
    events = list(report.events_of(reader(FIXTURES / fixture, OPTIONS, EntryMapper())))
    entries = [e for e in events if isinstance(e, TimeEntry)]
    decisions = {e.time_entry_id: e for e in events if isinstance(e, ApprovalDecision)}
    return entries, decisions, report


def _invoicing(entries: list[TimeEntry]) -> list[tuple[bool | None, str | None]]:
    return [(e.invoiced_at_source, e.source_invoice_id) for e in entries]


def test_harvest_csv_invoiced_rows_are_marked_and_count_as_approved() -> None:
    entries, decisions, report = _read(read_harvest, "harvest_invoiced.csv")
    assert report.rejections == []
    assert _invoicing(entries) == [(True, None), (True, None), (False, None)]
    # approved in Harvest, approved by the invoice, approved in Harvest
    assert [decisions[e.time_entry_id].decision for e in entries] == [Decision.APPROVED] * 3
    assert decisions[entries[1].time_entry_id].comment == "invoiced in harvest"


def test_harvest_api_is_billed_carries_the_invoice_number() -> None:
    entries, _, report = _read(read_harvest, "harvest_invoiced_api.json")
    assert report.rejections == []
    assert _invoicing(entries) == [(True, "1001"), (False, None)]


def test_harvest_api_without_is_billed_says_nothing() -> None:
    entries, _, _ = _read(read_harvest, "harvest_time_entries.json")
    # the first entry says is_billed: false; the second omits the field
    assert _invoicing(entries)[:2] == [(False, None), (None, None)]


def test_clockify_invoiced_and_invoice_id_are_read_and_a_contradiction_is_rejected() -> None:
    entries, decisions, report = _read(read_clockify, "clockify_invoiced.csv")
    assert _invoicing(entries) == [(True, "INV-2024-031"), (True, None), (False, None)]
    assert [str(r) for r in report.rejections] == [
        "line 5: Invoice ID: names invoice 'INV-2024-032' but Invoiced says No"
    ]
    assert set(decisions) == {entries[0].time_entry_id, entries[1].time_entry_id}
    assert decisions[entries[0].time_entry_id].comment == "invoiced in clockify (INV-2024-031)"


def test_clockify_exports_without_the_columns_say_nothing() -> None:
    entries, _, _ = _read(read_clockify, "clockify_detailed_us.csv")
    assert entries and {e.invoiced_at_source for e in entries} == {None}


def test_toggl_exports_have_no_invoicing_column_and_say_nothing() -> None:
    entries, _, _ = _read(read_toggl, "toggl_detailed_bom_eur.csv")
    assert entries and _invoicing(entries) == [(None, None)] * len(entries)
