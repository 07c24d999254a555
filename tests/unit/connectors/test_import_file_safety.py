"""`backbone import` never silently damages a firm's data: each way a real export can be wrong is refused
with where and why, and each way it can merely be shaped differently is read correctly.

Fixtures (tests/fixtures/connectors/) are shaped like the exports that show each problem: a day-first
file whose dates are all ambiguous, one with a month-first date on its last line, a cp1252 file with
semicolons (German Excel), UTF-16 with tabs (Excel "Unicode text"), UTF-8 with one stray byte, short
rows, two clients with a same-named project. The .xlsx export is generated here with openpyxl.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from openpyxl import Workbook

from backbone.cli.main import cli

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectors"


def _import(*args: str) -> Result:
    return CliRunner().invoke(cli, ["import", *args, "--dry-run", "--exported-at", "2024-11-01T00:00:00Z"])


def _entries(result: Result) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return [e for e in events if e["event_type"] == "time-entry"]


def _problem_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("line ")]


# --- date order --------------------------------------------------------------------------------


def test_a_file_whose_dates_are_all_ambiguous_is_refused_without_date_order() -> None:
    result = _import("harvest", str(FIXTURES / "harvest_dmy_ambiguous.csv"))
    assert result.exit_code == 2
    assert _entries(result) == []
    assert "all 3 slashed dates could be day-first or month-first" in result.stderr
    assert "pass --date-order DMY" in result.stderr


def test_the_given_date_order_reads_ambiguous_dates() -> None:
    result = _import("harvest", str(FIXTURES / "harvest_dmy_ambiguous.csv"), "--date-order", "DMY")
    assert result.exit_code == 0, result.stderr
    assert [e["work_date"] for e in _entries(result)] == ["2024-03-04", "2024-03-05", "2024-03-11"]


def test_the_date_order_is_detected_from_a_day_above_twelve(tmp_path: Path) -> None:
    rejects = str(tmp_path / "rejects.jsonl")
    result = _import("clockify", str(FIXTURES / "clockify_detailed_dmy.csv"), "--skip-invalid", "--rejects", rejects)
    assert result.exit_code == 0, result.stderr
    assert "dates are day-first (DMY)" in result.stderr
    assert [e["work_date"] for e in _entries(result)] == ["2024-10-15", "2024-10-16", "2024-10-17"]


def test_a_month_first_date_at_the_end_of_a_day_first_file_refuses_it_naming_the_line() -> None:
    result = _import("clockify", str(FIXTURES / "clockify_dmy_contradiction.csv"))
    assert result.exit_code == 2
    assert _entries(result) == []
    assert _problem_lines(result) == [
        "line 6: start date: '10/29/2024' can only be month-first (MM/DD/YYYY), "
        "contradicting the 6 day-first dates elsewhere in the file",
        "line 6: end date: '10/29/2024' can only be month-first (MM/DD/YYYY), "
        "contradicting the 6 day-first dates elsewhere in the file",
    ]


def test_skip_invalid_does_not_skip_a_date_contradiction() -> None:
    result = _import("clockify", str(FIXTURES / "clockify_dmy_contradiction.csv"), "--skip-invalid")
    assert result.exit_code == 2
    assert _entries(result) == []


def test_dates_contradicting_the_given_order_refuse_the_file() -> None:
    result = _import("clockify", str(FIXTURES / "clockify_dmy_contradiction.csv"), "--date-order", "MDY")
    assert result.exit_code == 2
    assert sorted({line.split(":")[0] for line in _problem_lines(result)}) == ["line 2", "line 3", "line 5"]
    assert "contradicting --date-order MDY" in result.stderr


# --- encodings ------------------------------------------------------------------------------------


def test_a_cp1252_export_is_detected_and_read_without_mojibake() -> None:
    result = _import("harvest", str(FIXTURES / "harvest_cp1252_semicolon.csv"))
    assert result.exit_code == 0, result.stderr
    assert "cp1252 (detected" in result.stderr
    entries = _entries(result)
    assert [e["notes"] for e in entries] == ["Kosten über 500 €", "Spesen 20 € für Anfahrt"]
    assert entries[0]["project_id"] == "harvest:client:Müller & Söhne GmbH:project:MS-01"
    assert [e["duration_seconds"] for e in entries] == [5400, 8100]


def test_a_wrong_encoding_given_is_reported_with_the_line_of_the_first_bad_byte() -> None:
    result = _import("harvest", str(FIXTURES / "harvest_cp1252_semicolon.csv"), "--encoding", "utf-8")
    assert result.exit_code == 2
    assert _problem_lines(result)[0].startswith("line 2: (encoding): byte 0xfc cannot be decoded as utf-8")


def test_an_unknown_encoding_name_is_an_error_not_a_traceback() -> None:
    result = _import("harvest", str(FIXTURES / "harvest_cp1252_semicolon.csv"), "--encoding", "klingon")
    assert result.exit_code == 2
    assert "--encoding 'klingon' is not an encoding" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_stray_byte_in_a_utf8_file_is_reported_with_its_line_before_anything_is_read() -> None:
    result = _import("harvest", str(FIXTURES / "harvest_utf8_stray_byte.csv"))
    assert result.exit_code == 2
    assert _entries(result) == []
    assert _problem_lines(result) == [
        "line 4: (encoding): byte 0x80 cannot be decoded as utf-8; nothing was imported. "
        "Pass --encoding NAME with the export's encoding (e.g. cp1252), or fix the byte"
    ]
    assert isinstance(result.exception, SystemExit)


def test_a_utf16_tab_separated_export_is_read() -> None:
    result = _import("toggl", str(FIXTURES / "toggl_utf16_tabs.csv"))
    assert result.exit_code == 0, result.stderr
    assert "utf-16-le, tab-separated" in result.stderr
    assert [(e["worker_id"], e["notes"], e["duration_seconds"]) for e in _entries(result)] == [
        ("toggl:worker:jm@example.com", "Planung für 2 €", 5400),
        ("toggl:worker:jm@example.com", "Zwischengespräch", 2700),
    ]


# --- shapes -----------------------------------------------------------------------------------


def test_semicolons_and_short_rows_missing_only_optional_trailing_columns_are_read() -> None:
    result = _import("toggl", str(FIXTURES / "toggl_semicolon_short_rows.csv"))
    assert result.exit_code == 0, result.stderr
    assert "semicolon-separated" in result.stderr
    assert [(e["work_date"], e["duration_seconds"]) for e in _entries(result)] == [
        ("2024-03-04", 5400),
        ("2024-03-05", 2700),
        ("2024-03-06", 900),
    ]


def test_a_short_row_missing_a_required_column_is_an_error() -> None:
    result = _import("toggl", str(FIXTURES / "toggl_short_row_missing_required.csv"))
    assert result.exit_code == 2
    assert _problem_lines(result) == [
        "line 3: (record): has 8 fields, the header has 14; the required start time is missing"
    ]


TOGGL_HEADER = (
    "User,Email,Client,Project,Task,Description,Billable,Start date,Start time,End date,End time,Duration,Amount (EUR)"
)


WORKBOOK_ROWS: list[list[object]] = [
    [name for name in TOGGL_HEADER.split(",")],
    ["Ann Lee", "ann@example.com", "Acme", "Website", None, "Typed cells", True, date(2024, 3, 4), time(9, 0)],
    ["Ann Lee", "ann@example.com", "Globex", "Website", "Copy", "Text cells", "No", "25/03/2024", "14:00:00"],
    [None] * 13,  # an empty row, as spreadsheets keep them
    ["Ann Lee", "ann@example.com", "Globex", "Website", None, "Datetime", "No", datetime(2024, 3, 26), time(8)],
]
WORKBOOK_ENDS: list[list[object]] = [
    [],
    [date(2024, 3, 4), time(10, 30), timedelta(hours=1, minutes=30), 150.1],
    ["25/03/2024", "14:45:00", "00:45:00", None],
    [],
    [None, None, "0:15:00"],
]


def _toggl_workbook(path: Path) -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row, (start, end) in enumerate(zip(WORKBOOK_ROWS, WORKBOOK_ENDS, strict=True), start=1):
        for column, value in enumerate([*start, *end], start=1):
            sheet.cell(row=row, column=column, value=value)
    book.save(path)
    return path


def test_an_xlsx_export_is_read_row_by_row(tmp_path: Path) -> None:
    result = _import("toggl", str(_toggl_workbook(tmp_path / "toggl.xlsx")))
    assert result.exit_code == 0, result.stderr
    assert "an .xlsx workbook" in result.stderr
    assert [(e["project_id"], e["work_date"], e["duration_seconds"], e["billable"]) for e in _entries(result)] == [
        ("toggl:client:Acme:project:Website", "2024-03-04", 5400, True),
        ("toggl:client:Globex:project:Website", "2024-03-25", 2700, False),
        ("toggl:client:Globex:project:Website", "2024-03-26", 900, False),
    ]


def test_an_xlsx_with_an_invalid_row_names_its_spreadsheet_row(tmp_path: Path) -> None:
    workbook = _toggl_workbook(tmp_path / "toggl.xlsx")
    from openpyxl import load_workbook

    book = load_workbook(workbook)
    book.active["L5"] = "a while"  # type: ignore[index]
    book.save(workbook)
    result = _import("toggl", str(workbook))
    assert result.exit_code == 2
    assert _problem_lines(result) == ["line 5: Duration: 'a while' is not a number"]


@pytest.mark.parametrize(
    ("importer", "fixture", "looks_like"),
    [
        ("clockify", "toggl_detailed_12h.csv", "toggl"),
        ("toggl", "clockify_detailed_us.csv", "clockify"),
        ("harvest", "clockify_detailed_dmy.csv", "clockify"),
        ("toggl", "harvest_detailed_eu.csv", "harvest"),
    ],
    ids=["toggl-to-clockify", "clockify-to-toggl", "clockify-to-harvest", "harvest-to-toggl"],
)
def test_another_trackers_export_is_refused_naming_the_tracker(importer: str, fixture: str, looks_like: str) -> None:
    result = _import(importer, str(FIXTURES / fixture), "--date-order", "MDY")
    assert result.exit_code == 2
    assert _entries(result) == []
    assert f"this looks like a {looks_like.title()} export" in result.stderr
    assert f"use `backbone import {looks_like}`" in result.stderr


def test_a_tracker_export_is_refused_by_the_erp_importer() -> None:
    result = _import("erp", "--kind", "projects", str(FIXTURES / "toggl_detailed_12h.csv"))
    assert result.exit_code == 2
    assert "use `backbone import toggl`" in result.stderr


def test_a_file_that_is_no_time_export_is_refused_naming_the_missing_columns() -> None:
    result = _import("harvest", str(FIXTURES / "erp_workers.csv"))
    assert result.exit_code == 2
    assert "this is not a Harvest detailed time export: it has no date or spent date; no hours column" in result.stderr


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "toggl.csv"
    empty.write_bytes(b"")
    result = _import("toggl", str(empty))
    assert result.exit_code == 2
    assert "is empty (0 bytes)" in result.stderr


def test_a_header_only_file_is_a_warning_and_publishes_nothing() -> None:
    result = _import("clockify", str(FIXTURES / "clockify_header_only.csv"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "has a header but no records; nothing to import" in result.stderr


# --- project identity includes the client ----------------------------------------------------------


def test_same_named_projects_of_two_clients_are_two_projects() -> None:
    result = _import("toggl", str(FIXTURES / "toggl_two_clients_same_project.csv"))
    assert result.exit_code == 0, result.stderr
    assert [e["project_id"] for e in _entries(result)] == [
        "toggl:client:Acme:project:Website",
        "toggl:client:Globex:project:Website",
    ]


def test_the_identity_table_maps_by_client_and_project() -> None:
    result = _import(
        "toggl",
        str(FIXTURES / "toggl_two_clients_same_project.csv"),
        "--identity",
        str(FIXTURES / "identity_by_client.csv"),
    )
    assert result.exit_code == 0, result.stderr
    assert [e["project_id"] for e in _entries(result)] == ["P-ACME-WEB", "P-GLOBEX-WEB"]


def test_a_file_changed_after_validation_is_not_published(tmp_path: Path) -> None:
    from producers.importing import RefusedExportError, inspect_export
    from producers.parsing import ReadOptions

    export = tmp_path / "toggl.csv"
    export.write_bytes((FIXTURES / "toggl_detailed_bom_eur.csv").read_bytes())
    inspection = inspect_export(export, ReadOptions(exported_at=datetime(2024, 11, 1)), "toggl")
    inspection.ensure_unchanged(export)
    with export.open("a") as handle:
        handle.write(
            "Peter Tester,peter.test@email.test,,Late,,,No,2024-03-05,10:00:00,2024-03-05,11:00:00,01:00:00,,\n"
        )
    with pytest.raises(RefusedExportError, match="changed while it was being imported"):
        inspection.ensure_unchanged(export)
