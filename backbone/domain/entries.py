"""The time entry state machine (billing-rules.md §1): which revision of an entry is billed.

Time entries and approval decisions arrive on two topics keyed by `time_entry_id`, in any relative
order. `record` folds one of them into an entry's `EntryState` and says what the project's book must
now price: the billed revision (the highest one whose last decision is APPROVED and whose TimeEntry
has been seen), the deleting revision (worth zero for good), or nothing. Duplicates (same event_id)
and anything after a deletion change nothing. The hand-off is an `EntryChange` addressed to a project,
because money, caps and contracts live with the project (see `billing.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from backbone.domain.ids import derive_event_id
from backbone.domain.models import ApprovalDecision, Decision, TimeEntry

EntryEvent = TimeEntry | ApprovalDecision


class Outcome(StrEnum):
    APPLIED = "APPLIED"
    DUPLICATE = "DUPLICATE"
    IGNORED_AFTER_DELETION = "IGNORED_AFTER_DELETION"


class EntryState(BaseModel):
    """Everything known about one entry: its revisions, the last decision on each, and where it is booked."""

    model_config = ConfigDict(frozen=True)

    time_entry_id: str
    revisions: dict[int, TimeEntry] = {}
    decisions: dict[int, Decision] = {}
    deleted_revision: int | None = None
    seen_event_ids: frozenset[str] = frozenset()
    ignored: int = 0
    booked_project_id: str | None = None
    """The project whose book last heard about this entry (it must hear again when the entry moves)."""


class EntryChange(BaseModel):
    """What a project's book must price now for one entry: `entry` None means nothing is approved there."""

    model_config = ConfigDict(frozen=True)

    time_entry_id: str
    project_id: str
    entry: TimeEntry | None
    correlation_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class Recorded:
    state: EntryState
    outcome: Outcome
    changes: tuple[EntryChange, ...] = ()


def new_entry(time_entry_id: str) -> EntryState:
    return EntryState(time_entry_id=time_entry_id)


def record(state: EntryState, event: EntryEvent) -> Recorded:
    """Fold one TimeEntry or ApprovalDecision into the entry's state; say what its book must re-price."""
    event_id = event.event_id or derive_event_id(event)
    if event_id in state.seen_event_ids:
        return Recorded(state, Outcome.DUPLICATE)
    seen = state.seen_event_ids | {event_id}
    if state.deleted_revision is not None:
        return Recorded(
            state.model_copy(update={"seen_event_ids": seen, "ignored": state.ignored + 1}),
            Outcome.IGNORED_AFTER_DELETION,
        )
    after = _fold(state, event).model_copy(update={"seen_event_ids": seen})
    return _hand_off(state, after, event.occurred_at)


def _fold(state: EntryState, event: EntryEvent) -> EntryState:
    if isinstance(event, TimeEntry):
        update: dict[str, object] = {"revisions": {**state.revisions, event.revision: event}}
        if event.deleted:
            update["deleted_revision"] = event.revision
        return state.model_copy(update=update)
    # decisions for one entry arrive in order, so the latest one for a revision is its last decision
    return state.model_copy(update={"decisions": {**state.decisions, event.revision: event.decision}})


def billed_revision(state: EntryState) -> TimeEntry | None:
    """The highest seen revision whose last decision is APPROVED (None when deleted or nothing approved)."""
    if state.deleted_revision is not None:
        return None
    approved = [r for r, d in state.decisions.items() if d == Decision.APPROVED and r in state.revisions]
    return state.revisions[max(approved)] if approved else None


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
        if state.revisions[revision].correlation_id:
            return state.revisions[revision].correlation_id  # type: ignore[return-value]
    return state.time_entry_id


def _hand_off(before: EntryState, after: EntryState, at: datetime) -> Recorded:
    view = priced_view(after)
    if view == priced_view(before) or (before.booked_project_id is None and billed_revision(after) is None):
        return Recorded(after, Outcome.APPLIED)
    target = view.project_id if view is not None else before.booked_project_id
    assert target is not None  # booked_project_id is set whenever something was handed off before
    correlation = correlation_of(after)
    changes = []
    if before.booked_project_id is not None and before.booked_project_id != target:
        # the entry moved to another project: the old book reverses what it billed
        changes.append(
            EntryChange(
                time_entry_id=after.time_entry_id,
                project_id=before.booked_project_id,
                entry=None,
                correlation_id=correlation,
                occurred_at=at,
            )
        )
    changes.append(
        EntryChange(
            time_entry_id=after.time_entry_id, project_id=target, entry=view, correlation_id=correlation, occurred_at=at
        )
    )
    return Recorded(after.model_copy(update={"booked_project_id": target}), Outcome.APPLIED, tuple(changes))
