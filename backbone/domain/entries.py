"""The time entry state machine (billing-rules.md §1): which revision of an entry is billed.

Time entries and approval decisions arrive on two topics keyed by `time_entry_id`, in any relative
order. `record` folds one of them into an entry's `EntryState` (in place) and says what the project's
book must now price: the billed revision (the highest one whose last decision is APPROVED and whose
TimeEntry has been seen), the deleting revision (worth zero for good), or nothing. Duplicates (same event_id)
and anything after a deletion change nothing. The hand-off is an `EntryChange` addressed to a project,
because money, caps and contracts live with the project (see `billing.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from backbone.domain.construction import construct_from
from backbone.domain.ids import derive_event_id
from backbone.domain.models import ApprovalDecision, Decision, TimeEntry

EntryEvent = TimeEntry | ApprovalDecision

SEEN_EVENT_IDS = 64
"""How many event ids an entry remembers for duplicate detection (the most recent ones).

Bounded so an entry's state (and its changelog record) stays small however long it lives. A duplicate
older than the window is applied again, which is harmless: a revision re-recorded is the same
revision, and a decision re-applied is the decision in force unless a *later* decision for the same
revision arrived in between, which would take a redelivery more than 64 events of one entry late —
Kafka delivers an entry's events in order and the idempotent producer drops retry duplicates, so the
window only has to cover an upstream re-send, not history. Nothing is handed off when a re-applied
event leaves the priced view as it was (`_hand_off`), and amounts are deltas, so nothing is billed twice.
"""


class Outcome(StrEnum):
    APPLIED = "APPLIED"
    DUPLICATE = "DUPLICATE"
    IGNORED_AFTER_DELETION = "IGNORED_AFTER_DELETION"


_APPLIED, _DUPLICATE = Outcome.APPLIED, Outcome.DUPLICATE
_IGNORED_AFTER_DELETION, _APPROVED = Outcome.IGNORED_AFTER_DELETION, Decision.APPROVED
"""Enum members the core reads per entry, read once: in Python 3.11 `Enum.MEMBER` goes through the enum
metaclass's `__getattr__` hook, ~0.3 µs a read, some twenty reads per entry (docs/core-performance.md,
"Ninth session")."""


@dataclass(slots=True)
class EntryState:
    """Everything known about one entry: its revisions, the last decision on each, and where it is booked.

    Mutable on purpose: `record` updates it in place, which is what makes the core cheap. Whoever keeps
    a state keeps it under its entry's key and replaces nothing; a store writes it after `record`.
    """

    time_entry_id: str
    revisions: dict[int, TimeEntry] = field(default_factory=dict)
    decisions: dict[int, Decision] = field(default_factory=dict)
    deleted_revision: int | None = None
    seen_event_ids: dict[str, None] = field(default_factory=dict)
    """The last `SEEN_EVENT_IDS` event ids, oldest first (a dict is an insertion-ordered set)."""
    ignored: int = 0
    booked_project_id: str | None = None
    """The project whose book last heard about this entry (it must hear again when the entry moves)."""
    handed_off: int = 0
    """How many changes this entry has handed to books: each change carries its number (`sequence`)."""


class EntryChange(BaseModel):
    """What a project's book must price now for one entry: `entry` None means nothing is approved there.

    A pydantic model, not state: it travels between the topology's stages as JSON (`BookCommand`).
    """

    model_config = ConfigDict(frozen=True)

    time_entry_id: str
    project_id: str
    entry: TimeEntry | None
    correlation_id: str
    occurred_at: datetime
    sequence: int = 0
    """The entry's count of changes handed off, this one included: a change carries the entry's whole
    priced view, so a book holding a later change of the entry ignores an earlier one that reaches it
    late (a change can reach a book directly or through a topic; see `billing.book_entry`). 0: unknown,
    always applied."""


@dataclass(slots=True)  # a value; not frozen because a frozen dataclass is three times as dear to build
class Recorded:
    state: EntryState
    outcome: Outcome
    changes: tuple[EntryChange, ...] = ()


def new_entry(time_entry_id: str) -> EntryState:
    return EntryState(time_entry_id)  # positionally: keyword arguments to a class cost a dict per call


def record(state: EntryState, event: EntryEvent) -> Recorded:
    """Fold one TimeEntry or ApprovalDecision into the entry's state (in place); say what its book must
    re-price. The returned `state` is the same object, updated."""
    event_id = event.event_id or derive_event_id(event)
    if event_id in state.seen_event_ids:
        return Recorded(state, _DUPLICATE)
    _remember(state, event_id)
    if state.deleted_revision is not None:
        state.ignored += 1
        return Recorded(state, _IGNORED_AFTER_DELETION)
    if _unpriced(state, event):
        state.revisions[event.revision] = event  # type: ignore[assignment]  # a TimeEntry: see _unpriced
        return Recorded(state, _APPLIED)
    view_before, booked_before = priced_view(state), state.booked_project_id
    _fold(state, event)
    return _hand_off(state, view_before, booked_before, event.occurred_at)


def _remember(state: EntryState, event_id: str) -> None:
    """Add an event id to the entry's window, forgetting the oldest beyond `SEEN_EVENT_IDS`."""
    seen = state.seen_event_ids
    seen[event_id] = None
    if len(seen) > SEEN_EVENT_IDS:
        del seen[next(iter(seen))]


def _unpriced(state: EntryState, event: EntryEvent) -> bool:
    """A revision that is not deleting and not approved: recording it cannot change what is priced (the
    billed revision is an approved one), so there is nothing to compare or hand off. Half of all events
    are such revisions, arriving before their approval."""
    return isinstance(event, TimeEntry) and not event.deleted and state.decisions.get(event.revision) != _APPROVED


def _fold(state: EntryState, event: EntryEvent) -> None:
    if isinstance(event, TimeEntry):
        state.revisions[event.revision] = event
        if event.deleted:
            state.deleted_revision = event.revision
        return
    # decisions for one entry arrive in order, so the latest one for a revision is its last decision
    state.decisions[event.revision] = event.decision


def billed_revision(state: EntryState) -> TimeEntry | None:
    """The highest seen revision whose last decision is APPROVED (None when deleted or nothing approved)."""
    if state.deleted_revision is not None:
        return None
    revisions, best = state.revisions, None
    for revision, decision in state.decisions.items():  # one pass: it runs twice per event
        if decision == _APPROVED and revision in revisions and (best is None or revision > best):
            best = revision
    return None if best is None else revisions[best]


def priced_view(state: EntryState) -> TimeEntry | None:
    """What the book prices: the deleting revision (worth zero) once deleted, else the billed revision."""
    if state.deleted_revision is not None:
        return state.revisions[state.deleted_revision]
    return billed_revision(state)


def awaiting_approval(state: EntryState) -> TimeEntry | None:
    """The latest revision when nobody has decided on it yet (for the 'waiting for approval' gauge)."""
    if state.deleted_revision is not None or not state.revisions:
        return None
    latest = max(state.revisions)
    return None if latest in state.decisions else state.revisions[latest]


def correlation_of(state: EntryState) -> str:
    """The correlation id every derived event carries: the entry's own, else its time_entry_id."""
    for revision in sorted(state.revisions, reverse=True):
        correlation_id = state.revisions[revision].correlation_id
        if correlation_id:
            return correlation_id
    return state.time_entry_id


def _hand_off(state: EntryState, view_before: TimeEntry | None, booked_before: str | None, at: datetime) -> Recorded:
    view = priced_view(state)
    # `is` first: the views are usually the very same revision object, and pydantic's == compares fields
    # (a Python call even against None, which is what a first revision's view before is)
    if view is view_before or (view is not None and view_before is not None and view == view_before):
        return Recorded(state, _APPLIED)
    billed = None if state.deleted_revision is not None else view  # the priced view is the billed revision
    if booked_before is None and billed is None:
        return Recorded(state, _APPLIED)
    target = view.project_id if view is not None else booked_before
    assert target is not None  # booked_project_id is set whenever something was handed off before
    correlation = correlation_of(state)
    changes = []
    if booked_before is not None and booked_before != target:
        # the entry moved to another project: the old book reverses what it billed
        state.handed_off += 1
        changes.append(_change(state, booked_before, None, correlation, at))
    state.handed_off += 1
    changes.append(_change(state, target, view, correlation, at))
    state.booked_project_id = target
    return Recorded(state, _APPLIED, tuple(changes))


def _change(state: EntryState, project_id: str, entry: TimeEntry | None, correlation: str, at: datetime) -> EntryChange:
    # built without validation (see backbone.domain.construction): every value comes from a validated event
    return construct_from(
        EntryChange,
        {
            "time_entry_id": state.time_entry_id,
            "project_id": project_id,
            "entry": entry,
            "correlation_id": correlation,
            "occurred_at": at,
            "sequence": state.handed_off,
        },
    )
