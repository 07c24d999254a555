"""Reading exports: encodings, separators and streaming (`producers.tabular`), the date order a file's
own dates settle (`producers.dates`) and which tracker a header belongs to (`producers.signatures`)."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import pytest

from producers import tabular
from producers.dates import DateOrderError, DateOrderEvidence, reading_of
from producers.parsing import normalise_header, parse_date
from producers.signatures import SignatureError, check_signature, looks_like
from producers.tabular import ExportReadError, UndecodableError, decoded_lines, detect_table, table_records

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectors"


@pytest.mark.parametrize(
    ("fixture", "encoding", "bom", "delimiter"),
    [
        ("toggl_detailed_12h.csv", "utf-8", 0, ","),
        ("harvest_detailed_eu.csv", "utf-8", 3, ","),
        ("harvest_cp1252_semicolon.csv", "cp1252", 0, ";"),
        ("toggl_utf16_tabs.csv", "utf-16-le", 2, "\t"),
        ("toggl_semicolon_short_rows.csv", "utf-8", 0, ";"),
        ("harvest_utf8_stray_byte.csv", "utf-8", 0, ","),
    ],
    ids=["plain-utf8", "utf8-bom", "cp1252-detected", "utf16-bom-tabs", "semicolons", "utf8-with-a-stray-byte"],
)
def test_format_detection(fixture: str, encoding: str, bom: int, delimiter: str) -> None:
    table = detect_table(FIXTURES / fixture)
    assert (table.kind, table.encoding, table.bom, table.delimiter) == ("csv", encoding, bom, delimiter)


def test_a_given_encoding_wins_over_detection() -> None:
    table = detect_table(FIXTURES / "harvest_cp1252_semicolon.csv", "latin-1")
    assert (table.encoding, table.detected_encoding) == ("latin-1", False)


def test_a_workbook_is_recognised_by_its_zip_signature_whatever_its_name(tmp_path: Path) -> None:
    disguised = tmp_path / "export.csv"
    disguised.write_bytes(b"PK\x03\x04rest of a zip")
    assert detect_table(disguised).kind == "xlsx"
    with pytest.raises(ExportReadError, match=r"cannot be read as an \.xlsx workbook"):
        list(table_records(disguised, detect_table(disguised)))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "cp1252"], ids=["utf8", "utf16", "cp1252"])
def test_an_undecodable_byte_is_placed_on_its_line_across_chunk_boundaries(
    encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tabular, "CHUNK", 7)  # many chunk boundaries, some inside a line
    good = "".join(f"Zeile {n}: Müller\n" for n in range(1, 9)).encode(encoding)
    bad = {"utf-8": b"\xff", "utf-16-le": b"\x00\xdc", "cp1252": b"\x81"}[encoding]
    with pytest.raises(UndecodableError) as raised:
        list(decoded_lines(io.BytesIO(good + "x".encode(encoding) + bad + "\n".encode(encoding)), encoding))
    assert raised.value.line == 9
    assert str(raised.value).startswith(f"line 9: (encoding): byte 0x{bad[0]:02x} cannot be decoded as {encoding}")


def test_lines_are_decoded_as_they_stream() -> None:
    class CountingReads(io.BytesIO):
        reads = 0

        def read(self, size: int | None = -1) -> bytes:
            CountingReads.reads += 1
            return super().read(size)

    source = CountingReads(b"a,b\n" + b"1,2\n" * (4 * tabular.CHUNK))
    lines = decoded_lines(source, "utf-8")
    assert next(lines) == "a,b\n"
    assert CountingReads.reads == 1, "the first line must not wait for the whole file"


def test_csv_records_keep_physical_line_numbers_through_quoted_newlines(tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    export.write_bytes('a;b\r\n1;"x\r\ny"\r\n2;z\r\n'.encode("utf-16"))
    records = list(table_records(export, detect_table(export)))
    assert records == [(1, ["a", "b"]), (2, ["1", "x\r\ny"]), (4, ["2", "z"])]


# --- date order --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reading"),
    [
        ("25/03/2024", "DMY"),
        ("03/25/2024", "MDY"),
        ("04/03/2024", "either"),
        ("03/03/2024", "same"),
        ("13/15/2024", "neither"),
        ("4-3-24", "either"),
        ("2024-03-04", None),
        ("04.03.2024", None),
        ("Fieldwork", None),
    ],
    ids=[
        "day-above-12-is-day-first",
        "day-above-12-second-is-month-first",
        "both-at-most-12-is-ambiguous",
        "equal-parts-read-the-same",
        "impossible-either-way",
        "short-year-dashes",
        "iso-is-no-evidence",
        "dotted-is-always-day-first",
        "not-a-date",
    ],
)
def test_what_one_date_says_about_the_order(text: str, reading: str | None) -> None:
    assert reading_of(text) == reading


def _evidence(*dates: str) -> DateOrderEvidence:
    evidence = DateOrderEvidence()
    for line, text in enumerate(dates, start=2):
        evidence.add(line, "date", text)
    return evidence


@pytest.mark.parametrize(
    ("dates", "given", "order"),
    [
        (("04/03/2024", "25/03/2024"), None, "DMY"),
        (("04/03/2024", "03/25/2024"), None, "MDY"),
        (("04/03/2024",), "DMY", "DMY"),
        (("2024-03-04", "03/03/2024"), None, None),
        ((), None, None),
    ],
    ids=["one-day-first-date-decides", "one-month-first-date-decides", "given-order", "no-ambiguous-dates", "none"],
)
def test_the_order_a_file_settles(dates: tuple[str, ...], given: str | None, order: str | None) -> None:
    assert _evidence(*dates).resolve(given) == order  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dates", "given", "message", "lines"),
    [
        (("04/03/2024", "05/03/2024"), None, "all 2 slashed dates could be", []),
        (("25/03/2024", "26/03/2024", "03/27/2024"), None, "1 dates contradict the date order DMY", ["line 4"]),
        (("25/03/2024", "04/03/2024"), "MDY", "1 dates contradict the date order MDY", ["line 2"]),
    ],
    ids=["all-ambiguous-without-order", "minority-contradicts-majority", "contradicts-given-order"],
)
def test_the_file_is_refused_when_its_dates_do_not_settle_one_order(
    dates: tuple[str, ...], given: str | None, message: str, lines: list[str]
) -> None:
    with pytest.raises(DateOrderError, match=message) as raised:
        _evidence(*dates).resolve(given)  # type: ignore[arg-type]
    assert [problem.split(":")[0] for problem in raised.value.problems] == lines
    assert "--date-order" in raised.value.hint


def test_parse_date_never_guesses_without_an_order() -> None:
    assert parse_date("2024-03-04") == date(2024, 3, 4)
    assert parse_date("03/03/2024") == date(2024, 3, 3)
    with pytest.raises(ValueError, match="could be day-first or month-first"):
        parse_date("04/03/2024")
    with pytest.raises(ValueError, match="not a YYYY-MM-DD date"):
        parse_date("04/03/2024", "YMD")


# --- which tracker wrote it ------------------------------------------------------------------------


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return [normalise_header(name) for name in next(csv.reader(handle))]


@pytest.mark.parametrize(
    ("fixture", "tracker"),
    [
        ("harvest_detailed_eu.csv", "harvest"),
        ("harvest_detailed_variant.csv", "harvest"),
        ("toggl_detailed_12h.csv", "toggl"),
        ("toggl_detailed_bom_eur.csv", "toggl"),
        ("toggl_detailed_variant.csv", "toggl"),
        ("clockify_detailed_us.csv", "clockify"),
        ("clockify_detailed_dmy.csv", "clockify"),
        ("clockify_no_billable.csv", "clockify"),
        ("clockify_activity.csv", "clockify"),
        ("erp_workers.csv", None),
        ("identity.csv", None),
    ],
    ids=lambda value: str(value),
)
def test_the_header_tells_the_tracker(fixture: str, tracker: str | None) -> None:
    assert looks_like(_header(FIXTURES / fixture)) == tracker


def test_every_importer_accepts_its_own_fixtures_and_refuses_the_others() -> None:
    for fixture, tracker in [("harvest_detailed_eu.csv", "harvest"), ("toggl_detailed_12h.csv", "toggl")]:
        check_signature(tracker, _header(FIXTURES / fixture))
        with pytest.raises(SignatureError, match=f"looks like a {tracker.title()} export"):
            check_signature("clockify", _header(FIXTURES / fixture))
    check_signature("erp", _header(FIXTURES / "erp_workers.csv"))


def test_an_old_binary_excel_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    old = tmp_path / "export.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64)
    with pytest.raises(ExportReadError, match=r"old binary Excel workbook \(\.xls\); save it as \.xlsx or CSV"):
        detect_table(old)


def test_year_first_order_is_contradicted_by_any_year_last_date() -> None:
    with pytest.raises(DateOrderError, match="2 dates contradict the date order YMD") as raised:
        _evidence("2024-03-04", "04/03/2024", "25/03/2024").resolve("YMD")
    assert raised.value.problems == [
        "line 3: date: '04/03/2024' has the year last, contradicting --date-order YMD",
        "line 4: date: '25/03/2024' can only be day-first (DD/MM/YYYY), contradicting --date-order YMD",
    ]


@pytest.mark.parametrize("chunk", [3, 4, 5, 64 * 1024], ids=lambda size: f"chunk-{size}")
def test_lines_may_end_in_crlf_lf_or_a_lone_cr_even_across_chunks(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tabular, "CHUNK", chunk)
    text = b'a,b\r1,"x\r\ny"\r\n2,z\n3,w\r'
    assert list(decoded_lines(io.BytesIO(text), "utf-8")) == ["a,b\r", '1,"x\r\n', 'y"\r\n', "2,z\n", "3,w\r"]


@pytest.mark.parametrize("chunk", [3, 4, 5, 64 * 1024], ids=lambda size: f"chunk-{size}")
def test_only_cr_and_lf_end_lines_not_the_other_unicode_breaks(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tabular, "CHUNK", chunk)
    text = "a,b\n1,x\x0by\x0cz\r\n2,\x1c\x1d\x1e\x85\u2028\u2029\n3,w\r\n".encode()
    expected = ["a,b\n", "1,x\x0by\x0cz\r\n", "2,\x1c\x1d\x1e\x85\u2028\u2029\n", "3,w\r\n"]
    assert list(decoded_lines(io.BytesIO(text), "utf-8")) == expected


def test_a_mac_excel_csv_with_cr_line_ends_is_read(tmp_path: Path) -> None:
    export = tmp_path / "mac.csv"
    export.write_bytes(b"Date;Hours\r2024-03-04;1,5\r2024-03-05;2\r")
    assert list(table_records(export, detect_table(export))) == [
        (1, ["Date", "Hours"]),
        (2, ["2024-03-04", "1,5"]),
        (3, ["2024-03-05", "2"]),
    ]


def test_a_trimmed_export_with_the_required_columns_is_accepted_by_any_importer_that_can_read_it() -> None:
    trimmed = ["user", "email", "project", "start date", "start time", "end date", "end time"]
    assert looks_like(trimmed) is None
    check_signature("toggl", trimmed)
    check_signature("clockify", trimmed)
    with pytest.raises(SignatureError, match="not a Harvest detailed time export: it has no date or spent date"):
        check_signature("harvest", trimmed)
