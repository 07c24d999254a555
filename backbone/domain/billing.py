"""How an approved entry becomes money (billing-rules.md §2, §6, §7, §8): the project's book.

A `ProjectBook` holds, per entry of one project, what has been billed, posted and flagged so far
(a `Ledger`). Every change goes through `settle`: value the entry now (`evaluate`: validation in the
rule's order, pricing, cost), cut it to the contract's not-to-exceed cap, and emit only the difference
to what was emitted before — a TIME candidate, an ADJUSTMENT or a REVERSAL, the REVENUE and COST
posting requests that follow the same deltas, and business exceptions that OPEN and RESOLVE. Because
outputs are deltas against the book, the net amount per entry depends only on the final inputs, not
on their order; ids are derived from the transition, so a replay of one history repeats its ids.

A candidate the billing engine refuses is taken back (`refuse`): the engine does not hold it, so the
book does not count it as billed, reverses its REVENUE posting, never sends the engine a reversal of it,
and bills the entry again once its terms change, resolving BILLING_REJECTED (docs/delivery.md). For that
each ledger keeps the lines it emitted (`Line`).

The book is per project on purpose: contract versions, caps and master-data fixes all re-price "the
entries of a project", and the topology keys the book's table by `project_id`.

Books and ledgers are slotted dataclasses that these functions update in place (docs/core-performance.md):
each operation returns `Settled` with the same book, the events to emit and the ledgers it changed (what a
store must write); the per-contract totals move by each ledger's difference; and an operation that raises
puts the book back as it was, so a dead-lettered record leaves no half-settled book behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, Protocol

from backbone.domain import ids
from backbone.domain.construction import construct, construct_from
from backbone.domain.entries import EntryChange
from backbone.domain.feedback import Refusal
from backbone.domain.models import (
    BillingType,
    BusinessException,
    CandidateKind,
    ContractVersion,
    Event,
    ExceptionKind,
    ExceptionStatus,
    InvoiceCandidate,
    Owner,
    PostingRequest,
    PostingType,
    Project,
    ProjectStatus,
    SubjectType,
    TimeEntry,
    Worker,
)
from backbone.domain.money import ZERO, cost_amount, line_amount, round_minutes
from backbone.domain.rating import contract_cap, resolve_rate, select_contract_version
from backbone.domain.reference import ReferenceData
from backbone.domain.routing import RoutingRules

SOURCE_SYSTEM = "backbone"

OWNERS: dict[ExceptionKind, Owner] = {
    ExceptionKind.UNKNOWN_WORKER: Owner.MASTER_DATA,
    ExceptionKind.UNKNOWN_PROJECT: Owner.MASTER_DATA,
    ExceptionKind.PROJECT_NOT_ACTIVE: Owner.PMO,
    ExceptionKind.NO_CONTRACT: Owner.FINANCE_OPS,
    ExceptionKind.MISSING_TAX_CODE: Owner.FINANCE_OPS,
    ExceptionKind.NO_RATE: Owner.FINANCE_OPS,
    ExceptionKind.CAP_EXCEEDED: Owner.FINANCE_OPS,
    ExceptionKind.BILLING_REJECTED: Owner.FINANCE_OPS,
    ExceptionKind.POSTING_REJECTED: Owner.FINANCE_OPS,
    ExceptionKind.POSTING_ACK_TIMEOUT: Owner.FINANCE_OPS,
    ExceptionKind.INVOICED_AT_SOURCE: Owner.FINANCE_OPS,
}
"""Who works each kind of exception (canonical-model.md)."""

BLOCKS_EVERYTHING = frozenset(
    {ExceptionKind.UNKNOWN_WORKER, ExceptionKind.UNKNOWN_PROJECT, ExceptionKind.PROJECT_NOT_ACTIVE}
)
"""Validation failures 1–3: no candidate and no posting. Failures 5–7 still post the cost."""

DETAILS: dict[ExceptionKind, str] = {
    ExceptionKind.UNKNOWN_WORKER: "worker {worker_id} is not in the worker master data",
    ExceptionKind.UNKNOWN_PROJECT: "project {project_id} is not in the project master data",
    ExceptionKind.PROJECT_NOT_ACTIVE: "project {project_id} is not ACTIVE",
    ExceptionKind.NO_CONTRACT: "no ACTIVE contract version of project {project_id} covers {work_date}",
    ExceptionKind.MISSING_TAX_CODE: "the contract version covering {work_date} has no tax_code",
    ExceptionKind.NO_RATE: "no rate card line and no default rate price worker {worker_id} on {work_date}",
    ExceptionKind.CAP_EXCEEDED: "the contract's not-to-exceed cap cut this entry",
    ExceptionKind.INVOICED_AT_SOURCE: "{source_system} invoiced this entry already ({invoice}); it is not billed again",
}

REPORTED_ONLY = frozenset({ExceptionKind.INVOICED_AT_SOURCE})
"""Kinds that report a fact nobody has to act on: emitted once, RESOLVED from the start, never at risk."""

_PROJECT_ACTIVE, _TIME_AND_MATERIALS = ProjectStatus.ACTIVE, BillingType.TIME_AND_MATERIALS
_CANDIDATE_TIME, _POSTING_REVENUE, _POSTING_COST = CandidateKind.TIME, PostingType.REVENUE, PostingType.COST
"""Enum members the core reads per entry, read once: in Python 3.11 `Enum.MEMBER` goes through the enum
metaclass's `__getattr__` hook, ~0.3 µs a read, some twenty reads per entry (docs/core-performance.md,
"Ninth session")."""


# --- state -----------------------------------------------------------------------------------------
# Slotted dataclasses updated in place (docs/core-performance.md): copying a ledger per change and a book per
# entry made the core pay for every entry it already held. Events stay frozen pydantic models.


@dataclass(slots=True)
class Pricing:
    """How the billed revision is priced now (its `amount` is the uncapped worth).

    A value: replaced, never changed. Not `frozen` only because a frozen dataclass's `__init__` sets each
    field through `object.__setattr__`, which made it three times as dear, and one is built per entry.
    """

    contract_id: str
    contract_version: int
    billable_minutes: int
    hourly_rate: Decimal
    discount_percent: Decimal
    amount: Decimal
    currency: str
    tax_code: str | None
    client_id: str
    billing_entity: str | None
    role: str | None


@dataclass(slots=True, frozen=True)
class RaisedException:
    """An exception the book has OPEN for an entry, as last emitted."""

    amount_at_risk: Decimal | None
    currency: str | None
    opened_at: datetime


@dataclass(slots=True)
class Line:
    """An invoice candidate the book emitted for an entry, kept so that the billing engine's refusal of it
    can be taken back exactly (amount, minutes and the terms it carried).

    A value: replaced, never changed, so a ledger's snapshot still holds the line as it was.
    """

    candidate_id: str
    amount: Decimal
    minutes: int
    pricing: Pricing
    refused_at: datetime | None = None
    """When the engine's refusal opened BILLING_REJECTED; None while the engine is taken to hold the line."""
    resolved: bool = False
    """A refused line whose BILLING_REJECTED the book resolved (the entry was billed again, or owes nothing)."""

    @property
    def pending(self) -> bool:
        """Refused, and not billed again yet."""
        return self.refused_at is not None and not self.resolved


@dataclass(slots=True)
class Ledger:
    """One entry in the book: what it is, and what was billed, posted and flagged for it so far.

    Updated in place by the book's operations; `exceptions` is replaced, never mutated, so that a
    shallow snapshot of the fields tells whether anything changed (`_snapshot`).
    """

    time_entry_id: str
    correlation_id: str
    entry: TimeEntry | None = None
    """The revision to price (a deleting revision prices at zero); None: nothing approved here."""
    last_seen: TimeEntry | None = None
    """The latest revision the book priced, kept for reversal lines after un-approval."""
    billed: Decimal = ZERO
    billed_minutes: int = 0
    billed_pricing: Pricing | None = None
    contract_id: str | None = None
    """The contract the billed amount counts against (for its cap)."""
    time_candidate_id: str | None = None
    time_revenue_posting_id: str | None = None
    candidates: int = 0
    worth: Decimal = ZERO
    at_risk: Decimal = ZERO
    cost_posted: Decimal = ZERO
    cost_currency: str | None = None
    time_cost_posting_id: str | None = None
    cost_postings: int = 0
    erp_target: str | None = None
    exceptions: dict[ExceptionKind, RaisedException] = field(default_factory=dict)
    lines: tuple[Line, ...] = ()
    """Every candidate emitted for the entry, in order (replaced as a whole, never mutated)."""
    sequence: int = 0
    """The `EntryChange.sequence` of the latest change of the entry this book priced (0: none known)."""


_LEDGER_FIELDS = tuple(f.name for f in fields(Ledger))
_snapshot = attrgetter(*_LEDGER_FIELDS)
"""A ledger's field values as a tuple: compared before and after settling, it says whether to write it;
kept from before an operation, it puts the ledger back if the operation fails."""


class Ledgers(Protocol):
    """A book's ledgers by entry id, as the operations below use them: what a dict does.

    The topology keeps them in its ledger store rather than in the book (memory stays flat with
    millions of entries), behind this; values from `items`/`values` are read, never changed, and a
    ledger to change is taken with `get` or `[]`."""

    def get(self, entry_id: str, /) -> Ledger | None: ...

    def __getitem__(self, entry_id: str, /) -> Ledger: ...

    def __setitem__(self, entry_id: str, ledger: Ledger, /) -> None: ...

    def pop(self, entry_id: str, default: None, /) -> Ledger | None: ...

    def items(self) -> Iterable[tuple[str, Ledger]]: ...

    def values(self) -> Iterable[Ledger]: ...


@dataclass(slots=True)
class ProjectBook:
    """All entries of one project, with per-contract running totals for the not-to-exceed cap.

    The totals always equal the sum over the ledgers; they move by each settled ledger's difference
    (`_uncount` before, `_count` after), so no operation ever sums or copies the whole book.
    """

    project_id: str
    ledgers: Ledgers = field(default_factory=dict[str, Ledger])
    """By entry id: a dict, or a view of where a processor keeps them (`Ledgers`)."""
    billed_by_contract: dict[str, Decimal] = field(default_factory=dict)
    at_risk_by_contract: dict[str, Decimal] = field(default_factory=dict)

    def workers(self) -> set[str]:
        return {ledger.last_seen.worker_id for ledger in self.ledgers.values() if ledger.last_seen}


def new_book(project_id: str) -> ProjectBook:
    return ProjectBook(project_id=project_id)


def book_of(project_id: str, ledgers: Iterable[Ledger]) -> ProjectBook:
    """A project's book rebuilt from its ledgers (the per-contract totals follow from them)."""
    return open_book(project_id, {ledger.time_entry_id: ledger for ledger in ledgers})


def open_book(project_id: str, ledgers: Ledgers) -> ProjectBook:
    """A project's book over the ledgers it already has, wherever they are kept (the totals are counted
    once here, then move by each operation's differences)."""
    book = ProjectBook(project_id=project_id, ledgers=ledgers)
    for ledger in ledgers.values():
        _count(book, ledger)
    return book


@dataclass(slots=True)  # not frozen, like the other per-call values here: see Pricing
class Settled:
    """What a book operation did: `book` is the same book, updated in place; `events` are to be emitted;
    `changed` are the ledgers that differ from before, in settling order (what a store must write)."""

    book: ProjectBook
    events: tuple[Event, ...]
    changed: tuple[Ledger, ...] = ()


@dataclass(slots=True)  # a value, not frozen for its cost (see Pricing): one is built per book command
class Context:
    """What pricing reads besides the book: master data, ERP routing and the time of the trigger."""

    reference: ReferenceData
    routing: RoutingRules
    at: datetime

    def __post_init__(self) -> None:
        # Output events are built without validation (`construct`), so the one value that does not
        # come from a validated event is normalised here, as the models' Instant validator would do.
        if self.at.tzinfo is None:
            raise ValueError("a billing context needs an aware instant, e.g. an event's occurred_at")
        if self.at.tzinfo is not UTC:  # validated instants already are UTC; converting them costs a copy
            self.at = self.at.astimezone(UTC)


# --- valuation (§2–§5) ------------------------------------------------------------------------------


@dataclass(slots=True)  # a value (see Pricing)
class Valuation:
    """What an entry is worth now. `pricing` is set only when it may be billed; `cost` when it may be posted."""

    blocked: ExceptionKind | None = None
    pricing: Pricing | None = None
    estimate: Pricing | None = None
    cost: Decimal | None = None
    cost_currency: str | None = None
    project: Project | None = None
    invoiced_at_source: bool = False

    @property
    def worth(self) -> Decimal:
        return self.pricing.amount if self.pricing else ZERO


NOTHING = Valuation()


def evaluate(entry: TimeEntry | None, reference: ReferenceData) -> Valuation:
    """Validate the billed revision in the rule's order and price it; the first failure names the block."""
    if entry is None or entry.deleted:
        return NOTHING
    worker = reference.workers.get(entry.worker_id)
    if worker is None:
        return Valuation(blocked=ExceptionKind.UNKNOWN_WORKER)
    project = reference.projects.get(entry.project_id)
    if project is None:
        return Valuation(blocked=ExceptionKind.UNKNOWN_PROJECT)
    if project.status != _PROJECT_ACTIVE:
        return Valuation(
            blocked=ExceptionKind.PROJECT_NOT_ACTIVE, project=project, estimate=price(entry, worker, project, reference)
        )
    currency = worker.cost_currency  # read once: a pydantic model's attribute costs several times a dataclass's
    cost = cost_amount(entry.duration_seconds, worker.cost_rate, currency)
    if not (entry.billable and project.billing_type == _TIME_AND_MATERIALS):
        return Valuation(cost=cost, cost_currency=currency, project=project)
    if entry.invoiced_at_source:
        # billable, but the source invoiced it: worth nothing here (no candidate, no REVENUE), cost still posted
        return Valuation(cost=cost, cost_currency=currency, project=project, invoiced_at_source=True)
    # the covering version and its rate are looked up once and serve both the checks and the price
    version, rate = _terms(entry, worker, reference)
    blocked = _billing_block(version, rate)
    priced = _pricing(entry, worker, project, version, rate, reference) if version and rate is not None else None
    if blocked is not None:
        return Valuation(blocked=blocked, estimate=priced, cost=cost, cost_currency=currency, project=project)
    return Valuation(pricing=priced, cost=cost, cost_currency=currency, project=project)


def _terms(entry: TimeEntry, worker: Worker, reference: ReferenceData) -> tuple[ContractVersion | None, Decimal | None]:
    """The contract version covering the work date and the rate it gives this work (§3, §4)."""
    version = select_contract_version(reference.versions_of(entry.project_id), entry.work_date)
    if version is None:
        return None, None
    return version, resolve_rate(version, entry.worker_id, worker.role, entry.task_id)


def _billing_block(version: ContractVersion | None, rate: Decimal | None) -> ExceptionKind | None:
    """Steps 5–7: contract, tax code, rate."""
    if version is None:
        return ExceptionKind.NO_CONTRACT
    if not version.tax_code:
        return ExceptionKind.MISSING_TAX_CODE
    if rate is None:
        return ExceptionKind.NO_RATE
    return None


def price(
    entry: TimeEntry, worker: Worker, project: Project, reference: ReferenceData, *, require_tax_code: bool = True
) -> Pricing | None:
    """The entry priced under the covering contract version, or None when no version or rate applies."""
    version, rate = _terms(entry, worker, reference)
    if version is None or rate is None or (require_tax_code and not version.tax_code):
        return None
    return _pricing(entry, worker, project, version, rate, reference)


def _pricing(
    entry: TimeEntry,
    worker: Worker,
    project: Project,
    version: ContractVersion,
    rate: Decimal,
    reference: ReferenceData,
) -> Pricing:
    minutes = round_minutes(entry.duration_seconds, version.rounding_increment_minutes, version.rounding_mode)
    # the fields read twice are read once: a pydantic model's attribute costs several times a dataclass's
    client_id, discount, currency = project.client_id, version.discount_percent, version.currency
    client = reference.clients.get(client_id)
    # positionally, in the order of Pricing's fields: keyword arguments to a class are packed into a dict and
    # unpacked again for its __init__, which made this value three times as dear to build (0.9 against 0.3 µs)
    return Pricing(
        version.contract_id,
        version.version,
        minutes,
        rate,
        discount,
        line_amount(minutes, rate, discount, currency),  # amount
        currency,
        version.tax_code,
        client_id,
        client.billing_entity if client else None,
        worker.role,
    )


# --- the book's operations ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Settling:
    """One operation on a book: the events in emission order, the ledgers it changed, and what it needs
    to put the book back as it was if it fails half-way (books are updated in place, and a record that
    fails is dead-lettered while its partition goes on: a half-settled book must not outlive it)."""

    context: Context
    billed_before: dict[str, Decimal]
    at_risk_before: dict[str, Decimal]
    events: list[Event] = field(default_factory=list)
    changed: dict[str, Ledger] = field(default_factory=dict)
    undo: dict[str, tuple[Any, ...] | None] = field(default_factory=dict)
    """Each touched ledger's fields before the operation first touched it (None: the operation created it)."""
    caps: dict[str, Decimal | None] = field(default_factory=dict)
    """Each contract's cap as looked up once in this operation (master data does not change during one)."""

    def cap(self, project_id: str, contract_id: str) -> Decimal | None:
        caps = self.caps
        if contract_id not in caps:
            caps[contract_id] = contract_cap(self.context.reference.versions_of(project_id), contract_id)
        return caps[contract_id]

    @classmethod
    def of(cls, book: ProjectBook, context: Context) -> _Settling:
        # a project has a handful of contracts: copying its totals is cheap, unlike copying its ledgers; every
        # field given positionally (one per book operation): the default factories cost ~1,300 machine
        # instructions more (callgrind; docs/core-performance.md, "Thirteenth session")
        return cls(context, dict(book.billed_by_contract), dict(book.at_risk_by_contract), [], {}, {}, {})

    def settled(self, book: ProjectBook) -> Settled:
        return Settled(book, tuple(self.events), tuple(self.changed.values()))


def _atomically(book: ProjectBook, settling: _Settling, operation: Callable[[], None]) -> Settled:
    """Run an operation on the book; if it raises, undo what it did to the book and re-raise."""
    try:
        operation()
    except BaseException:
        _roll_back(book, settling)
        raise
    return settling.settled(book)


def _roll_back(book: ProjectBook, settling: _Settling) -> None:
    for entry_id, before in settling.undo.items():
        if before is None:
            book.ledgers.pop(entry_id, None)
        else:
            ledger = book.ledgers[entry_id]
            for name, value in zip(_LEDGER_FIELDS, before, strict=True):
                setattr(ledger, name, value)
    book.billed_by_contract = settling.billed_before
    book.at_risk_by_contract = settling.at_risk_before


def book_entry(book: ProjectBook, change: EntryChange, context: Context) -> Settled:
    """The entry stage says what to price for one entry now (a new revision, an un-approval, a deletion).

    A change older than the latest one the book priced for the entry changes nothing: each change
    carries the entry's whole priced view, so the later one already says what the entry is worth."""
    # each field read once: reading a pydantic model's attribute costs several times a dataclass's
    entry_id, sequence, entry = change.time_entry_id, change.sequence, change.entry
    known = book.ledgers.get(entry_id)
    if known is not None and sequence and known.sequence >= sequence:
        return Settled(book, ())
    settling = _Settling.of(book, context)
    try:  # `_atomically` spelt out: this operation runs for every approved entry, a closure per entry costs
        correlation_id = change.correlation_id
        ledger = _ledger_for(book, entry_id, correlation_id, settling, known)
        ledger.sequence = max(ledger.sequence, sequence)
        ledger.entry = entry
        ledger.correlation_id = correlation_id
        ledger.last_seen = entry or ledger.last_seen
        settling.changed[entry_id] = ledger  # its entry changed, whatever settling does next
        _settle(book, [entry_id], settling)
    except BaseException:
        _roll_back(book, settling)
        raise
    return settling.settled(book)


def _ledger_for(
    book: ProjectBook, entry_id: str, correlation_id: str, settling: _Settling, ledger: Ledger | None
) -> Ledger:
    """The entry's ledger (`ledger`: what the book holds, looked up once by the caller, as a book on
    disk pays for each lookup), created empty (counting nothing yet: no contract, nothing billed) if new."""
    if ledger is None:
        ledger = book.ledgers[entry_id] = Ledger(entry_id, correlation_id)  # positionally: see `_pricing`
        settling.undo[entry_id] = None
    else:
        settling.undo.setdefault(entry_id, _snapshot(ledger))
    return ledger


def reprice(book: ProjectBook, context: Context, *, only: Callable[[Ledger], bool] | None = None) -> Settled:
    """Re-evaluate the book's entries (all, or those `only` selects) after master data or contracts changed."""
    chosen = [key for key, ledger in book.ledgers.items() if only is None or only(ledger)]
    return settle(book, chosen, context)


def reprice_worker(book: ProjectBook, worker_id: str, context: Context) -> Settled:
    """A worker's role, cost rate or existence changed: re-evaluate that worker's entries."""
    return reprice(
        book, context, only=lambda ledger: bool(ledger.last_seen and ledger.last_seen.worker_id == worker_id)
    )


def settle(book: ProjectBook, entry_ids: Iterable[str], context: Context) -> Settled:
    """Re-value the given entries in a fixed order, then keep every touched contract within its cap."""
    settling = _Settling.of(book, context)
    return _atomically(book, settling, lambda: _settle(book, entry_ids, settling))


def _settle(book: ProjectBook, entry_ids: Iterable[str], settling: _Settling) -> None:
    touched: set[str] = set()
    for entry_id in sorted(set(entry_ids)):
        ledger = book.ledgers[entry_id]  # once: a book on disk pays for each lookup
        before = ledger.contract_id
        _settle_entry(book, entry_id, ledger, settling)
        for contract_id in (before, ledger.contract_id):
            if contract_id is not None:
                touched.add(contract_id)
    for contract_id in sorted(touched):
        _rebalance(book, contract_id, settling)


# --- settling one entry (§6, §8) ------------------------------------------------------------------------


def _settle_entry(book: ProjectBook, entry_id: str, ledger: Ledger, settling: _Settling) -> None:
    """Bring one ledger (the book's, for `entry_id`) to what its entry is worth now, emitting the
    differences; the book's totals lose the ledger's old figures first and gain its new ones last."""
    # the snapshot serves the undo and says whether the ledger changed; an entry the operation already
    # holds an undo for and already counts as changed (`book_entry`'s own entry) needs neither
    watched = entry_id not in settling.changed
    snapshot = _snapshot(ledger) if watched or entry_id not in settling.undo else None
    if snapshot is not None:
        settling.undo.setdefault(entry_id, snapshot)
    _uncount(book, ledger)
    context = settling.context
    valuation = evaluate(ledger.entry, context.reference)
    target = _within_cap(book, valuation.pricing, settling)
    wanted = _wanted_exceptions(ledger, valuation, target)  # before billing: it reads what was billed so far
    if valuation.project is not None:
        ledger.erp_target = context.routing.target_for(valuation.project)
    if ledger.lines and _refused_pending(ledger):
        _bill_after_refusal(book.project_id, ledger, target, valuation.pricing, settling)
    else:
        _bill(book.project_id, ledger, target, valuation.pricing, settling)
    _post_cost(book.project_id, ledger, valuation, settling)
    ledger.worth = worth = valuation.worth
    ledger.at_risk = worth - target
    ledger.contract_id = valuation.pricing.contract_id if valuation.pricing else None
    _flag(book.project_id, ledger, wanted, settling)
    _count(book, ledger)
    if watched and _snapshot(ledger) != snapshot:
        settling.changed[entry_id] = ledger


def _within_cap(book: ProjectBook, pricing: Pricing | None, settling: _Settling) -> Decimal:
    """The worth cut to what the contract's cap leaves after every other entry's billed amount.

    Called while the entry's own figures are out of the totals (`_settle_entry`), so the contract's
    total is exactly what the other entries billed.
    """
    if pricing is None:
        return ZERO
    cap = settling.cap(book.project_id, pricing.contract_id)
    if cap is None:
        return pricing.amount
    others = book.billed_by_contract.get(pricing.contract_id, ZERO)
    return min(pricing.amount, max(ZERO, cap - others))


def _bill(project_id: str, ledger: Ledger, target: Decimal, pricing: Pricing | None, settling: _Settling) -> None:
    """Emit the candidate (and its REVENUE posting) that moves the billed amount to `target`."""
    capped = pricing is not None and target < pricing.amount
    old = ledger.billed_pricing
    if old is not None and (target == 0 or pricing is None or pricing.currency != old.currency):
        # a change of currency cannot be a delta: reverse in the old currency, bill anew in the new one
        line = _Line(CandidateKind.REVERSAL, -ledger.billed, old, -ledger.billed_minutes, capped)
        _emit_candidate(project_id, ledger, line, settling)
    if target == 0 or pricing is None:
        return
    if ledger.billed == 0:
        line = _Line(_CANDIDATE_TIME, target, pricing, pricing.billable_minutes, capped)
    elif target != ledger.billed:
        line = _Line(
            CandidateKind.ADJUSTMENT,
            target - ledger.billed,
            pricing,
            pricing.billable_minutes - ledger.billed_minutes,
            capped,
        )
    else:
        return
    _emit_candidate(project_id, ledger, line, settling)


@dataclass(slots=True)  # a value (see Pricing)
class _Line:
    kind: CandidateKind
    amount: Decimal
    pricing: Pricing
    minutes: int
    capped: bool


# Output events are built with `construct`/`construct_from`, i.e. without validation: every value is already valid by
# construction (ids are UUIDs, amounts are quantized to the currency's minor units — at most 4 places —,
# everything else is copied from validated events, and `Context.at` is normalised to UTC). Validation was
# the largest single cost of the core; tests/unit/domain/test_domain_outputs.py re-validates the outputs.


def _emit_candidate(project_id: str, ledger: Ledger, line: _Line, settling: _Settling) -> None:
    entry = _subject(ledger)
    revision = entry.revision  # read once (see `_posting`)
    pricing = line.pricing
    candidate_id = ids.candidate_id(
        time_entry_id=ledger.time_entry_id,
        project_id=project_id,
        sequence=ledger.candidates,
        kind=line.kind,
        revision=revision,
        contract_id=pricing.contract_id,
        contract_version=pricing.contract_version,
        billed_before=ledger.billed,
        amount=line.amount,
    )
    first = line.kind == _CANDIDATE_TIME
    settling.events.append(
        construct_from(
            InvoiceCandidate,
            {
                "event_id": candidate_id,
                "occurred_at": settling.context.at,
                "source_system": SOURCE_SYSTEM,
                "correlation_id": ledger.correlation_id,
                "candidate_id": candidate_id,
                "kind": line.kind,
                "time_entry_id": ledger.time_entry_id,
                "revision": revision,
                "project_id": project_id,
                "client_id": pricing.client_id,
                "worker_id": entry.worker_id,
                "role": pricing.role,
                "task_id": entry.task_id,
                "work_date": entry.work_date,
                "contract_id": pricing.contract_id,
                "contract_version": pricing.contract_version,
                "billable_minutes": line.minutes,
                "hourly_rate": pricing.hourly_rate,
                "discount_percent": pricing.discount_percent,
                "amount": line.amount,
                "currency": pricing.currency,
                "tax_code": pricing.tax_code,
                "billing_entity": pricing.billing_entity,
                "replaces_candidate_id": None if first else ledger.time_candidate_id,
                "capped": line.capped,
            },
        )
    )
    # REVENUE postings follow the candidates one for one: same amounts, same deltas
    revenue = _posting(
        project_id,
        ledger,
        _POSTING_REVENUE,
        ledger.candidates,
        ledger.billed,
        line.amount,
        pricing.currency,
        None if first else ledger.time_revenue_posting_id,
        settling.context,
    )
    settling.events.append(revenue)
    ledger.billed += line.amount
    ledger.billed_minutes += line.minutes
    ledger.billed_pricing = pricing if ledger.billed != 0 else None
    ledger.candidates += 1
    ledger.lines = (*ledger.lines, Line(candidate_id, line.amount, line.minutes, pricing))
    if first:
        ledger.time_candidate_id = candidate_id
        ledger.time_revenue_posting_id = revenue.posting_id


def _post_cost(project_id: str, ledger: Ledger, valuation: Valuation, settling: _Settling) -> None:
    """Move the posted cost to the cost of the billed revision (zero when blocked at steps 1–3)."""
    cost = valuation.cost or ZERO
    currency = valuation.cost_currency
    if ledger.cost_posted != 0 and (cost == 0 or currency != ledger.cost_currency):
        _emit_cost(project_id, ledger, -ledger.cost_posted, ledger.cost_currency, settling)  # type: ignore[arg-type]
    if cost != ledger.cost_posted and currency is not None:
        _emit_cost(project_id, ledger, cost - ledger.cost_posted, currency, settling)


def _emit_cost(project_id: str, ledger: Ledger, amount: Decimal, currency: str, settling: _Settling) -> None:
    first = ledger.cost_posted == 0
    posting = _posting(
        project_id,
        ledger,
        _POSTING_COST,
        ledger.cost_postings,
        ledger.cost_posted,
        amount,
        currency,
        None if first else ledger.time_cost_posting_id,
        settling.context,
    )
    settling.events.append(posting)
    ledger.cost_posted += amount
    ledger.cost_currency = currency if ledger.cost_posted != 0 else None
    ledger.cost_postings += 1
    if first:
        ledger.time_cost_posting_id = posting.posting_id


def _posting(
    project_id: str,
    ledger: Ledger,
    posting_type: PostingType,
    sequence: int,
    before: Decimal,
    amount: Decimal,
    currency: str,
    reverses: str | None,
    context: Context,
) -> PostingRequest:
    entry = _subject(ledger)
    revision = entry.revision  # read once: a pydantic model's attribute costs several times a dataclass's
    assert ledger.erp_target is not None  # set whenever the project was known, which any posting needs
    posting_id = ids.posting_id(
        posting_type=posting_type,
        time_entry_id=ledger.time_entry_id,
        project_id=project_id,
        sequence=sequence,
        revision=revision,
        posted_before=before,
        amount=amount,
    )
    return construct_from(
        PostingRequest,
        {
            "event_id": posting_id,
            "occurred_at": context.at,
            "source_system": SOURCE_SYSTEM,
            "correlation_id": ledger.correlation_id,
            "posting_id": posting_id,
            "posting_type": posting_type,
            "time_entry_id": ledger.time_entry_id,
            "revision": revision,
            "project_id": project_id,
            "worker_id": entry.worker_id,
            "work_date": entry.work_date,
            "amount": amount,
            "currency": currency,
            "erp_target": ledger.erp_target,
            "reverses_posting_id": reverses,
        },
    )


def _subject(ledger: Ledger) -> TimeEntry:
    entry = ledger.entry or ledger.last_seen
    assert entry is not None  # a ledger exists only for an entry the entry stage handed off
    return entry


# --- lines the billing engine refused ---------------------------------------------------------------------
# The engine's refusal of a candidate means it does not hold that line, and will not hold a reversal of it
# either. So the book takes the line back (it is not billed: its REVENUE posting is reversed, which the ERP
# holds; nothing goes to the engine), and bills the entry again once its terms change — a contract
# correction or new version, a new revision, a changed worker or project — because sending the engine
# the very line it refused would only be refused again. The new line gets a new id (the entry's candidate
# sequence moved on), derived like every other, so replaying the same history repeats it. The feedback
# stage opened BILLING_REJECTED about the refused candidate; the book resolves it when it bills the entry
# again, naming the candidates that replace it (their own answers open their own exceptions if the
# engine refuses again). docs/delivery.md has the reasoning.


def refuse(book: ProjectBook, refusal: Refusal, context: Context) -> Settled:
    """The billing engine refused one of the book's candidates: take it back, and bill the entry again at
    once if its terms already changed since (a correction that overtook the refusal)."""
    settling = _Settling.of(book, context)

    def operation() -> None:
        ledger = book.ledgers.get(refusal.time_entry_id)
        index = _line_index(ledger, refusal.candidate_id) if ledger is not None else None
        if ledger is None or index is None or not _can_take_back(ledger, ledger.lines[index]):
            return
        settling.undo.setdefault(ledger.time_entry_id, _snapshot(ledger))
        settling.changed[ledger.time_entry_id] = ledger
        _uncount(book, ledger)
        _take_back(book.project_id, ledger, index, refusal.refused_at, settling)
        _count(book, ledger)
        _settle(book, [ledger.time_entry_id], settling)

    return _atomically(book, settling, operation)


def _line_index(ledger: Ledger, candidate_id: str) -> int | None:
    """Where the candidate is in the entry's lines; None when it is not one of them (a candidate someone
    else published, or a ledger written before lines were kept)."""
    for index, line in enumerate(ledger.lines):
        if line.candidate_id == candidate_id:
            return index
    return None


def _can_take_back(ledger: Ledger, line: Line) -> bool:
    """False when the line was taken back already (a repeated answer), or when what would stay billed
    mixes two currencies (a refused reversal before a change of currency: an operator's case)."""
    if line.refused_at is not None:
        return False
    stays = ledger.billed - line.amount
    held = ledger.billed_pricing
    return stays == 0 or held is None or held.currency == line.pricing.currency


def _take_back(project_id: str, ledger: Ledger, index: int, refused_at: datetime, settling: _Settling) -> None:
    """Un-bill one line: its REVENUE goes back out of the ERP, and the book no longer counts its amount."""
    line = ledger.lines[index]
    revenue = _posting(
        project_id,
        ledger,
        PostingType.REVENUE,
        ledger.candidates,  # the taken-back line's posting uses a sequence number, so later ids move on
        ledger.billed,
        -line.amount,
        line.pricing.currency,
        ledger.time_revenue_posting_id,
        settling.context,
    )
    settling.events.append(revenue)
    ledger.candidates += 1
    ledger.billed -= line.amount
    ledger.billed_minutes -= line.minutes
    if ledger.billed == 0:
        ledger.billed_pricing = None
    elif ledger.billed_pricing is None:
        ledger.billed_pricing = line.pricing  # a refused reversal: the engine still holds what it reversed
    lines = list(ledger.lines)
    lines[index] = replace(line, refused_at=refused_at)
    ledger.lines = tuple(lines)


def _refused_pending(ledger: Ledger) -> bool:
    return any(line.pending for line in ledger.lines)


def _bill_after_refusal(
    project_id: str, ledger: Ledger, target: Decimal, pricing: Pricing | None, settling: _Settling
) -> None:
    """Bill an entry the engine refused lines of: hold back while it would get the same line again; else
    bill as usual and resolve the refusals, naming the candidates that replace the refused ones."""
    refused = [line for line in ledger.lines if line.pending]
    if target != ledger.billed and any(line.pricing == pricing for line in refused):
        return  # the terms the engine refused, unchanged: wait for a correction
    emitted_before = len(ledger.lines)
    _bill(project_id, ledger, target, pricing, settling)
    replacements = [line.candidate_id for line in ledger.lines[emitted_before:]]
    details = (
        f"billed again as candidate {', '.join(replacements)}"
        if replacements
        else "nothing is left to bill again: the engine holds what the entry is worth now"
    )
    resolved = {line.candidate_id for line in refused}
    for line in refused:
        settling.events.append(_billing_rejected_resolved(project_id, ledger, line, details, settling.context))
    ledger.lines = tuple(
        replace(line, resolved=True) if line.candidate_id in resolved else line for line in ledger.lines
    )


def _billing_rejected_resolved(
    project_id: str, ledger: Ledger, line: Line, details: str, context: Context
) -> BusinessException:
    """BILLING_REJECTED about a refused line, RESOLVED, with the feedback stage's `opened_at` and amount."""
    return _business_exception(
        ExceptionKind.BILLING_REJECTED,
        SubjectType.CANDIDATE,
        line.candidate_id,
        project_id,
        ledger,
        context,
        amount_at_risk=line.amount,
        currency=line.pricing.currency,
        details=f"the billing engine refused candidate {line.candidate_id}; {details}",
        opened_at=line.refused_at,
        resolved=True,
    )


# --- exceptions (§2, §8) -------------------------------------------------------------------------------


def _wanted_exceptions(
    before: Ledger, valuation: Valuation, target: Decimal
) -> dict[ExceptionKind, tuple[Decimal | None, str | None]]:
    """The exceptions that should be OPEN for the entry now, with their amount at risk and currency."""
    wanted: dict[ExceptionKind, tuple[Decimal | None, str | None]] = {}
    if valuation.blocked is not None:
        estimate = valuation.estimate
        if estimate is not None:
            wanted[valuation.blocked] = (estimate.amount, estimate.currency)
        elif before.billed > 0 and before.billed_pricing is not None:
            # what was billed before is what the block now puts at risk
            wanted[valuation.blocked] = (before.billed, before.billed_pricing.currency)
        else:
            wanted[valuation.blocked] = (None, None)
    if valuation.pricing is not None and target < valuation.pricing.amount:
        wanted[ExceptionKind.CAP_EXCEEDED] = (valuation.pricing.amount - target, valuation.pricing.currency)
    if valuation.invoiced_at_source:
        wanted[ExceptionKind.INVOICED_AT_SOURCE] = (None, None)  # invoiced elsewhere: nothing is at risk
    return wanted


def _flag(
    project_id: str,
    ledger: Ledger,
    wanted: dict[ExceptionKind, tuple[Decimal | None, str | None]],
    settling: _Settling,
) -> None:
    """Emit OPEN for new or re-valued exceptions and RESOLVED for those no longer wanted."""
    if not wanted and not ledger.exceptions:
        return  # the common case: nothing flagged before or now
    raised = dict(ledger.exceptions)  # a new dict, so the ledger's snapshot sees the change
    context = settling.context
    for kind in sorted(set(raised) - set(wanted)):
        gone = raised.pop(kind)
        if kind not in REPORTED_ONLY:  # a report was never open: nothing to resolve
            settling.events.append(_exception(project_id, ledger, kind, gone, context, resolved=True))
    for kind in sorted(wanted):
        amount, currency = wanted[kind]
        current = raised.get(kind)
        if current is not None and (current.amount_at_risk, current.currency) == (amount, currency):
            continue
        opened_at = current.opened_at if current is not None else context.at
        raised[kind] = RaisedException(amount_at_risk=amount, currency=currency, opened_at=opened_at)
        reported = kind in REPORTED_ONLY
        settling.events.append(_exception(project_id, ledger, kind, raised[kind], context, resolved=reported))
    if raised != ledger.exceptions:
        ledger.exceptions = raised


def _exception(
    project_id: str,
    ledger: Ledger,
    kind: ExceptionKind,
    raised: RaisedException,
    context: Context,
    *,
    resolved: bool,
) -> BusinessException:
    entry = _subject(ledger)
    details = DETAILS[kind].format(
        worker_id=entry.worker_id,
        project_id=entry.project_id,
        work_date=entry.work_date,
        source_system=entry.source_system,
        invoice=f"invoice {entry.source_invoice_id}" if entry.source_invoice_id else "no invoice id given",
    )
    return _business_exception(
        kind,
        SubjectType.TIME_ENTRY,
        ledger.time_entry_id,
        project_id,
        ledger,
        context,
        amount_at_risk=raised.amount_at_risk,
        currency=raised.currency,
        details=details,
        opened_at=raised.opened_at,
        resolved=resolved,
    )


def _business_exception(
    kind: ExceptionKind,
    subject_type: SubjectType,
    subject_id: str,
    project_id: str,
    ledger: Ledger,
    context: Context,
    *,
    amount_at_risk: Decimal | None,
    currency: str | None,
    details: str,
    opened_at: datetime | None,
    resolved: bool,
) -> BusinessException:
    """An exception the books raise or resolve, its id from kind and subject, its event id derived."""
    exception = construct(
        BusinessException,
        event_id=None,
        occurred_at=context.at,
        source_system=SOURCE_SYSTEM,
        correlation_id=ledger.correlation_id,
        exception_id=ids.exception_id(kind=kind, subject_type=subject_type, subject_id=subject_id),
        kind=kind,
        status=ExceptionStatus.RESOLVED if resolved else ExceptionStatus.OPEN,
        subject_type=subject_type,
        subject_id=subject_id,
        project_id=project_id,
        owner=OWNERS[kind],
        amount_at_risk=amount_at_risk,
        currency=currency,
        details=details,
        opened_at=opened_at,
        resolved_at=context.at if resolved else None,
    )
    return exception.model_copy(update={"event_id": ids.derive_event_id(exception)})


# --- the cap across a contract's entries (§8) --------------------------------------------------------------


def _rebalance(book: ProjectBook, contract_id: str, settling: _Settling) -> None:
    """Keep the contract's billed total at min(cap, uncapped worth): claw back above a lowered cap, then
    hand freed budget to cut entries in a fixed order, so the totals never depend on arrival order."""
    cap = settling.cap(book.project_id, contract_id)
    if cap is not None and book.billed_by_contract.get(contract_id, ZERO) > cap:
        for entry_id in sorted(_billed_under(book, contract_id), reverse=True):
            if book.billed_by_contract.get(contract_id, ZERO) <= cap:
                break
            _settle_entry(book, entry_id, book.ledgers[entry_id], settling)
    if book.at_risk_by_contract.get(contract_id, ZERO) == 0:
        return
    # only a contract with something cut gets here; finding its cut entries reads the book once
    for entry_id in sorted(_cut_under(book, contract_id)):
        if cap is not None and book.billed_by_contract.get(contract_id, ZERO) >= cap:
            break
        _settle_entry(book, entry_id, book.ledgers[entry_id], settling)


def _billed_under(book: ProjectBook, contract_id: str) -> list[str]:
    return [k for k, v in book.ledgers.items() if v.contract_id == contract_id and v.billed != 0]


def _cut_under(book: ProjectBook, contract_id: str) -> list[str]:
    return [k for k, v in book.ledgers.items() if v.contract_id == contract_id and v.at_risk != 0]


def _count(book: ProjectBook, ledger: Ledger) -> None:
    """Add a ledger's billed and at-risk figures to its contract's running totals."""
    if ledger.contract_id is not None:
        _add(book.billed_by_contract, ledger.contract_id, ledger.billed)
        _add(book.at_risk_by_contract, ledger.contract_id, ledger.at_risk)


def _uncount(book: ProjectBook, ledger: Ledger) -> None:
    """Take a ledger's figures out of the running totals, before they change."""
    if ledger.contract_id is not None:
        _add(book.billed_by_contract, ledger.contract_id, -ledger.billed)
        _add(book.at_risk_by_contract, ledger.contract_id, -ledger.at_risk)


def _add(totals: dict[str, Decimal], key: str, amount: Decimal) -> None:
    if not amount:
        return  # most ledgers have nothing at risk
    total = totals.get(key, ZERO) + amount
    if total == 0:
        totals.pop(key, None)
    else:
        totals[key] = total


# --- summaries (for tests, metrics and reconciliation) -------------------------------------------------------


def net_billed(events: Iterable[Event]) -> dict[str, Decimal]:
    """Net candidate amount per time entry over a stream of outputs."""
    totals: dict[str, Decimal] = {}
    for event in events:
        if isinstance(event, InvoiceCandidate):
            totals[event.time_entry_id] = totals.get(event.time_entry_id, ZERO) + event.amount
    return totals
