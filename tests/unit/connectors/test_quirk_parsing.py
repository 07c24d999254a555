"""Quirk parsers: every shape of number, duration, date, time and currency real exports write."""

from __future__ import annotations

import io
from datetime import date, time
from decimal import Decimal

import pytest

from producers.parsing import (
    CsvRow,
    Rejection,
    currency_in_header,
    parse_bool,
    parse_clock_time,
    parse_currency,
    parse_date,
    parse_decimal,
    parse_duration,
    parse_instant,
    read_csv,
    revision_at,
    rows_of,
    text_of,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("111.11", "111.11"),
        ("20,01", "20.01"),
        ("2.001,0", "2001.0"),
        ("1,234.56", "1234.56"),
        ("1,234,567", "1234567"),
        ("€ 1.250,50", "1250.50"),
        ("-5", "-5"),
        ("  0,25 ", "0.25"),
        ("1 234,50 EUR", "1234.50"),
        ("EUR 1.250,50", "1250.50"),
        ("1'234.50", "1234.50"),
        ("-€5", "-5"),
        ("1\u00a0234,5", "1234.5"),
        (".5", "0.5"),
    ],
    ids=[
        "dot",
        "decimal-comma",
        "eu-thousands",
        "us-thousands",
        "commas-only-thousands",
        "symbol",
        "negative",
        "blank-padded",
        "code-after-space-grouped",
        "code-before",
        "swiss-apostrophe",
        "sign-before-symbol",
        "nbsp-grouped",
        "leading-mark",
    ],
)
def test_decimals_in_every_locale(text: str, expected: str) -> None:
    assert parse_decimal(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["", "eins", "--"], ids=["empty", "word", "signs-only"])
def test_non_numbers_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        parse_decimal(text)


@pytest.mark.parametrize(
    "text",
    ["12abc3", "1O0", "\u0663", "1,,2", "5 h", "1..2", "+-3", "1.", "1  234", "12.3.4", "(5)"],
    ids=["letters-inside", "letter-o-for-zero", "arabic-digit", "double-comma", "unit-suffix", "double-dot",
         "two-signs", "trailing-mark", "double-space", "two-decimal-points", "parentheses"],
)  # fmt: skip
def test_text_around_digits_is_refused_not_dropped(text: str) -> None:
    """Dropping what is not a digit would read "12abc3" as 123: a wrong amount rather than an error."""
    with pytest.raises(ValueError, match="not a number"):
        parse_decimal(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT1H30M", 5400),
        ("PT45S", 45),
        ("PT0.5S", 1),
        ("P1DT1H", 90000),
        ("1:30", 5400),
        ("1:30:00", 5400),
        ("01:00:01", 3601),
        ("125:00:00", 450000),
        ("02:00:00 AM", 7200),
        ("12:20:00 AM", 1200),
        ("12:45:00 AM", 2700),
        ("01:15:00 PM", 47700),
        ("1.5", 5400),
        ("1,5", 5400),
        ("0.333", 1199),
        ("0", 0),
    ],
    ids=[
        "iso-hours-minutes",
        "iso-seconds",
        "iso-fraction-rounds-half-up",
        "iso-days",
        "clock-hm",
        "clock-hms",
        "clock-odd-second",
        "clock-over-24h",
        "toggl-12h-am",
        "toggl-12h-midnight-is-zero",
        "toggl-12h-45min",
        "toggl-12h-pm",
        "decimal-hours",
        "decimal-comma-hours",
        "hours-round-to-second",
        "zero",
    ],
)
def test_durations_normalise_to_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["PT", "1:75", "13:00:00 AM", "-1.5", "abc"],
    ids=["empty-iso", "minutes-over-59", "bad-12h", "negative-hours", "word"],
)
def test_bad_durations_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "order", "expected"),
    [
        ("2024-10-15", "MDY", date(2024, 10, 15)),
        ("2024-10-15", "DMY", date(2024, 10, 15)),
        ("10/15/2024", "MDY", date(2024, 10, 15)),
        ("15/10/2024", "DMY", date(2024, 10, 15)),
        ("15.10.2024", "MDY", date(2024, 10, 15)),
        ("03/04/2024", "MDY", date(2024, 3, 4)),
        ("03/04/2024", "DMY", date(2024, 4, 3)),
        ("2024/10/15", "MDY", date(2024, 10, 15)),
    ],
    ids=["iso", "iso-ignores-order", "us", "eu", "dotted-is-day-first", "ambiguous-us", "ambiguous-eu", "iso-slashed"],
)
def test_dates_follow_the_configured_order(text: str, order: str, expected: date) -> None:
    assert parse_date(text, order) == expected  # type: ignore[arg-type]


def test_an_impossible_date_is_rejected_not_guessed() -> None:
    with pytest.raises(ValueError, match="'13/15/2024' is not a valid MM/DD/YYYY date"):
        parse_date("13/15/2024", "MDY")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10:23:52 AM", time(10, 23, 52)),
        ("10:23 AM", time(10, 23)),
        ("12:05 AM", time(0, 5)),
        ("12:30:00 PM", time(12, 30)),
        ("01:00:00 PM", time(13, 0)),
        ("23:15", time(23, 15)),
    ],
    ids=["12h-seconds", "12h-no-seconds", "12am-is-midnight", "12pm-is-noon", "pm", "24h"],
)
def test_times_of_day(text: str, expected: time) -> None:
    assert parse_clock_time(text) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("EUR", "EUR"),
        ("Euro - EUR", "EUR"),
        ("US Dollar - USD", "USD"),
        ("eur", "EUR"),
        ("€", "EUR"),
        ("Amount (GBP)", "GBP"),
        ("US Dollar", "USD"),
    ],
    ids=["code", "harvest-label", "harvest-usd-label", "lowercase", "symbol", "in-header", "name"],
)
def test_currencies(text: str, code: str) -> None:
    assert parse_currency(text) == code


def test_unknown_currency_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a currency"):
        parse_currency("Monopoly money")


def test_currency_in_a_column_name() -> None:
    assert currency_in_header("billable rate (usd)") == "USD"
    assert currency_in_header("billable rate") is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("Yes", True), ("no", False), ("true", True), ("0", False), ("", False)],
    ids=["yes", "no", "true", "zero", "empty-default"],
)
def test_booleans(text: str, value: bool) -> None:
    assert parse_bool(text, default=False) is value


def test_instants_need_a_zone() -> None:
    assert parse_instant("2024-03-05T08:00:00+01:00").isoformat() == "2024-03-05T07:00:00+00:00"
    with pytest.raises(ValueError, match="no time zone"):
        parse_instant("2024-03-05T08:00:00")


def test_revisions_grow_with_update_time_and_fit_an_avro_int() -> None:
    earlier = revision_at(parse_instant("2024-03-05T08:00:00Z"))
    later = revision_at(parse_instant("2024-03-05T08:00:01Z"))
    assert 1 <= earlier < later
    assert revision_at(parse_instant("2088-01-01T00:00:00Z")) < 2**31


def test_csv_reader_strips_bom_keeps_line_numbers_and_rejects_short_rows() -> None:
    text = '\ufeffA,B\n1,"x\ny"\n\n2,z\n3\n'
    records = list(read_csv(io.StringIO(text)))
    assert records == [
        CsvRow(2, {"a": "1", "b": "x\ny"}),
        CsvRow(5, {"a": "2", "b": "z"}),
        Rejection("line 6", "has 1 fields, the header has 2", "(record)"),
    ]


def test_csv_reader_does_not_treat_backslash_as_escape() -> None:
    text = 'name\n"\\\\ a """"""b \\\\\\"\n'
    [row] = list(read_csv(io.StringIO(text)))
    assert isinstance(row, CsvRow)
    assert row.fields["name"] == '\\\\ a """b \\\\\\'


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (["1", "x", "y"], CsvRow(2, {"a": "1", "b": "x", "c": "y"})),
        (["1", "x"], CsvRow(2, {"a": "1", "b": "x", "c": ""})),
        (["1"], Rejection("line 2", "has 1 fields, the header has 3; the required b is missing", "(record)")),
        (["1", "x", "y", "", " "], CsvRow(2, {"a": "1", "b": "x", "c": "y"})),
        (["1", "x", "y", "z"], Rejection("line 2", "has 4 fields, the header has 3", "(record)")),
    ],
    ids=[
        "complete",
        "optional-trailing-column-padded",
        "required-column-missing",
        "empty-extra-fields-dropped",
        "extra-value-rejected",
    ],
)
def test_row_shapes(record: list[str], expected: CsvRow | Rejection) -> None:
    [row] = list(rows_of([(1, ["A", "B", "C"]), (2, record)], required={"a", "b"}))
    assert row == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("  Workshop ", "Workshop"),
        ("   ", None),
        ("", None),
        (None, None),
        (1234, "1234"),
        (-7, "-7"),
        (10**30, "1" + "0" * 30),
        (True, "true"),
        (False, "false"),
        (1.5, "1.5"),
        ({"refName": " Acme "}, "Acme"),
        ({"id": 42}, "42"),
        ({}, None),
        ([1], None),
    ],
    ids=[
        "text-is-stripped",
        "blank-text-is-none",
        "empty-text-is-none",
        "null-is-none",
        "integer",
        "negative-integer",
        "big-integer",
        "true-is-not-1",
        "false-is-not-0",
        "float",
        "netsuite-refname",
        "object-id",
        "empty-object-is-none",
        "list-is-none",
    ],
)
def test_text_of_reads_json_scalars_the_same_on_its_fast_paths(value: object, text: str | None) -> None:
    assert text_of(value) == text
