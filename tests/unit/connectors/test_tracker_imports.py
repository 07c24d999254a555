"""Each tracker's file import on its fixtures gives exactly the expected canonical events and rejections."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backbone.domain.models import ApprovalDecision, TimeEntry
from producers.clockify import read_clockify
from producers.harvest import read_harvest
from producers.identity import EntryMapper
from producers.parsing import ImportReport, Outcome, ReadOptions, revision_at
from producers.toggl import read_toggl

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectors"
EXPORTED = datetime(2024, 11, 1, tzinfo=UTC)
CSV_REVISION = revision_at(EXPORTED)
Reader = Callable[[Path, ReadOptions, EntryMapper], Iterator[Outcome]]


@dataclass(frozen=True)
class Case:
    reader: Reader
    fixture: str
    entries: list[tuple[Any, ...]]  # (worker_id, project_id, task_id, work_date, seconds, billable, deleted)
    approvals: list[str]  # decisions, in order
    rejected: list[str]  # "where: reason" prefixes
    date_order: str = "MDY"


def e(worker: str, project: str, task: str | None, day: str, seconds: int, billable: bool, deleted: bool = False):
    return (worker, project, task, day, seconds, billable, deleted)


H, T, C = "harvest", "toggl", "clockify"
CASES = {
    "harvest-csv-bom-decimal-comma-euro-labels": Case(
        read_harvest,
        "harvest_detailed_eu.csv",
        [
            e(
                f"{H}:worker:E-17",
                f"{H}:client:Big Company:project:WR-01",
                f"{H}:task:Design",
                "2024-03-04",
                5400,
                True,
            ),
            e(
                f"{H}:worker:E-17",
                f"{H}:client:Big Company:project:WR-01",
                f"{H}:task:Design",
                "2024-03-04",
                5400,
                True,
            ),
            e(
                f"{H}:worker:E-17",
                f"{H}:client:Big Company:project:WR-01",
                f"{H}:task:Development",
                "2024-03-05",
                7204500,
                True,
            ),
            e(
                f"{H}:worker:E-18",
                f"{H}:client:Example Client:project:Internal",
                f"{H}:task:Admin",
                "2024-03-05",
                900,
                False,
            ),
        ],
        ["APPROVED"],
        [
            "line 6: Date: '2024-31-05' is not a valid",
            "line 7: Hours: 'eins' is not a number",
            "line 8: (record): has 6 fields",
        ],
    ),
    "harvest-csv-no-employee-id-clock-hours-day-first": Case(
        read_harvest,
        "harvest_detailed_variant.csv",
        [
            e(
                f"{H}:worker:Anna Berg",
                f"{H}:client:Big Company:project:WR-01",
                f"{H}:task:Design",
                "2024-03-04",
                5400,
                True,
            ),
            e(
                f"{H}:worker:Anna Berg",
                f"{H}:client:Big Company:project:WR-01",
                f"{H}:task:Design",
                "2024-03-05",
                2700,
                True,
            ),
        ],
        ["APPROVED"],
        [],
        date_order="DMY",
    ),
    "harvest-api-json-is-closed-running-missing-update": Case(
        read_harvest,
        "harvest_time_entries.json",
        [
            e(f"{H}:worker:1782959", f"{H}:project:14307913", f"{H}:task:8083365", "2024-03-04", 5400, True),
            e(f"{H}:worker:1782960", f"{H}:project:14307914", None, "2024-03-05", 1199, False),
        ],
        ["APPROVED"],
        ["item 3: (record): entry 636709357 is still running", "item 4: (record): updated_at is missing"],
    ),
    "toggl-csv-12h-clock-durations": Case(
        read_toggl,
        "toggl_detailed_12h.csv",
        [
            e(
                f"{T}:worker:harry@tuttle.com",
                f"{T}:client:Sam Lowry:project:#HeatingRepair",
                None,
                "2022-01-06",
                7200,
                False,
            ),
            e(
                f"{T}:worker:harry@tuttle.com",
                f"{T}:client:Sam Lowry:project:#HeatingRepair",
                None,
                "2022-01-07",
                3600,
                False,
            ),
            e(
                f"{T}:worker:harry@tuttle.com",
                f"{T}:client:Sam Lowry:project:#HeatingRepair",
                None,
                "2022-01-12",
                5400,
                False,
            ),
            e(f"{T}:worker:harry@tuttle.com", f"{T}:client:Sam Lowry:project:orga", None, "2022-01-12", 3600, False),
            e(f"{T}:worker:harry@tuttle.com", f"{T}:client:Sam Lowry:project:orga", None, "2022-01-13", 9900, False),
            e(
                f"{T}:worker:harry@tuttle.com",
                f"{T}:client:Sam Lowry:project:#HeatingRepair",
                None,
                "2022-01-14",
                12600,
                False,
            ),
            e(f"{T}:worker:harry@tuttle.com", f"{T}:client:Sam Lowry:project:orga", None, "2022-01-14", 7500, False),
            e(
                f"{T}:worker:harry@tuttle.com",
                f"{T}:client:Sam Lowry:project:#HeatingRepair",
                None,
                "2022-01-19",
                1800,
                False,
            ),
            e(f"{T}:worker:harry@tuttle.com", f"{T}:client:Sam Lowry:project:orga", None, "2022-01-19", 4500, False),
            e(
                f"{T}:worker:harry@tuttle.com",
                f"{T}:client:Sam Lowry:project:#HeatingRepair",
                None,
                "2022-01-19",
                1200,
                False,
            ),
        ],
        [],
        [],
    ),
    "toggl-csv-bom-24h-zero-length": Case(
        read_toggl,
        "toggl_detailed_bom_eur.csv",
        [
            e(f"{T}:worker:peter.test@email.test", f"{T}:project:Project without Client", None, "2024-03-04", 0, False),
            e(
                f"{T}:worker:peter.test@email.test",
                f"{T}:client:Big Company:project:Project for Big Company",
                f"{T}:task:Task 1",
                "2024-03-04",
                3601,
                True,
            ),
        ],
        [],
        [],
    ),
    "toggl-csv-reordered-dotted-dates-no-duration": Case(
        read_toggl,
        "toggl_detailed_variant.csv",
        [
            e(f"{T}:worker:ann@example.com", f"{T}:client:Acme:project:Audit 2024", None, "2024-03-04", 5400, True),
            e(f"{T}:worker:ann@example.com", f"{T}:client:Acme:project:Audit 2024", None, "2024-03-04", 2700, True),
        ],
        [],
        ["line 4: End time: ends (2024-03-06 09:00:00) before it starts"],
    ),
    "toggl-api-json-deleted-running-webhook": Case(
        read_toggl,
        "toggl_time_entries.json",
        [
            e(f"{T}:worker:501", f"{T}:project:190001", None, "2024-03-04", 5400, True),
            e(f"{T}:worker:501", f"{T}:project:190001", f"{T}:task:42", "2024-03-05", 1200, False, True),
            e(f"{T}:worker:502", f"{T}:project:190002", None, "2024-03-07", 1800, True, True),
        ],
        [],
        ["item 3: (record): entry 3341000003 is still running"],
    ),
    "clockify-csv-us-dates-mixed-time-precision": Case(
        read_clockify,
        "clockify_detailed_us.csv",
        [
            e(f"{C}:worker:peter.test@email.test", f"{C}:project:Project without Client", None, "2024-03-04", 0, False),
            e(
                f"{C}:worker:peter.test@email.test",
                f"{C}:client:Big Company:project:Project for Big Company",
                f"{C}:task:Task 1",
                "2024-03-04",
                3601,
                True,
            ),
        ],
        [],
        [],
    ),
    "clockify-csv-eur-stress-string": Case(
        read_clockify,
        "clockify_detailed_eur.csv",
        [
            e(
                f"{C}:worker:peter.test@email.test",
                f"{C}:client:Real World Client:project:Real World Project",
                f"{C}:task:A giant task",
                "2024-10-15",
                1800,
                True,
            ),
        ],
        ["APPROVED"],  # Invoiced: Yes; the invoice settled it (producers.identity)
        [],
    ),
    "clockify-csv-month-13-rejected": Case(
        read_clockify,
        "clockify_bad_date.csv",
        [],
        [],
        ["line 2: Start Date: '13/15/2024' is not a valid MM/DD/YYYY date"],
    ),
    "clockify-csv-missing-billable-means-not-billable": Case(
        read_clockify,
        "clockify_no_billable.csv",
        [
            e(f"{C}:worker:peter.test@email.test", f"{C}:project:Project without Client", None, "2024-03-04", 0, False),
            e(
                f"{C}:worker:peter.test@email.test",
                f"{C}:client:Big Company:project:Project for Big Company",
                f"{C}:task:Task 1",
                "2024-03-04",
                3601,
                False,
            ),
        ],
        [],
        [],
    ),
    "clockify-csv-activity-instead-of-task": Case(
        read_clockify,
        "clockify_activity.csv",
        [
            e(f"{C}:worker:peter.test@email.test", f"{C}:project:Project without Client", None, "2024-03-04", 0, False),
            e(
                f"{C}:worker:peter.test@email.test",
                f"{C}:client:Big Company:project:Project for Big Company",
                f"{C}:task:Task 1",
                "2024-03-04",
                3601,
                True,
            ),
        ],
        [],
        [],
    ),
    "clockify-csv-day-first-decimal-duration-approval-states": Case(
        read_clockify,
        "clockify_detailed_dmy.csv",
        [
            e(
                f"{C}:worker:ann@example.com",
                f"{C}:client:Acme:project:Audit 2024",
                f"{C}:task:Fieldwork",
                "2024-10-15",
                5400,
                True,
            ),
            e(
                f"{C}:worker:ann@example.com",
                f"{C}:client:Acme:project:Audit 2024",
                f"{C}:task:Fieldwork",
                "2024-10-16",
                7200,
                True,
            ),
            e(
                f"{C}:worker:ann@example.com",
                f"{C}:client:Acme:project:Audit 2024",
                f"{C}:task:Fieldwork",
                "2024-10-17",
                900,
                True,
            ),
        ],
        ["APPROVED", "REJECTED"],
        ["line 5: Approval Status: approval state 'Maybe' is not one of"],
        date_order="DMY",
    ),
    "clockify-api-json-iso-durations-approvals": Case(
        read_clockify,
        "clockify_time_entries.json",
        [
            e(f"{C}:worker:u-1", f"{C}:project:p-1", f"{C}:task:t-1", "2024-10-15", 5400, True),
            e(f"{C}:worker:u-1", f"{C}:project:p-1", None, "2024-10-16", 2700, True),
            e(f"{C}:worker:u-2", f"{C}:project:p-2", None, "2024-10-18", 600, True),
        ],
        ["APPROVED", "REJECTED"],
        ["item 3: (record): entry 65f0a3 is still running"],
    ),
}


def _run(case: Case) -> tuple[list[TimeEntry], list[ApprovalDecision], ImportReport]:
    options = ReadOptions(exported_at=EXPORTED, date_order=case.date_order)  # type: ignore[arg-type]
    report = ImportReport()
    events = list(report.events_of(case.reader(FIXTURES / case.fixture, options, EntryMapper())))
    entries = [ev for ev in events if isinstance(ev, TimeEntry)]
    approvals = [ev for ev in events if isinstance(ev, ApprovalDecision)]
    assert len(entries) + len(approvals) == len(events)
    return entries, approvals, report


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_file_import_gives_the_expected_entries(case: Case) -> None:
    entries, _, _ = _run(case)
    got = [
        (x.worker_id, x.project_id, x.task_id, x.work_date.isoformat(), x.duration_seconds, x.billable, x.deleted)
        for x in entries
    ]
    assert got == case.entries


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_approvals_name_the_revision_of_their_entry(case: Case) -> None:
    entries, approvals, _ = _run(case)
    assert [a.decision.value for a in approvals] == case.approvals
    revisions = {(x.time_entry_id, x.revision) for x in entries}
    assert all((a.time_entry_id, a.revision) in revisions for a in approvals)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_rejection_names_its_place_and_reason(case: Case) -> None:
    entries, _, report = _run(case)
    assert len(report.rejections) == len(case.rejected)
    for rejection, expected in zip(report.rejections, case.rejected, strict=True):
        assert str(rejection).startswith(expected)
    assert report.records == len(entries) + len(report.rejections), "a record was neither published nor rejected"


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_entry_ids_are_unique_and_stable_across_reads(case: Case) -> None:
    first, _, _ = _run(case)
    again, _, _ = _run(case)
    ids = [x.time_entry_id for x in first]
    assert len(set(ids)) == len(ids)
    assert ids == [x.time_entry_id for x in again]


def test_csv_revisions_come_from_the_export_time() -> None:
    entries, _, _ = _run(CASES["toggl-csv-bom-24h-zero-length"])
    assert {x.revision for x in entries} == {CSV_REVISION}
    later = ReadOptions(exported_at=datetime(2024, 11, 2, tzinfo=UTC))
    report = ImportReport()
    events = list(report.events_of(read_toggl(FIXTURES / "toggl_detailed_bom_eur.csv", later, EntryMapper())))
    reread = [ev for ev in events if isinstance(ev, TimeEntry)]
    assert len(reread) == len(events)
    assert all(x.revision > CSV_REVISION for x in reread)
    assert [x.time_entry_id for x in reread] == [x.time_entry_id for x in entries]


def test_api_revisions_come_from_the_update_time_and_deletions_outrank_them() -> None:
    entries, _, _ = _run(CASES["toggl-api-json-deleted-running-webhook"])
    by_id = {x.time_entry_id: x for x in entries}
    assert by_id["toggl-3341000001"].revision == revision_at(datetime(2024, 3, 5, 1, 0, 5, tzinfo=UTC))
    assert by_id["toggl-3341000002"].revision == revision_at(datetime(2024, 3, 6, 10, tzinfo=UTC))
    assert by_id["toggl-3341000002"].deleted


def test_api_entries_keep_the_source_id() -> None:
    entries, _, _ = _run(CASES["harvest-api-json-is-closed-running-missing-update"])
    assert [x.time_entry_id for x in entries] == ["harvest-636709355", "harvest-636709356"]


def test_harvest_entries_sharing_an_external_reference_stay_two_entries(tmp_path: Path) -> None:
    # the URL links the Asana task the time was tracked against: a second day on it is a second entry
    csv = (
        "Date,Client,Project,Task,Notes,Hours,First Name,Last Name,External Reference URL\n"
        "2024-03-04,Acme,Web,Dev,,1,Ann,Lee,https://app.asana.com/0/1/42\n"
        "2024-03-05,Acme,Web,Dev,,2,Ann,Lee,https://app.asana.com/0/1/42\n"
        "2024-03-05,Acme,Web,Dev,,2,Ann,Lee,https://app.asana.com/0/1/43\n"
    )
    path = tmp_path / "harvest.csv"
    path.write_text(csv, encoding="utf-8")
    options = ReadOptions(exported_at=EXPORTED, date_order="YMD")
    events = list(ImportReport().events_of(read_harvest(path, options, EntryMapper())))
    assert len({event.time_entry_id for event in events}) == 3


def test_identical_harvest_rows_are_two_entries() -> None:
    entries, _, _ = _run(CASES["harvest-csv-bom-decimal-comma-euro-labels"])
    assert entries[0].time_entry_id != entries[1].time_entry_id


def test_notes_survive_quotes_umlauts_and_backslashes() -> None:
    entries, _, _ = _run(CASES["clockify-csv-eur-stress-string"])
    assert entries[0].notes == "\\\\ 🔥 Special characters  ''''''`!@#$%^&*()_+\\-=\\[\\]{};':''\\\\|,.''<>\\/?~ \\\\\\"
