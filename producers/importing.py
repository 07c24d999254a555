"""Importing one export as a whole: nothing is published from a file that is wrong.

An import reads its file in streaming passes, holding no more than a row at a time:

1. `inspect_export` refuses what cannot be imported as a whole: an empty file, a byte the encoding
   cannot decode, another tracker's export, dates that contradict each other or the given order, or
   a file whose every date could be day-first or month-first. It settles the format (encoding,
   separator, workbook) and the date order for the next passes.
2. `validate` runs the connector over the file and counts what it accepts and rejects, handing each
   rejection to a sink (the rejects file) as it streams past; a large CSV export is validated in two
   processes, cut where the inspection pass found a record to start (`producers.halves`, `joined`).
3. Only then does the caller publish: the events `validate` encoded into a `Spool` as it went (a plain
   import, `producers.spool`), or `accepted_events` of a third read (a period import or a dry run, which
   need the models; for a file of at most `KEEP_IN_MEMORY` events, the models the validation pass kept).

By default one rejected record refuses the file (`backbone import` exits 2 and lists `line N: field:
reason`), exactly as `backbone emit` does with canonical JSON lines; with `--skip-invalid` the valid
records are published and the rejected ones are written with their reasons to the rejects file.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from backbone.domain.models import Event
from backbone.errors import InvalidInputError
from producers.dates import DateOrderError, DateOrderEvidence, is_date_column
from producers.parsing import ROW, Outcome, ReadOptions, Rejection, is_json_file, normalise_header
from producers.signatures import SignatureError, check_signature
from producers.spool import Spool
from producers.tabular import ExportReadError, TablePart, detect_table, line_start_near, table_records

SHOWN_PROBLEMS = 50
KEEP_IN_MEMORY = 10_000  # events of a file this small are published from the validation pass
FIRST_HALF = 0.55
"""Where a file validated in two processes is cut: the child, validating the rest, first counts the
identity keys of the rows before the cut, about a fifth of the work of validating them
(`producers.halves`), so the halves take as long when this process takes a little more than half."""


class RefusedExportError(InvalidInputError):
    """The file cannot be imported as a whole; `problems` are `line N: field: reason` lines."""

    def __init__(self, message: str, *, problems: Collection[str] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = list(problems)


@dataclass(frozen=True)
class Inspection:
    """What the first pass learnt: the options to read the file with, its data rows, notes for people."""

    options: ReadOptions
    rows: int | None  # None: not a table (JSON), rows are not counted
    notes: tuple[str, ...] = ()
    fingerprint: tuple[int, int] = (0, 0)
    halves: tuple[TablePart, TablePart] | None = None  # where two processes can validate it (`producers.halves`)

    def ensure_unchanged(self, path: Path) -> None:
        """Refuse to publish when the file changed since it was validated (a later pass would differ)."""
        if _fingerprint(path) != self.fingerprint:
            raise RefusedExportError(
                f"{path} changed while it was being imported; nothing was published",
                hint="import it again once whatever writes it has finished",
            )


def _fingerprint(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def inspect_export(
    path: Path, options: ReadOptions, importer: str, encoding: str | None = None, *, halves: bool = False
) -> Inspection:
    """Refuse a file that cannot be imported as a whole, else settle its format and date order.

    With `halves`, also find where a text export can be cut in two for two processes to validate: the
    start of the first line after `FIRST_HALF` of it, when a record starts there (not inside a quoted field)."""
    try:
        empty = path.stat().st_size == 0
    except OSError as error:
        raise RefusedExportError(f"cannot read {path}: {error.strerror}") from None
    if empty:
        raise RefusedExportError(f"{path} is empty (0 bytes); nothing was imported", hint="export the file again")
    fingerprint = _fingerprint(path)
    if is_json_file(path):
        return Inspection(options, rows=None, fingerprint=fingerprint)
    try:
        table = options.table or detect_table(path, encoding)
        cut = line_start_near(path, table, FIRST_HALF) if halves else None
        rows, evidence, cut_is_record = _scan(path, dataclasses.replace(options, table=table), importer, cut)
        order = evidence.resolve(options.date_order)
    except ExportReadError as error:
        raise RefusedExportError(f"{path} cannot be read; nothing was imported", problems=[str(error)]) from None
    except OSError as error:
        raise RefusedExportError(f"cannot read {path}: {error.strerror}") from None
    except SignatureError as error:
        raise RefusedExportError(f"{path}: {error}", hint=error.hint) from None
    except DateOrderError as error:
        raise RefusedExportError(f"{path}: {error}", problems=error.problems, hint=error.hint) from None
    notes = [f"read {path.name} as {table.describe()}"]
    if order is not None and options.date_order is None:
        notes.append(f"dates are {'day' if order == 'DMY' else 'month'}-first ({order}), as the file's dates show")
    settled = dataclasses.replace(options, table=table, date_order=order)
    parts = _halves(cut) if cut is not None and cut_is_record else None
    return Inspection(settled, rows=rows, notes=tuple(notes), fingerprint=fingerprint, halves=parts)


def _halves(cut: tuple[int, int]) -> tuple[TablePart, TablePart]:
    offset, lines_before = cut
    return TablePart(end=offset), TablePart(start=offset, lines_before=lines_before)


def _scan(
    path: Path, options: ReadOptions, importer: str, cut: tuple[int, int] | None = None
) -> tuple[int, DateOrderEvidence, bool]:
    """The file's records and the evidence of its dates' order, from the values by position: what `rows_of`
    would make rows of (blank records skipped, every other one counted), without making them; and whether
    a record (not a quoted field's later line) starts at the line `cut` names."""
    assert options.table is not None
    records = table_records(path, options.table)
    first = next(records, None)
    header = [normalise_header(name) for name in first[1]] if first else []
    check_signature(importer, [name for name in header if name])
    evidence, rows = DateOrderEvidence(), 0
    position = {name: index for index, name in enumerate(header)}  # a repeated name: its last column, as rows'
    dated = [(name, position[name]) for name in header if is_date_column(name)]
    width = len(header)
    cut_line, cut_is_record = (cut[1] + 1 if cut is not None and cut[1] > 0 else None), False
    for line, values in records:
        if line == cut_line:
            cut_is_record = True
        if not values or not "".join(values).strip():
            continue
        rows += 1
        if len(values) > width and "".join(values[width:]).strip():
            continue  # too many values: rejected when read, so its dates are no evidence
        for column, index in dated:
            evidence.add(line, column, values[index] if index < len(values) else "")
    return rows, evidence, cut_is_record


# --- validation and publication ---------------------------------------------------------------


@dataclass
class Validation:
    """Totals of the validation pass, and the first rejections to show."""

    records: int = 0
    events: int = 0
    rejected: int = 0
    shown: list[Rejection] = field(default_factory=list)
    kept: list[Event] | None = field(default_factory=list)  # None: too many to keep, read them again

    def messages(self) -> list[str]:
        lines = [str(rejection) for rejection in self.shown]
        if self.rejected > len(self.shown):
            lines.append(f"... and {self.rejected - len(self.shown)} more rejected records")
        return lines


def validate(
    outcomes: Iterable[Outcome],
    on_rejection: Callable[[Rejection], None] | None = None,
    *,
    keep: int = 0,
    spool: Spool | None = None,
) -> Validation:
    """Count the accepted events and rejected records of a whole read, streaming.

    Up to `keep` accepted events are kept, so a small file need not be parsed a second time to publish.
    With a `spool`, every accepted record's events are encoded into it instead (nothing is kept): a
    record whose events cannot be encoded is rejected like any other invalid record.
    """
    checked = Validation(kept=[] if keep and spool is None else None)
    for outcome in _refusing_unreadable(outcomes):
        checked.records += 1
        if isinstance(outcome, Rejection):
            _reject(checked, outcome, on_rejection)
            continue
        if spool is not None:
            try:
                spool.add_all(outcome.events)
            except ValueError as error:
                _reject(checked, Rejection(outcome.where, str(error), ROW), on_rejection)
                continue
        checked.events += len(outcome.events)
        if checked.kept is not None:
            checked.kept.extend(outcome.events)
            if len(checked.kept) > keep:
                checked.kept = None
    return checked


def joined(first: Validation, second: Validation) -> Validation:
    """The totals of a file validated in two halves (`producers.halves`), the first half's rejections first."""
    room = max(0, SHOWN_PROBLEMS - len(first.shown))
    return Validation(
        records=first.records + second.records,
        events=first.events + second.events,
        rejected=first.rejected + second.rejected,
        shown=[*first.shown, *second.shown[:room]],
        kept=None,
    )


def _reject(checked: Validation, rejection: Rejection, on_rejection: Callable[[Rejection], None] | None) -> None:
    checked.rejected += 1
    if len(checked.shown) < SHOWN_PROBLEMS:
        checked.shown.append(rejection)
    if on_rejection is not None:
        on_rejection(rejection)


def accepted_events(outcomes: Iterable[Outcome]) -> Iterator[Event]:
    """The events of the accepted records (the publish pass, after `validate`)."""
    for outcome in _refusing_unreadable(outcomes):
        if not isinstance(outcome, Rejection):
            yield from outcome.events


def _refusing_unreadable(outcomes: Iterable[Outcome]) -> Iterator[Outcome]:
    try:
        yield from outcomes
    except ExportReadError as error:
        raise RefusedExportError("the file cannot be read; nothing was published", problems=[str(error)]) from None


def refuse_invalid(checked: Validation) -> None:
    """Refuse the file when any record was rejected (the default, without --skip-invalid)."""
    if checked.rejected:
        raise RefusedExportError(
            f"{checked.rejected} of {checked.records} records are invalid; nothing was published",
            problems=checked.messages(),
            hint="fix them (or the options, e.g. --date-order or --encoding) and import the file again, "
            "or pass --skip-invalid to publish the valid records and write the rejected ones to a rejects file",
        )


class RejectsFile:
    """A JSON Lines file of rejected records with their reasons, created at the first rejection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self._handle: IO[bytes] | None = None

    def write(self, rejection: Rejection) -> None:
        if self._handle is None:
            self._handle = self.path.open("wb")
        self._handle.write(orjson.dumps(rejection.to_json()) + b"\n")
        self.written += 1

    def append(self, path: Path, count: int) -> None:
        """The `count` rejections another process wrote to `path`, after this file's own."""
        if not count:
            return
        if self._handle is None:
            self._handle = self.path.open("wb")
        with path.open("rb") as lines:
            shutil.copyfileobj(lines, self._handle)
        self.written += count

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.close()


def default_rejects_path(path: Path) -> Path:
    """`FILE.rejects.jsonl` next to the input."""
    return path.with_name(f"{path.name}.rejects.jsonl")
