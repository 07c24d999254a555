"""Harvest: detailed time-report CSV exports and API v2 time entries to canonical events.

The CSV export has no entry id (the External Reference URL links the Asana task or Trello card the
time was tracked against, which many entries share, so it is part of the identity, not the identity).
A row's id is derived from the columns that identify a piece of work (date, person, client, project,
code, task, notes, external reference) plus its occurrence number among identical rows; hours are
deliberately not part of it, so a corrected duration is a new revision of the same entry. Editing the
notes in Harvest therefore looks like a new entry to a CSV import: import the export with `--period`
(the old entry is then withdrawn, `producers.periods`), or use the API (`HarvestPoller`).

Revisions come from `updated_at` (API) or from the export time (CSV: the row is as of that moment).
`is_closed` (API) and `Approved?` (CSV) mean the entry is approved: an `ApprovalDecision` for that
revision is emitted too. `Invoiced?` (CSV) and `is_billed` with `invoice{id,number}` (API) say Harvest
already invoiced the entry: it is published with `invoiced_at_source` (and the invoice number), which
the topology reports and never bills. Harvest does not report deletions to `updated_since`, so neither
path emits one; a `--period` import withdraws what a re-export no longer has (`producers.periods`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path

from backbone.domain.models import Decision
from producers.identity import EntryMapper, SourceEntry, SourceRef, source_ref
from producers.parsing import (
    CsvRow,
    Occurrences,
    Outcome,
    ReadOptions,
    clean_text,
    decimal_of,
    get_path,
    hours_to_seconds,
    is_json_file,
    map_records,
    numbering,
    parse_bool,
    parse_date,
    parse_duration,
    parse_instant,
    read_json_records,
    read_table,
    require,
    stable_id,
    text_of,
)

SOURCE = "harvest"
LIST_KEYS = ("time_entries", "items", "data")
# A row without these cannot be read; any other missing trailing column is read as empty.
REQUIRED_COLUMNS = frozenset({"date", "spent date", "hours"})


def read_harvest(path: Path, options: ReadOptions, mapper: EntryMapper) -> Iterator[Outcome]:
    """Every record of a Harvest export (CSV or API JSON) as accepted events or a rejection."""
    if is_json_file(path):
        return map_records(read_json_records(path, LIST_KEYS), lambda item: mapper.convert(harvest_api_entry(item)))
    occurrences = numbering(path, options, REQUIRED_COLUMNS, harvest_csv_key)
    rows = read_table(path, options, REQUIRED_COLUMNS)
    return map_records(rows, lambda row: mapper.convert(harvest_csv_entry(row, options, occurrences)))


def harvest_csv_entry(row: CsvRow, options: ReadOptions, occurrences: Occurrences) -> SourceEntry:
    work_date, worker, approved, invoiced, columns, identity = _csv_identity(row, options)
    client, project_name, code, task_name = columns
    project = source_ref("project", SOURCE, code=code, name=project_name, client=client)
    return SourceEntry(
        source=SOURCE,
        entry_id=stable_id(SOURCE, (*identity, occurrences.next(identity))),
        updated_at=options.exported_at,
        worker=worker,
        project=project,
        task=source_ref("task", SOURCE, name=task_name) if task_name else None,
        work_date=work_date,
        duration_seconds=row.parsed(parse_duration, "hours", label="Hours"),
        billable=row.optional(parse_bool, "billable?", "billable", label="Billable?") or False,
        notes=clean_text(row.fields.get("notes")),
        decision=Decision.APPROVED if approved else None,
        invoiced=invoiced,
    )


def harvest_csv_key(row: CsvRow, options: ReadOptions) -> tuple[object, ...]:
    """A row's identity tuple (`producers.parsing.numbering`); raises what `harvest_csv_entry` rejects the
    row for before numbering it."""
    return _csv_identity(row, options)[-1]


Columns = tuple[str | None, str | None, str | None, str | None]
"""Client, project, project code and task, as a row's identity reads them (read once a row)."""


def _csv_identity(
    row: CsvRow, options: ReadOptions
) -> tuple[date, SourceRef, bool, bool | None, Columns, tuple[object, ...]]:
    """Date, worker, approved, invoiced, the project's columns and the identity tuple: what a row must have
    before it is numbered."""
    work_date = row.parsed(lambda text: parse_date(text, options.date_order), "date", "spent date", label="Date")
    first, last = row.get("first name"), row.get("last name")
    person = " ".join(p for p in (first, last) if p) or None
    worker = source_ref("worker", SOURCE, id=row.get("employee id", "user id"), email=row.get("email"), name=person)
    approved = row.optional(parse_bool, "approved?", "approved", label="Approved?") or False
    invoiced = row.optional(parse_bool, "invoiced?", "invoiced", label="Invoiced?")
    columns = (row.get("client"), row.get("project"), row.get("project code"), row.get("task"))
    notes = row.fields.get("notes", "")
    identity = (work_date.isoformat(), worker.id or worker.name, *columns, notes, *_reference(row))
    return work_date, worker, approved, invoiced, columns, identity


def _reference(row: CsvRow) -> tuple[str, ...]:
    # only rows that have one add it, so the ids of rows without one stay what they were
    reference = row.get("external reference url", "external reference")
    return ("external-reference", reference) if reference else ()


def harvest_api_entry(item: object) -> SourceEntry:
    """A Harvest API v2 time entry (`GET /v2/time_entries`) as a source entry."""
    if not isinstance(item, Mapping):
        raise ValueError("a Harvest time entry must be a JSON object")
    entry_id = require(text_of(item.get("id")), "id")
    if item.get("is_running"):
        raise ValueError(f"entry {entry_id} is still running; it is imported once stopped")
    updated_at = parse_instant(require(text_of(item.get("updated_at")), "updated_at"))
    task_id, task_name = text_of(get_path(item, "task", "id")), text_of(get_path(item, "task", "name"))
    return SourceEntry(
        source=SOURCE,
        entry_id=f"{SOURCE}-{entry_id}",
        updated_at=updated_at,
        worker=SourceRef(
            "worker", SOURCE, id=text_of(get_path(item, "user", "id")), name=text_of(get_path(item, "user", "name"))
        ),
        project=SourceRef(
            "project",
            SOURCE,
            id=text_of(get_path(item, "project", "id")),
            code=text_of(get_path(item, "project", "code")),
            name=text_of(get_path(item, "project", "name")),
            client=text_of(get_path(item, "client", "name")),
        ),
        task=SourceRef("task", SOURCE, id=task_id, name=task_name) if task_id or task_name else None,
        work_date=parse_date(require(text_of(item.get("spent_date")), "spent_date")),
        duration_seconds=hours_to_seconds(decimal_of(item.get("hours"))),
        billable=bool(item.get("billable", False)),
        notes=clean_text(text_of(item.get("notes"))),
        decision=Decision.APPROVED if item.get("is_closed") else None,
        invoiced=bool(item["is_billed"]) if "is_billed" in item else None,
        invoice_id=text_of(get_path(item, "invoice", "number") or get_path(item, "invoice", "id")),
    )
