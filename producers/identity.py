"""Identity mapping: source users, projects and tasks become canonical worker, project and task ids.

Trackers know people by user id, email or name and projects by id, code or name; the backbone knows
them by the ERP's ids. A project's code or name is only unique within its client ("Website" of client
A is not "Website" of client B), so a project reference carries its client: the table can map by
(client, project) with its optional `client` column, and an unmapped project's id includes the client
(`toggl:client:Acme:project:Website`). A table row without a client matches that code or name under
every client. `IdentityMap` resolves a `SourceRef` by configurable rules: an explicit table
(file) matched on the attributes in the order the rules give, and optionally "the project code *is*
the project id" / "the email *is* the worker id" for firms that type ERP ids into the tracker.

Nothing is ever dropped for want of a mapping. By default an unmapped record is published with an id
built from the source identifiers (`toggl:worker:ann@example.com`), so the topology raises
UNKNOWN_WORKER / UNKNOWN_PROJECT and the exception queue shows what to map. With the policy `report`
the record is rejected instead, with its line number, and nothing about it is published.

`EntryMapper` turns a tracker-neutral `SourceEntry` into the canonical `TimeEntry` (and the
`ApprovalDecision` when the source says it was decided); every connector ends there. An entry the
source says it invoiced carries `invoiced_at_source` (and the source's invoice id), and counts as
approved unless the source says otherwise: the invoice settled it, and the topology must see an
approved revision to report it as already invoiced (it never bills it; billing-rules.md §2).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from backbone.domain.models import ApprovalDecision, Decision, Event, TimeEntry
from producers.parsing import FieldError, revision_at

if TYPE_CHECKING:
    from producers.spool import Encoded, EventEncoder

Kind = Literal["worker", "project", "task"]
UnmappedPolicy = Literal["publish", "report"]
ATTRIBUTES = ("id", "email", "code", "name")
RESOLVED_KEPT = 65_536
"""Distinct references an `EntryMapper` remembers the resolution of."""


class UnmappedIdentityError(FieldError):
    """A worker or project has no mapping and the policy says to report it."""


def _normalise(attribute: str, value: str) -> str:
    # Emails, codes and names are compared the way people expect them to match; ids exactly.
    if attribute == "id":
        return value.strip()
    return " ".join(value.strip().casefold().split())


@dataclass(frozen=True)
class SourceRef:
    """What a source system says about one user, project or task."""

    kind: Kind
    source: str
    id: str | None = None
    email: str | None = None
    code: str | None = None
    name: str | None = None
    client: str | None = None  # the client a project's code or name belongs to

    def attribute(self, name: str) -> str | None:
        value = getattr(self, name, None)
        return value if value not in (None, "") else None

    def describe(self) -> str:
        shown = [f"{a}={self.attribute(a)!r}" for a in (*ATTRIBUTES, "client") if self.attribute(a)]
        return f"{self.source} {self.kind} ({', '.join(shown) or 'no identifiers'})"


_REFS: dict[tuple[str | None, ...], SourceRef] = {}


def source_ref(
    kind: Kind,
    source: str,
    *,
    id: str | None = None,
    email: str | None = None,
    code: str | None = None,
    name: str | None = None,
    client: str | None = None,
) -> SourceRef:
    """`SourceRef(kind, source, ...)`, one object for the same identifiers: an export names the same few
    people and projects on every row, and making a frozen dataclass per row cost about a microsecond
    (docs/imports.md, "Eleventh session"). A `SourceRef` never changes, so sharing one is safe."""
    key = (kind, source, id, email, code, name, client)
    ref = _REFS.get(key)
    if ref is None:
        if len(_REFS) >= RESOLVED_KEPT:  # bounded memory whatever the file's size
            _REFS.clear()
        ref = _REFS[key] = SourceRef(kind, source, id, email, code, name, client)
    return ref


class IdentityRules(BaseModel):
    """Which attributes to match, in order, per kind; and which source attributes are canonical ids."""

    model_config = ConfigDict(frozen=True)

    worker: tuple[str, ...] = ("id", "email", "name")
    project: tuple[str, ...] = ("id", "code", "name")
    task: tuple[str, ...] = ("id", "name")
    project_code_is_id: bool = False
    worker_email_is_id: bool = False

    def order(self, kind: Kind) -> tuple[str, ...]:
        return tuple(getattr(self, kind))


@dataclass(frozen=True)
class Resolved:
    canonical_id: str
    mapped: bool


# kind, attribute, normalised value, source ("" = any source), normalised client ("" = any client)
TableKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class IdentityMap:
    """Resolves source references to canonical ids. Empty by default: everything falls back."""

    table: Mapping[TableKey, str] = field(default_factory=dict)
    rules: IdentityRules = field(default_factory=IdentityRules)

    def resolve(self, ref: SourceRef) -> Resolved:
        for attribute in self.rules.order(ref.kind):
            value = ref.attribute(attribute)
            if value is None:
                continue
            found = self._lookup(ref, attribute, value)
            if found:
                return Resolved(found, mapped=True)
        direct = self._direct(ref)
        if direct:
            return Resolved(direct, mapped=True)
        return Resolved(fallback_id(ref), mapped=False)

    def _lookup(self, ref: SourceRef, attribute: str, value: str) -> str | None:
        normalised = _normalise(attribute, value)
        client = _normalise("client", ref.client) if ref.kind == "project" and ref.client else ""
        scopes = [(ref.source, client), ("", client)] + ([(ref.source, ""), ("", "")] if client else [])
        return next(
            (found for source, c in scopes if (found := self.table.get((ref.kind, attribute, normalised, source, c)))),
            None,
        )

    def _direct(self, ref: SourceRef) -> str | None:
        if ref.kind == "project" and self.rules.project_code_is_id:
            return ref.attribute("code")
        if ref.kind == "worker" and self.rules.worker_email_is_id:
            return ref.attribute("email")
        return None

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]], rules: IdentityRules | None = None) -> IdentityMap:
        table: dict[TableKey, str] = {}
        for number, row in enumerate(rows, start=1):
            kind, attribute = _field(row, "kind", number), _field(row, "attribute", number)
            if kind not in ("worker", "project", "task") or attribute not in ATTRIBUTES:
                raise ValueError(
                    f"identity row {number}: kind must be worker/project/task and "
                    f"attribute one of {', '.join(ATTRIBUTES)}"
                )
            value, canonical = _field(row, "value", number), _field(row, "canonical_id", number)
            source = (row.get("source") or "").strip().lower()
            client = _normalise("client", row.get("client") or "")
            if client and kind != "project":
                raise ValueError(f"identity row {number}: only project rows can name a client")
            table[(kind, attribute, _normalise(attribute, value), source, client)] = canonical.strip()
        return cls(table=table, rules=rules or IdentityRules())

    @classmethod
    def from_file(cls, path: Path, rules: IdentityRules | None = None) -> IdentityMap:
        """A table: CSV with `kind,attribute,value,canonical_id[,source][,client]`, or a JSON list of such objects."""
        if path.suffix.lower() == ".json":
            rows = json.loads(path.read_text(encoding="utf-8-sig"))
            return cls.from_rows(rows, rules)
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return cls.from_rows(list(csv.DictReader(handle)), rules)


def _field(row: Mapping[str, str], name: str, number: int) -> str:
    value = row.get(name)
    if value is None or str(value).strip() == "":
        raise ValueError(f"identity row {number}: {name} is missing")
    return str(value).strip()


def fallback_id(ref: SourceRef) -> str:
    """The id an unmapped reference is published with: source, kind and its best identifier.

    A project known by code or name only is scoped by its client, which makes the pair unique.
    """
    for attribute in ("id", "email", "code", "name"):
        value = ref.attribute(attribute)
        if value:
            scope = (
                f"client:{ref.client.strip()}:" if attribute != "id" and ref.kind == "project" and ref.client else ""
            )
            return f"{ref.source}:{scope}{ref.kind}:{value.strip()}"
    return f"{ref.source}:{ref.kind}:unknown"


# --- from a tracker's entry to canonical events ---------------------------------------------------


@dataclass(slots=True)
class SourceEntry:
    """A time entry as any tracker describes it, before identity mapping.

    Made once per row of an export and never changed: not frozen, since a frozen dataclass's `__init__`
    sets each of its sixteen fields through `object.__setattr__`, five times the cost (docs/imports.md,
    "Eleventh session")."""

    source: str
    entry_id: str
    updated_at: datetime
    worker: SourceRef
    project: SourceRef
    work_date: date
    duration_seconds: int
    billable: bool
    task: SourceRef | None = None
    notes: str | None = None
    deleted: bool = False
    decision: Decision | None = None
    approver: str | None = None
    comment: str | None = None
    invoiced: bool | None = None  # None: the source does not say
    invoice_id: str | None = None

    @property
    def revision(self) -> int:
        return revision_at(self.updated_at)


class EntryMapper:
    """Maps `SourceEntry`s to canonical events under one identity map and unmapped policy.

    `convert` gives the events as models (`events`), or, once `encode_with` gave it an encoder, encoded
    for the spool (`encoded`): the canonical values written by the compiled line writers, a model built
    only for values they cannot vouch for (it then names what is wrong). Both give the same bytes.
    """

    def __init__(self, identity: IdentityMap | None = None, unmapped: UnmappedPolicy = "publish") -> None:
        self.identity = identity or IdentityMap()
        self.unmapped = unmapped
        self._resolved: dict[SourceRef, Resolved] = {}
        self._encoder: EventEncoder | None = None
        self._instant: tuple[datetime, str, int] | None = None
        self.convert: Callable[[SourceEntry], tuple[Any, ...]] = self.events

    def encode_with(self, encoder: EventEncoder) -> None:
        """From now on `convert` gives encoded events (`encoded`) instead of models."""
        self._encoder = encoder
        self.convert = self.encoded

    def events(self, entry: SourceEntry) -> tuple[Event, ...]:
        worker, project, task = self._references(entry)
        time_entry = _time_entry(entry, worker, project, task)
        if entry.deleted or (entry.decision is None and not entry.invoiced):
            return (time_entry,)
        return (time_entry, _decision(entry))

    def encoded(self, entry: SourceEntry) -> tuple[Encoded, ...]:
        """The events of `events`, encoded by `encode_with`'s encoder without a model per event."""
        assert self._encoder is not None
        worker, project, task = self._references(entry)
        at, revision = self._instant_of(entry.updated_at)
        values = {
            "occurred_at": at,
            "source_system": entry.source,
            "time_entry_id": entry.entry_id,
            "revision": revision,
            "worker_id": worker,
            "project_id": project,
            "task_id": task,
            "work_date": entry.work_date.isoformat(),
            "duration_seconds": entry.duration_seconds,
            "billable": entry.billable,
            "notes": entry.notes,
            "deleted": entry.deleted,
            "invoiced_at_source": entry.invoiced,
            "source_invoice_id": entry.invoice_id,
        }
        time_entry = self._encoder.values(TimeEntry, values, lambda: _time_entry(entry, worker, project, task))
        if entry.deleted or (entry.decision is None and not entry.invoiced):
            return (time_entry,)
        decision, approver, comment = _decided(entry)
        approval = {
            "occurred_at": at,
            "source_system": entry.source,
            "time_entry_id": entry.entry_id,
            "revision": revision,
            "decision": decision.value,
            "approver_id": approver,
            "decided_at": at,
            "comment": comment,
        }
        return (time_entry, self._encoder.values(ApprovalDecision, approval, lambda: _decision(entry)))

    def _instant_of(self, instant: datetime) -> tuple[str, int]:
        """An update time's RFC 3339 text and revision; a file's rows mostly share one (the export's)."""
        last = self._instant
        if last is None or last[0] is not instant:
            last = self._instant = (instant, instant.isoformat(), revision_at(instant))
        return last[1], last[2]

    def _references(self, entry: SourceEntry) -> tuple[str, str, str | None]:
        worker = self._required(entry.worker)
        project = self._required(entry.project)
        task = self._resolve(entry.task).canonical_id if entry.task else None
        return worker, project, task

    def _resolve(self, ref: SourceRef) -> Resolved:
        """`IdentityMap.resolve`, remembered: an export names the same few people and projects on every
        row, and resolving one (normalising, trying each attribute in up to four scopes) was a fifth of
        a row's mapping (docs/benchmarks.md). The map never changes, so neither does the answer."""
        resolved = self._resolved.get(ref)
        if resolved is None:
            if len(self._resolved) >= RESOLVED_KEPT:  # bounded memory whatever the file's size
                self._resolved.clear()
            resolved = self._resolved[ref] = self.identity.resolve(ref)
        return resolved

    def _required(self, ref: SourceRef) -> str:
        resolved = self._resolve(ref)
        if not resolved.mapped and self.unmapped == "report":
            tried = ", ".join(self.identity.rules.order(ref.kind))
            raise UnmappedIdentityError(ref.kind, f"{ref.describe()} has no mapping (tried {tried})")
        return resolved.canonical_id


def _time_entry(entry: SourceEntry, worker: str, project: str, task: str | None) -> TimeEntry:
    return TimeEntry(
        occurred_at=entry.updated_at,
        source_system=entry.source,
        time_entry_id=entry.entry_id,
        revision=entry.revision,
        worker_id=worker,
        project_id=project,
        task_id=task,
        work_date=entry.work_date,
        duration_seconds=entry.duration_seconds,
        billable=entry.billable,
        notes=entry.notes,
        deleted=entry.deleted,
        invoiced_at_source=entry.invoiced,
        source_invoice_id=entry.invoice_id,
    )


def _decided(entry: SourceEntry) -> tuple[Decision, str, str | None]:
    """The decision, approver and comment of an entry the source decided or invoiced."""
    decision, approver, comment = entry.decision, entry.approver, entry.comment
    if decision is None:  # invoiced at the source and not decided there: the invoice decided it
        decision, approver = Decision.APPROVED, approver or f"{entry.source}:invoice"
        invoice = f" ({entry.invoice_id})" if entry.invoice_id else ""
        comment = comment or f"invoiced in {entry.source}{invoice}"
    return decision, approver or f"{entry.source}:approver-unknown", comment


def _decision(entry: SourceEntry) -> ApprovalDecision:
    decision, approver, comment = _decided(entry)
    return ApprovalDecision(
        occurred_at=entry.updated_at,
        source_system=entry.source,
        time_entry_id=entry.entry_id,
        revision=entry.revision,
        decision=decision,
        approver_id=approver,
        decided_at=entry.updated_at,
        comment=comment,
    )
