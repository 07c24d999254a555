"""Shared parsers for the quirks real time-tracker and ERP exports carry, and the import bookkeeping.

Exports differ in byte-order marks, decimal commas (`"2.001,0"`), currency labels (`Euro - EUR`,
`Amount (EUR)`), 12-hour times, durations written as clocks (`1:30:00`, even `12:20:00 AM` for 20
minutes), ISO-8601 durations (`PT1H30M`) and user-chosen date orders. Every function here is pure and
raises `ValueError` with a message fit for an operator (`FieldError` when it knows the column);
connectors turn that into a `Rejection` that names the line and the field. Nothing here guesses an
ambiguous date: the date order is given, or found in the file's own dates (`producers.dates`).
`rows_of` turns `(line, values)` records from any reader (`producers.tabular`) into rows by header.

Revisions: the canonical model wants a higher revision for every change. Connectors derive it from the
source's update time (`revision_at`): whole seconds since 2020-01-01T00:00:00Z, plus one. That is
monotonic in the source's clock, fits a 32-bit Avro int until 2088, and re-reading the same change gives
the same revision (so the same event id).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import functools
import hashlib
import io
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError

from backbone.domain.models import Event

if TYPE_CHECKING:
    from producers.tabular import TableFormat, TablePart

BOM = "\ufeff"
REVISION_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
PARSED_KEPT = 8192
"""Distinct texts each date, time, duration and yes/no parser remembers the value of: an export repeats
them (a day's rows share a date, durations and clock times recur), and parsing one was a tenth of a row's
mapping (docs/benchmarks.md, "Ninth session"). The parsers are pure; a text that fails is not kept, so
its error is raised afresh each time."""
DateOrder = Literal["MDY", "DMY", "YMD"]
T = TypeVar("T")

# --- import bookkeeping ---------------------------------------------------------------------------


ROW = "(record)"


@dataclass(frozen=True)
class Rejection:
    """One input record that was not turned into events: where it is, which field, and why.

    `values` keeps a CSV record's fields by header so a rejects file can be fixed and imported again.
    """

    where: str
    reason: str
    field: str | None = None
    values: Mapping[str, str] | None = dataclasses.field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.where}: {self.field or ROW}: {self.reason}"

    @property
    def line(self) -> int | None:
        match = re.match(r"lines? (\d+)", self.where)
        return int(match.group(1)) if match else None

    def to_json(self) -> dict[str, object]:
        """The form written to a rejects file: place, field and reason next to the original values."""
        return {
            "line": self.line,
            "where": self.where,
            "field": self.field or ROW,
            "reason": self.reason,
            "values": self.values,
        }


class FieldError(ValueError):
    """A value that does not parse, with the column (as the export names it) it came from."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(slots=True)  # one a record, never changed; not frozen: a frozen `__init__` costs more (as `CsvRow`)
class Parsed:
    """The events one input record became."""

    where: str
    events: tuple[Event, ...]


Outcome = Parsed | Rejection


@dataclass
class ImportReport:
    """Totals of one import, filled while the outcomes stream past (nothing is held in memory)."""

    records: int = 0
    events: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def events_of(self, outcomes: Iterable[Outcome]) -> Iterator[Event]:
        """The accepted events of `outcomes`, counting records and keeping the rejections."""
        for outcome in outcomes:
            self.records += 1
            if isinstance(outcome, Rejection):
                self.rejections.append(outcome)
                continue
            self.events += len(outcome.events)
            yield from outcome.events

    def summary(self) -> str:
        return f"{self.records} records read, {self.events} events produced, {len(self.rejections)} rejected"


# --- CSV ------------------------------------------------------------------------------------------


def strip_bom(text: str) -> str:
    return text[1:] if text.startswith(BOM) else text


def normalise_header(name: str) -> str:
    """`" Billable Rate (USD) "` -> `"billable rate (usd)"`: what header matching compares."""
    return " ".join(strip_bom(name).strip().lower().split())


@dataclass(slots=True)
class CsvRow:
    """One CSV record: the line it starts on (the header is line 1) and its fields by header.

    One a row, never changed; not frozen, for a frozen dataclass's `__init__` costs several times more."""

    line: int
    fields: Mapping[str, str]

    @property
    def where(self) -> str:
        return f"line {self.line}"

    def get(self, *names: str) -> str | None:
        """The first non-empty value among the columns `names` (normalised header names)."""
        fields = self.fields
        for name in names:
            value = fields.get(name)
            if value and (value := value.strip()):  # a dozen times a row: one strip, no comparison
                return value
        return None

    def has(self, *names: str) -> bool:
        return any(name in self.fields for name in names)

    def column_like(self, pattern: str) -> str | None:
        """The first header matching the regex `pattern` (for headers that embed a currency)."""
        return next((h for h in self.fields if re.fullmatch(pattern, h)), None)

    def parsed(self, parse: Callable[[str], T], *names: str, label: str) -> T:
        """`parse` of the first non-empty column of `names`; a missing value or a parse error names `label`."""
        text = self.get(*names)
        if text is None:
            raise FieldError(label, "required value is missing")
        try:
            return parse(text)
        except ValueError as error:
            raise FieldError(label, str(error)) from None

    def optional(self, parse: Callable[[str], T], *names: str, label: str) -> T | None:
        """Like `parsed`, but None when every column of `names` is empty or absent."""
        text = self.get(*names)
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as error:
            raise FieldError(label, str(error)) from None


def read_csv(
    source: Path | str | io.TextIOBase, required: Collection[str] | None = None
) -> Iterator[CsvRow | Rejection]:
    """Stream the records of a UTF-8 CSV export, tolerating a BOM and RFC 4180 quoting (no backslash escapes).

    A record whose field count differs from the header's is a `Rejection`, not a crash (see `rows_of`).
    """
    if isinstance(source, (str, Path)):
        with open(source, encoding="utf-8-sig", newline="") as handle:
            yield from _read_csv_stream(handle, required)
    else:
        yield from _read_csv_stream(source, required)


def _read_csv_stream(handle: Iterable[str], required: Collection[str] | None) -> Iterator[CsvRow | Rejection]:
    reader = csv.reader(handle, strict=False)

    def records() -> Iterator[tuple[int, list[str]]]:
        start = 1
        for record in reader:
            yield start, record
            start = reader.line_num + 1

    yield from rows_of(records(), required)


def rows_of(records: Iterable[tuple[int, list[str]]], required: Collection[str] | None) -> Iterator[CsvRow | Rejection]:
    """Rows by header from `(line, values)` records, the first being the header; blank records skipped.

    A short record is padded with empty values when every column it lacks is optional (exports drop
    empty trailing fields), and rejected when it lacks one of `required` (normalised header names;
    None: every column is required). Extra values are allowed only when they are empty.
    """
    header = None
    for line, values in records:
        if header is None:
            header = [normalise_header(h) for h in values]
            continue
        if not values or not "".join(values).strip():  # every value blank (one strip, not one a value)
            continue
        if len(values) == len(header):  # the common case, without the shape checks of `_row`
            yield CsvRow(line, dict(zip(header, values, strict=True)))
            continue
        yield _row(line, header, values, required)


def _row(line: int, header: list[str], values: list[str], required: Collection[str] | None) -> CsvRow | Rejection:
    where = f"line {line}"
    shape = f"has {len(values)} fields, the header has {len(header)}"
    if len(values) > len(header):
        if any(value.strip() for value in values[len(header) :]):
            return Rejection(where, shape, ROW, dict(zip(header, values, strict=False)))
        values = values[: len(header)]
    missing = header[len(values) :]
    if missing:
        lacking = missing if required is None else [name for name in missing if name in required]
        if lacking:
            reason = f"{shape}; the required {', '.join(lacking)} is missing" if required is not None else shape
            return Rejection(where, reason, ROW, dict(zip(header, values, strict=False)))
        values = [*values, *([""] * len(missing))]
    return CsvRow(line, dict(zip(header, values, strict=True)))


def read_table(
    path: Path, options: ReadOptions, required: Collection[str] | None = None
) -> Iterator[CsvRow | Rejection]:
    """The rows of a tabular export in any encoding, separator or as .xlsx (see `producers.tabular`)."""
    from producers.tabular import detect_table, table_records

    table = options.table or detect_table(path)
    return rows_of(table_records(path, table, options.part), required)


# --- numbers, money and currencies ----------------------------------------------------------------

_CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "CHF": "CHF", "₹": "INR"}
_CURRENCY_NAMES = {
    "euro": "EUR",
    "us dollar": "USD",
    "usa": "USD",
    "united states dollar": "USD",
    "british pound": "GBP",
    "pound sterling": "GBP",
    "swiss franc": "CHF",
    "canadian dollar": "CAD",
    "australian dollar": "AUD",
}


_EXPONENT = re.compile(r"\d\s*[eE]\s*[+-]?\d")
MAX_HOURS = Decimal(1_000_000)
"""More hours than this in one entry is not a duration but damage (1e300 from a hostile payload)."""


def parse_decimal(text: str) -> Decimal:
    """A decimal from `"1,234.56"`, `"2.001,0"`, `"20,01"`, `"€ 111.11"`, `"1 234,50 EUR"`, `"1'234.50"` or `"-5"`.

    When both separators occur, the last one is the decimal mark. A lone comma is a decimal comma
    (exports that group thousands with commas always print a decimal point too); several commas alone
    are thousands separators. A currency symbol or ISO code may stand before or after the number;
    anything else is refused rather than dropped: reading `"12abc3"` as 123 or `"1O0"` as 10 would put a
    wrong amount on an invoice. Digits are ASCII only.
    """
    if _EXPONENT.search(text):
        # Stripping the letter would read "1e300" as 1300: refuse what no tracker writes.
        raise ValueError(f"{text[:40]!r} is not a plain decimal number (no exponents)")
    match = _DECIMAL_TEXT.match(_without_currency(text.strip()))
    if match is None:
        raise ValueError(f"{text[:40]!r} is not a number")
    sign, body = match.group("sign") or "", _GROUPING.sub("", match.group("body"))
    if "," in body and "." in body:
        decimal_mark = "," if body.rfind(",") > body.rfind(".") else "."
        thousands = "." if decimal_mark == "," else ","
        body = body.replace(thousands, "").replace(decimal_mark, ".")
    elif body.count(",") == 1:
        body = body.replace(",", ".")
    elif body.count(",") > 1:
        body = body.replace(",", "")
    try:
        return Decimal(sign + body)
    except InvalidOperation:
        raise ValueError(f"{text[:40]!r} is not a number") from None


# A sign, then ASCII digits separated by single marks: "," and "." (decimal or grouping), or spaces and
# apostrophes grouping thousands; ".5" too.
_DECIMAL_TEXT = re.compile(r"^(?P<sign>[-+])?\s*(?P<body>[0-9]+(?:[,.'\s\u00a0\u202f][0-9]+)*|[.,][0-9]+)$", re.ASCII)
_GROUPING = re.compile(r"['\s\u00a0\u202f]")
_CURRENCY_CODE = re.compile(r"^(?P<lead>[-+]?)\s*[A-Z]{3}\s+|\s+[A-Z]{3}$")


def _without_currency(text: str) -> str:
    """`text` without one currency symbol or ISO code at its start or end (a sign before it is kept)."""
    text = _CURRENCY_CODE.sub(lambda m: m.group("lead") or "", text, count=1)
    lead = text[:1] if text[:1] in "-+" else ""
    rest = text[len(lead) :].strip()
    if rest[:1] and unicodedata.category(rest[0]) == "Sc":
        rest = rest[1:].lstrip()
    elif rest[-1:] and unicodedata.category(rest[-1]) == "Sc":
        rest = rest[:-1].rstrip()
    return lead + rest


def parse_currency(text: str) -> str:
    """An ISO 4217 code from `"EUR"`, `"Euro - EUR"`, `"Amount (EUR)"`, `"eur"`, `"€"` or `"US Dollar"`."""
    cleaned = text.strip()
    code = re.search(r"(?:^|[\s(\-])([A-Z]{3})(?:$|[\s)])", cleaned)
    if code:
        return code.group(1)
    if re.fullmatch(r"[a-zA-Z]{3}", cleaned):
        return cleaned.upper()
    if cleaned in _CURRENCY_SYMBOLS:
        return _CURRENCY_SYMBOLS[cleaned]
    named = _CURRENCY_NAMES.get(cleaned.lower())
    if named:
        return named
    raise ValueError(f"{text!r} is not a currency (expected an ISO 4217 code such as EUR)")


def currency_in_header(header: str) -> str | None:
    """`"billable rate (usd)"` -> `"USD"`; None when the header names no currency."""
    match = re.search(r"\(([a-zA-Z]{3})\)\s*$", header)
    return match.group(1).upper() if match else None


_TRUE = {"yes", "y", "true", "t", "1", "x", "ja", "oui", "approved", "billable"}
_FALSE = {"no", "n", "false", "f", "0", "", "nein", "non", "not approved", "non-billable"}


@functools.lru_cache(maxsize=PARSED_KEPT)
def parse_bool(text: str | None, *, default: bool | None = None) -> bool:
    """`Yes`/`No`, `true`/`false`, `1`/`0`, `x`; empty means `default` (an error when there is none)."""
    value = (text or "").strip().lower()
    if value == "" and default is not None:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE and value != "":
        return False
    raise ValueError(f"{text!r} is not yes/no")


# --- durations ----------------------------------------------------------------------------------

_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE
)
_CLOCK = re.compile(r"^(?P<h>\d{1,4}):(?P<m>\d{1,2})(?::(?P<s>\d{1,2}))?\s*(?P<ampm>[AaPp][Mm])?$")


def parse_iso_duration(text: str) -> int:
    """Seconds in an ISO-8601 duration such as `PT1H30M` or `PT45.5S` (fractions round half up)."""
    match = _ISO_DURATION.match(text.strip())
    if not match or text.strip().upper() in {"P", "PT"}:
        raise ValueError(f"{text!r} is not an ISO-8601 duration like PT1H30M")
    parts = {k: Decimal(v) if v else Decimal(0) for k, v in match.groupdict().items()}
    total = parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@functools.lru_cache(maxsize=PARSED_KEPT)
def parse_clock_duration(text: str) -> int:
    """Seconds in `1:30`, `1:30:00` or `125:00:00`; also Toggl's 12-hour rendering (`12:20:00 AM` = 20 min).

    Some exports format a duration as a time of day on a 12-hour clock: midnight is `12:.. AM`, so
    the hour 12 means zero before noon, and `PM` adds twelve hours.
    """
    match = _CLOCK.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 1:30:00")
    hours, minutes, seconds = int(match["h"]), int(match["m"]), int(match["s"] or 0)
    if minutes > 59 or seconds > 59:
        raise ValueError(f"{text!r} has minutes or seconds above 59")
    if match["ampm"]:
        if hours > 12 or hours == 0:
            raise ValueError(f"{text!r} is not a 12-hour clock value")
        hours = hours % 12 + (12 if match["ampm"].lower() == "pm" else 0)
    return hours * 3600 + minutes * 60 + seconds


def hours_to_seconds(hours: Decimal) -> int:
    """Decimal hours to whole seconds, half up (3 decimal places of an hour are 3.6 s apart)."""
    if hours < 0:
        raise ValueError(f"{hours} hours is negative")
    if hours >= MAX_HOURS:
        raise ValueError(f"{hours} hours is out of range (at most {MAX_HOURS - 1} hours an entry)")
    return int((hours * 3600).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@functools.lru_cache(maxsize=PARSED_KEPT)
def parse_duration(text: str) -> int:
    """Seconds from any duration a tracker writes: `PT1H30M`, `1:30:00`, `01:30:00 AM`, `1.5`, `1,5` (hours)."""
    value = text.strip()
    if value.upper().startswith("P"):
        return parse_iso_duration(value)
    if ":" in value:
        return parse_clock_duration(value)
    return hours_to_seconds(parse_decimal(value))


# --- dates and times ------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_SLASHED = re.compile(r"^(\d{1,4})[/.\-](\d{1,2})[/.\-](\d{1,4})$")


@functools.lru_cache(maxsize=PARSED_KEPT)
def parse_date(text: str, order: DateOrder | None = None) -> date:
    """A date from ISO `2024-10-15` (always) or `10/15/2024`, `15.10.2024`, `15/10/2024` in `order`.

    A dotted date is day-first in every locale that writes one. An impossible date (month 13) is an
    error naming the expected format: the export's date setting must be fixed, never guessed. Without
    an order a slashed date is an error unless it reads the same both ways (`03/03/2024`); importers
    find the order in the file's own dates first (`producers.dates`).
    """
    value = text.strip()
    iso = _ISO_DATE.match(value) or re.match(r"^(\d{4})/(\d{1,2})/(\d{1,2})$", value)
    if iso:
        return _checked_date(text, int(iso[1]), int(iso[2]), int(iso[3]), "YYYY-MM-DD")
    match = _SLASHED.match(value)
    if not match:
        raise ValueError(f"{text!r} is not a date")
    first, second, year = int(match[1]), int(match[2]), int(match[3])
    if year < 100:
        year += 2000
    if "." in value or order == "DMY":
        return _checked_date(text, year, second, first, "DD/MM/YYYY")
    if order == "YMD":
        raise ValueError(f"{text!r} is not a YYYY-MM-DD date (--date-order YMD)")
    if order is None and first != second:
        raise ValueError(f"{text!r} could be day-first or month-first; pass --date-order DMY or MDY")
    return _checked_date(text, year, first, second, "MM/DD/YYYY")


def _checked_date(text: str, year: int, month: int, day: int, fmt: str) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a valid {fmt} date; set the date format to the one the export used"
        ) from None


_TIME = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\s*(?P<ampm>[AaPp][Mm])?$")


@functools.lru_cache(maxsize=PARSED_KEPT)
def parse_clock_time(text: str) -> time:
    """A time of day from `10:23:52`, `10:23`, `10:23:52 AM`, `10:23 PM`, `12:05 AM` (= 00:05)."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a time of day")
    hour, minute, second = int(match["h"]), int(match["m"]), int(match["s"] or 0)
    if match["ampm"]:
        if not 1 <= hour <= 12:
            raise ValueError(f"{text!r} is not a 12-hour time")
        hour = hour % 12 + (12 if match["ampm"].lower() == "pm" else 0)
    try:
        return time(hour, minute, second)
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day") from None


def parse_instant(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 instant with `Z` or an offset, in UTC. A naive time is an error."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 instant") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return parsed.astimezone(UTC)


def from_unix(seconds: int | float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# --- ids and revisions ----------------------------------------------------------------------------


def revision_at(instant: datetime) -> int:
    """The revision of a change made at `instant` (see the module docstring for the rule)."""
    return max(1, int((instant - REVISION_EPOCH).total_seconds()) + 1)


def stable_id(source: str, parts: Sequence[object]) -> str:
    """A deterministic id for a record whose source gives none (e.g. a Harvest CSV row)."""
    text = "\x1f".join(["" if p is None else p if type(p) is str else str(p) for p in parts])
    return f"{source}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


class Occurrences:
    """Numbers identical identity tuples within one file, so two equal rows get two ids (1st, 2nd...)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[object, ...], int] = {}

    def next(self, key: tuple[object, ...]) -> int:
        count = self._seen.get(key, 0) + 1
        self._seen[key] = count
        return count


IdentityKey = Callable[["CsvRow", "ReadOptions"], tuple[object, ...]]
"""A tracker's identity tuple of a CSV row, raising what the row is rejected for before it is numbered."""


def numbering(path: Path, options: ReadOptions, required: Collection[str], key_of: IdentityKey) -> Occurrences:
    """The `Occurrences` a read numbers its rows with: a fresh one, or for the second half of a file read in
    two processes (`options.part`), one that has counted the first half's rows as a single pass would
    have, so identical rows on both sides of the cut are numbered 1st, 2nd... across the whole file.

    A row counts when it is read and its identity key is known (`key_of` raises for a row rejected before
    it is numbered: the tracker's entry function numbers a row only after the same checks)."""
    occurrences = Occurrences()
    part = options.part
    if part is None or not part.start:
        return occurrences
    first = dataclasses.replace(options, part=dataclasses.replace(part, start=0, end=part.start, lines_before=0))
    for row in read_table(path, first, required):
        if isinstance(row, CsvRow):
            try:
                key = key_of(row, options)
            except (ValueError, TypeError, KeyError):  # what `map_records` rejects a row for
                continue
            occurrences.next(key)
    return occurrences


def clean_text(text: str | None) -> str | None:
    """Free text as given, or None when blank."""
    return text if text is not None and text.strip() != "" else None


# --- reading whole exports -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOptions:
    """How to read one export: when it was taken, its date order, the zone its local times are in."""

    exported_at: datetime
    date_order: DateOrder | None = None
    timezone: str = "UTC"
    table: TableFormat | None = None  # None: detected when the file is read
    part: TablePart | None = None  # None: every record; else the records of one half (`producers.halves`)

    @property
    def zone(self) -> tzinfo:
        return UTC if self.timezone.upper() == "UTC" else ZoneInfo(self.timezone)


def exported_at_of(path: Path) -> datetime:
    """When a file export was taken, as far as the file system knows (its modification time)."""
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0)


def is_json_file(path: Path) -> bool:
    """JSON (or JSON Lines) by suffix, else by its first non-blank character (in any of the BOM encodings)."""
    if path.suffix.lower() in {".json", ".jsonl", ".ndjson"}:
        return True
    if path.suffix.lower() in {".csv", ".txt", ".tsv", ".xlsx", ".xlsm"}:
        return False
    with open(path, "rb") as handle:
        head = handle.read(256)
    return head.replace(b"\x00", b"").removeprefix(codecs.BOM_UTF8).lstrip()[:1] in {b"{", b"["}


def read_json_records(path: Path, list_keys: Sequence[str]) -> Iterator[tuple[str, object] | Rejection]:
    """The records of a JSON export: a list, an object wrapping a list under one of `list_keys`
    (`time_entries`, `items`, OData `value`...), a single object, or JSON Lines (one object a line)."""
    from producers.tabular import ExportReadError

    try:
        text = strip_bom(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise ExportReadError(
            f"byte 0x{error.object[error.start]:02x} is not UTF-8 (JSON must be UTF-8)", line=line
        ) from None
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        yield from _json_lines(text)
        return
    yield from json_records(document, list_keys)


def json_records(document: object, list_keys: Sequence[str]) -> Iterator[tuple[str, object]]:
    if isinstance(document, dict):
        key = next((k for k in list_keys if isinstance(document.get(k), list)), None)
        if key is None:
            yield "item 1", document
            return
        document = document[key]
    if isinstance(document, list):
        for index, item in enumerate(document, start=1):
            yield f"item {index}", item
    else:
        yield "item 1", document


def _json_lines(text: str) -> Iterator[tuple[str, object] | Rejection]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", orjson.loads(line)
        except orjson.JSONDecodeError as error:
            yield Rejection(f"line {number}", f"is not JSON: {error}")


def map_records(
    records: Iterable[tuple[str, object] | CsvRow | Rejection],
    convert: Callable[[Any], Sequence[Event]],
) -> Iterator[Outcome]:
    """Convert each record, turning a `ValueError` (pydantic's included) into a `Rejection` for its place."""
    for record in records:
        if isinstance(record, Rejection):
            yield record
            continue
        where, item = (record.where, record) if isinstance(record, CsvRow) else record
        values = record.fields if isinstance(record, CsvRow) else None
        try:
            yield Parsed(where, tuple(convert(item)))
        except FieldError as error:
            yield Rejection(where, error.reason, error.field, values)
        except (ValueError, TypeError, KeyError) as error:
            yield Rejection(where, describe_error(error), ROW if values is not None else None, values)


def describe_error(error: Exception) -> str:
    """One line an operator can act on, also for pydantic's multi-error messages."""
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors())
    if isinstance(error, KeyError):
        return f"missing field {error.args[0]!r}"
    return str(error)


def require(value: str | None, what: str) -> str:
    if value is None:
        raise ValueError(f"{what} is missing")
    return value


def get_path(item: object, *path: str) -> object:
    """`item[a][b]...` or None when any step is missing (payloads omit optional objects)."""
    current = item
    for step in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(step)
    return current


def text_of(value: object) -> str | None:
    """A JSON scalar as text (`12` -> "12"), None for null/empty; NetSuite's `{refName}` objects too."""
    # The common JSON cases first: the Mapping check below is an ABC check, and this runs a dozen times a row.
    if isinstance(value, str):
        return value.strip() or None
    if value is None:
        return None
    if type(value) is int:
        return str(value)
    if isinstance(value, Mapping):
        value = value.get("refName", value.get("name", value.get("id")))
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


def decimal_of(value: object) -> Decimal:
    """A JSON number or string as a Decimal; floats go through their shortest repr, never binary."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, (int, float)):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return parse_decimal(str(value))
