"""The whole billing flow in one process and in memory: entry states, project books, reference data.

`BillingPipeline.handle` takes any input event and returns the events to emit, exactly as the
topology does across partitions and workers: entries and approvals go through the entry state
machine to their project's book; a project or contract event re-prices that project's book; a worker
event re-prices that worker's entries in every book; a billing response the engine refused opens
BILLING_REJECTED and tells the line's book, which takes the line back (`billing.refuse`). Tests use it
as the reference for what the distributed topology must produce, and it documents the dispatch the
topology distributes.
"""

from __future__ import annotations

from datetime import datetime

from backbone.domain import billing, entries, feedback
from backbone.domain.models import (
    ApprovalDecision,
    BillingResponse,
    Client,
    ContractVersion,
    Event,
    PostingAck,
    Project,
    TimeEntry,
    Worker,
)
from backbone.domain.reference import ReferenceData
from backbone.domain.routing import RoutingRules

_APPLIED = entries.Outcome.APPLIED


class BillingPipeline:
    """Entry states by time_entry_id and books by project_id, fed one event at a time."""

    def __init__(self, routing: RoutingRules, reference: ReferenceData | None = None) -> None:
        self.routing = routing
        self.reference = reference or ReferenceData()
        self.entries: dict[str, entries.EntryState] = {}
        self.books: dict[str, billing.ProjectBook] = {}
        self.opened: dict[str, datetime] = {}
        self.ignored = 0
        self.duplicates = 0

    def handle(self, event: Event) -> list[Event]:
        if isinstance(event, TimeEntry | ApprovalDecision):
            return self._record(event)
        if isinstance(event, PostingAck):
            return self._answer(event.posting_id, feedback.posting_feedback, event)
        if isinstance(event, BillingResponse):
            return self._answer(event.candidate_id, feedback.billing_feedback, event)
        return self._reference(event)  # type: ignore[arg-type]

    def _record(self, event: TimeEntry | ApprovalDecision) -> list[Event]:
        entry_id = event.time_entry_id  # read once: a pydantic model's attribute costs several times a dataclass's
        state = self.entries.get(entry_id) or entries.new_entry(entry_id)
        recorded = entries.record(state, event)
        self.entries[entry_id] = recorded.state
        if recorded.outcome != _APPLIED:  # `Enum.MEMBER` reads are slow in 3.11: one per event, not two
            self.duplicates += recorded.outcome == entries.Outcome.DUPLICATE
            self.ignored += recorded.outcome == entries.Outcome.IGNORED_AFTER_DELETION
        out: list[Event] = []
        for change in recorded.changes:
            out += self._settle(
                change.project_id,
                lambda book, c=change, at=change.occurred_at: billing.book_entry(book, c, self._context(at)),
            )
        return out

    def _reference(self, event: Client | Project | Worker | ContractVersion) -> list[Event]:
        moved_from = None
        if isinstance(event, ContractVersion):
            old = self.reference.contracts.get(event.contract_key)
            moved_from = old.project_id if old is not None and old.project_id != event.project_id else None
        self.reference.apply(event)
        context = self._context(event.occurred_at)
        if isinstance(event, Worker):
            out: list[Event] = []
            for project_id in sorted(self.books):
                out += self._settle(project_id, lambda b: billing.reprice_worker(b, event.worker_id, context))
            return out
        if isinstance(event, Project | ContractVersion):
            touched = [p for p in (event.project_id, moved_from) if p is not None and p in self.books]
            return [e for p in touched for e in self._settle(p, lambda b: billing.reprice(b, context))]
        return []  # a client's billing entity reaches the next candidate; it changes no amount

    def _answer(self, key: str, decide, answer: PostingAck | BillingResponse) -> list[Event]:  # type: ignore[no-untyped-def]
        was_open = self.opened.get(key)
        opened, out = decide(was_open, answer)
        if opened is None:
            self.opened.pop(key, None)
        else:
            self.opened[key] = opened
        refusal = feedback.refusal_of(was_open, answer) if isinstance(answer, BillingResponse) else None
        if refusal is not None and refusal.project_id in self.books:
            context = self._context(refusal.refused_at)
            out = [*out, *self._settle(refusal.project_id, lambda b: billing.refuse(b, refusal, context))]
        return list(out)

    def _settle(self, project_id: str, step) -> list[Event]:  # type: ignore[no-untyped-def]
        book = self.books.get(project_id) or billing.new_book(project_id)
        settled = step(book)
        self.books[project_id] = settled.book
        return list(settled.events)

    def _context(self, at: datetime) -> billing.Context:
        return billing.Context(self.reference, self.routing, at)  # positionally: keywords to a class cost a dict
