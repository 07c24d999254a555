"""Toggl Track: detailed CSV exports, API v9 time entries and webhook events to canonical events.

The CSV has no entry id either; a row is identified by who started it and when (a person cannot start
two entries in the same second), numbered among identical keys. Its `Duration` may be rendered as a
12-hour clock (`12:20:00 AM` is 20 minutes), which `parse_duration` understands; when it is missing the
duration is end minus start.

API entries carry `at` (last update) and `server_deleted_at`: the revision comes from the later of the
two, and a deleted entry becomes a terminal revision (`deleted: true`). A running entry (negative
duration) is reported, not imported; it arrives once stopped. Webhook deliveries wrap an entry in
`{"payload": ..., "metadata": {"action": ...}}`; action `deleted` is a deletion.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from producers.identity import EntryMapper, SourceEntry, SourceRef, source_ref
from producers.parsing import (
    CsvRow,
    FieldError,
    Occurrences,
    Outcome,
    ReadOptions,
    clean_text,
    decimal_of,
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

SOURCE = "toggl"
LIST_KEYS = ("time_entries", "items", "data")
# A row without these cannot be read; any other missing trailing column is read as empty.
REQUIRED_COLUMNS = frozenset({"start date", "start time"})


def read_toggl(path: Path, options: ReadOptions, mapper: EntryMapper) -> Iterator[Outcome]:
    """Every record of a Toggl export (CSV, API JSON or webhook JSON) as events or a rejection."""
    if is_json_file(path):
        return map_records(
            read_json_records(path, LIST_KEYS), lambda item: mapper.convert(toggl_api_entry(item, options))
        )
    occurrences = numbering(path, options, REQUIRED_COLUMNS, toggl_csv_key)
    rows = read_table(path, options, REQUIRED_COLUMNS)
    return map_records(rows, lambda row: mapper.convert(toggl_csv_entry(row, options, occurrences)))


def toggl_csv_entry(row: CsvRow, options: ReadOptions, occurrences: Occurrences) -> SourceEntry:
    start, key = _csv_identity(row, options)
    email, user = row.get("email"), row.get("user")
    task = row.get("task")
    return SourceEntry(
        source=SOURCE,
        entry_id=stable_id(SOURCE, (*key, occurrences.next(key))),
        updated_at=options.exported_at,
        worker=source_ref("worker", SOURCE, email=email, name=user),
        project=source_ref("project", SOURCE, name=row.get("project"), client=row.get("client")),
        task=source_ref("task", SOURCE, name=task) if task else None,
        work_date=start.date(),
        duration_seconds=_csv_duration(row, start, options),
        billable=row.optional(parse_bool, "billable", label="Billable") or False,
        notes=clean_text(row.fields.get("description")),
    )


def toggl_csv_key(row: CsvRow, options: ReadOptions) -> tuple[object, ...]:
    """A row's identity tuple, who started it and when (`producers.parsing.numbering`); raises what
    `toggl_csv_entry` rejects the row for before numbering it."""
    return _csv_identity(row, options)[1]


def _csv_identity(row: CsvRow, options: ReadOptions) -> tuple[datetime, tuple[object, ...]]:
    start = _local(row, "start date", "start time", options)
    return start, (row.get("email") or row.get("user"), start.isoformat())


def _local(row: CsvRow, date_column: str, time_column: str, options: ReadOptions) -> datetime:
    day = row.parsed(lambda text: parse_date(text, options.date_order), date_column, label=date_column.capitalize())
    clock = row.parsed(parse_clock_time, time_column, label=time_column.capitalize())
    return datetime.combine(day, clock)


def _csv_duration(row: CsvRow, start: datetime, options: ReadOptions) -> int:
    written = row.optional(parse_duration, "duration", label="Duration")
    if written is not None:
        return written
    end = _local(row, "end date", "end time", options)
    if end < start:
        raise FieldError("End time", f"ends ({end}) before it starts ({start})")
    return int((end - start).total_seconds())


def toggl_api_entry(item: object, options: ReadOptions) -> SourceEntry:
    """A Toggl v9 time entry, or a webhook event wrapping one, as a source entry."""
    if not isinstance(item, Mapping):
        raise ValueError("a Toggl time entry must be a JSON object")
    entry: Mapping[str, object] = item
    deleted_by_action = False
    payload, metadata = item.get("payload"), item.get("metadata")
    if isinstance(payload, Mapping):
        action = metadata.get("action", "") if isinstance(metadata, Mapping) else ""
        deleted_by_action = str(action).lower() == "deleted"
        entry = payload
    entry_id = require(text_of(entry.get("id")), "id")
    duration = int(decimal_of(entry.get("duration") or 0))
    if duration < 0:
        raise ValueError(f"entry {entry_id} is still running; it is imported once stopped")
    start = parse_instant(require(text_of(entry.get("start")), "start"))
    deleted_at = text_of(entry.get("server_deleted_at"))
    updated_at = _updated_at(entry, deleted_at)
    return SourceEntry(
        source=SOURCE,
        entry_id=f"{SOURCE}-{entry_id}",
        updated_at=updated_at,
        worker=SourceRef(
            "worker",
            SOURCE,
            id=text_of(entry.get("user_id")),
            email=text_of(entry.get("user_email")),
            name=text_of(entry.get("user_name") or entry.get("username")),
        ),
        project=SourceRef(
            "project",
            SOURCE,
            id=text_of(entry.get("project_id")),
            name=text_of(entry.get("project_name")),
            client=text_of(entry.get("client_name")),
        ),
        task=_task(entry),
        work_date=start.astimezone(options.zone).date(),
        duration_seconds=duration,
        billable=bool(entry.get("billable", False)),
        notes=clean_text(text_of(entry.get("description"))),
        deleted=deleted_by_action or deleted_at is not None,
    )


def _updated_at(item: Mapping[str, object], deleted_at: str | None) -> datetime:
    at = parse_instant(require(text_of(item.get("at")), "at"))
    if deleted_at is None:
        return at
    deleted = parse_instant(deleted_at)
    # The deletion must outrank every earlier revision even when `at` was not bumped with it.
    return max(deleted, at + timedelta(seconds=1))


def _task(item: Mapping[str, object]) -> SourceRef | None:
    task_id, task_name = text_of(item.get("task_id")), text_of(item.get("task_name"))
    return SourceRef("task", SOURCE, id=task_id, name=task_name) if task_id or task_name else None
