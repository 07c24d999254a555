"""Clockify: detailed-report CSV exports and API time entries to canonical events.

CSV columns vary with the user's settings and Clockify's version (`Task` or `Activity`, `Billable`
present or not, currency in the header, `MM/DD/YYYY` or `DD/MM/YYYY` dates, times with or without
seconds). Columns are found by name, never by position. The date order is a setting: an impossible date
(`13/15/2024` read as month-first) is rejected with its line, not guessed. `Duration (decimal)` is
ignored because exports have been seen with `0.00` next to a one-hour `Duration (h)`.

API entries carry `timeInterval{start,end,duration}` with an ISO-8601 duration and no update time;
their revision comes from `updatedAt`/`lastUpdated` when a payload has one, else from when the entry
was observed (the export or poll time; `ClockifyPoller` only re-publishes entries whose content changed).
`Invoiced` and `Invoice ID` (newer exports) say Clockify already invoiced the entry: it is published
with `invoiced_at_source` and the invoice id, which the topology reports and never bills; an invoice id
on a row that says it is not invoiced is a contradiction and rejects the row. Approval states map to
decisions: APPROVED -> APPROVED, REJECTED and WITHDRAWN_APPROVAL -> REJECTED
(an approval taken back un-bills the revision); PENDING and WITHDRAWN_SUBMISSION decide nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

from backbone.domain.models import Decision
from producers.identity import EntryMapper, SourceEntry, SourceRef, source_ref
from producers.parsing import (
    CsvRow,
    FieldError,
    Occurrences,
    Outcome,
    ReadOptions,
    clean_text,
    get_path,
    is_json_file,
    map_records,
    numbering,
    parse_bool,
    parse_clock_time,
    parse_date,
    parse_duration,
    parse_instant,
    read_json_records,
    read_table,
    require,
    stable_id,
    text_of,
)

SOURCE = "clockify"
LIST_KEYS = ("timeentries", "timeEntries", "time_entries", "items", "data")
# A row without these cannot be read; any other missing trailing column is read as empty.
REQUIRED_COLUMNS = frozenset({"start date", "start time"})
APPROVAL_DECISIONS: dict[str, tuple[Decision, str | None] | None] = {
    "APPROVED": (Decision.APPROVED, None),
    "REJECTED": (Decision.REJECTED, None),
    "WITHDRAWN_APPROVAL": (Decision.REJECTED, "approval withdrawn in Clockify"),
    "PENDING": None,
    "WITHDRAWN_SUBMISSION": None,
}


def read_clockify(path: Path, options: ReadOptions, mapper: EntryMapper) -> Iterator[Outcome]:
    """Every record of a Clockify export (CSV or API JSON) as events or a rejection."""
    if is_json_file(path):
        return map_records(
            read_json_records(path, LIST_KEYS),
            lambda item: mapper.convert(clockify_api_entry(item, options, options.exported_at)),
        )
    occurrences = numbering(path, options, REQUIRED_COLUMNS, clockify_csv_key)
    rows = read_table(path, options, REQUIRED_COLUMNS)
    return map_records(rows, lambda row: mapper.convert(clockify_csv_entry(row, options, occurrences)))


def clockify_csv_entry(row: CsvRow, options: ReadOptions, occurrences: Occurrences) -> SourceEntry:
    start, (decision, comment), (invoiced, invoice_id), key = _csv_identity(row, options)
    email, user = row.get("email"), row.get("user")
    task = row.get("task", "activity")
    return SourceEntry(
        source=SOURCE,
        entry_id=stable_id(SOURCE, (*key, occurrences.next(key))),
        updated_at=options.exported_at,
        worker=source_ref("worker", SOURCE, email=email, name=user),
        project=source_ref("project", SOURCE, name=row.get("project"), client=row.get("client")),
        task=source_ref("task", SOURCE, name=task) if task else None,
        work_date=start.date(),
        duration_seconds=_csv_duration(row, start, options),
        # Exports without the column come from workspaces without billability: nothing is billable.
        billable=row.optional(parse_bool, "billable", label="Billable") or False,
        notes=clean_text(row.fields.get("description")),
        decision=decision,
        approver=row.get("approved by", "approver"),
        comment=comment,
        invoiced=invoiced,
        invoice_id=invoice_id,
    )


def clockify_csv_key(row: CsvRow, options: ReadOptions) -> tuple[object, ...]:
    """A row's identity tuple, who started it and when (`producers.parsing.numbering`); raises what
    `clockify_csv_entry` rejects the row for before numbering it."""
    return _csv_identity(row, options)[-1]


def _csv_identity(
    row: CsvRow, options: ReadOptions
) -> tuple[datetime, tuple[Decision | None, str | None], tuple[bool | None, str | None], tuple[object, ...]]:
    """Start, decision, invoice and the identity tuple: what a row must have before it is numbered."""
    start = _local(row, "start date", "start time", options)
    decided = row.optional(_decision, "approval status", "approval", label="Approval Status") or (None, None)
    invoice = _invoice(row)
    return start, decided, invoice, (row.get("email") or row.get("user"), start.isoformat())


def _invoice(row: CsvRow) -> tuple[bool | None, str | None]:
    invoiced = row.optional(parse_bool, "invoiced", label="Invoiced")
    invoice_id = row.get("invoice id")
    if invoice_id and invoiced is False:
        raise FieldError("Invoice ID", f"names invoice {invoice_id!r} but Invoiced says No")
    return (True if invoice_id else invoiced), invoice_id


def _local(row: CsvRow, date_column: str, time_column: str, options: ReadOptions) -> datetime:
    day = row.parsed(lambda text: parse_date(text, options.date_order), date_column, label=date_column.title())
    return datetime.combine(day, row.parsed(parse_clock_time, time_column, label=time_column.title()))


def _csv_duration(row: CsvRow, start: datetime, options: ReadOptions) -> int:
    end = _local(row, "end date", "end time", options) if row.get("end date") else None
    if end is not None and end < start:
        raise FieldError("End Time", f"ends ({end}) before it starts ({start})")
    written = row.optional(parse_duration, "duration (h)", "duration", label="Duration (h)")
    if written is not None:
        return written
    if end is None:
        raise FieldError("Duration (h)", "has neither a duration nor an end")
    return int((end - start).total_seconds())


def _decision(state: str | None) -> tuple[Decision | None, str | None]:
    if state is None:
        return None, None
    key = state.strip().upper().replace(" ", "_")
    if key not in APPROVAL_DECISIONS:
        raise ValueError(f"approval state {state!r} is not one of {', '.join(APPROVAL_DECISIONS)}")
    mapped = APPROVAL_DECISIONS[key]
    return mapped if mapped else (None, None)


def clockify_api_entry(item: object, options: ReadOptions, observed_at: datetime) -> SourceEntry:
    """A Clockify API or detailed-report time entry as a source entry."""
    if not isinstance(item, Mapping):
        raise ValueError("a Clockify time entry must be a JSON object")
    entry_id = require(text_of(item.get("id") or item.get("_id")), "id")
    start = parse_instant(require(text_of(get_path(item, "timeInterval", "start")), "timeInterval.start"))
    if get_path(item, "timeInterval", "end") is None:
        raise ValueError(f"entry {entry_id} is still running; it is imported once stopped")
    updated = text_of(item.get("updatedAt") or item.get("lastUpdated"))
    decision, comment = _decision(text_of(item.get("approvalStatus") or get_path(item, "approvalRequest", "status")))
    return SourceEntry(
        source=SOURCE,
        entry_id=f"{SOURCE}-{entry_id}",
        updated_at=parse_instant(updated) if updated else observed_at,
        worker=SourceRef(
            "worker",
            SOURCE,
            id=text_of(item.get("userId")),
            email=text_of(item.get("userEmail")),
            name=text_of(item.get("userName")),
        ),
        project=SourceRef(
            "project",
            SOURCE,
            id=text_of(item.get("projectId")),
            name=text_of(item.get("projectName")),
            client=text_of(item.get("clientName")),
        ),
        task=_task(item),
        work_date=start.astimezone(options.zone).date(),
        duration_seconds=_api_duration(item),
        billable=bool(item.get("billable", False)),
        notes=clean_text(text_of(item.get("description"))),
        deleted=bool(item.get("deleted", False)),
        decision=decision,
        comment=comment,
    )


def _api_duration(item: Mapping[str, object]) -> int:
    duration = get_path(item, "timeInterval", "duration")
    if isinstance(duration, int) and not isinstance(duration, bool):
        return duration  # detailed reports give seconds
    if isinstance(duration, str) and duration:
        return parse_duration(duration)
    end = parse_instant(str(get_path(item, "timeInterval", "end")))
    start = parse_instant(str(get_path(item, "timeInterval", "start")))
    return int((end - start).total_seconds())


def _task(item: Mapping[str, object]) -> SourceRef | None:
    task_id, task_name = text_of(item.get("taskId")), text_of(item.get("taskName"))
    return SourceRef("task", SOURCE, id=task_id, name=task_name) if task_id or task_name else None
