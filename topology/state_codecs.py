"""How the topology's state stores write the billing core's state to their changelog topics, compactly.

An entry's `EntryState`, a book's `Ledger` and an open rejection's instant are written to compacted
changelog topics after every change, and read back on a restore (and, with the stores on disk, when a
value the cache let go of is read again). Each codec turns its value into an orjson array of plain
values in a fixed order (no field names: a ledger is rewritten per entry change, so its size is the
changelog's size), headed by a format number so that a later layout can still read this one. Decimals
travel as their exact text (`str`), so the scale, the sign of a zero and every digit come back as they
went; instants and dates as ISO 8601 text. Time entries inside the state are not validated again on
decode: the changelog is backbone's own, written from models validated when their records came in, and
re-validating one took half of its rebuilding (~2.5 of ~5 µs; docs/topology-performance.md, "Twelfth
session"). A time entry is rebuilt as its model holds it (`construction.construct_from`) when its
instant is UTC as written; a record of another layout is refused (`CodecError`), and one whose instant
is not UTC goes through the model's validation. The book commands of `topology.messages` carry a time
entry the same way (`time_entry_values`, `time_entry_from_values`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

import orjson

from backbone.domain.billing import Ledger, Line, Pricing, RaisedException
from backbone.domain.entries import EntryState
from backbone.domain.models import Decision, ExceptionKind, TimeEntry
from backbone.kafka.compiled import event_builder

FORMAT = 1
"""The layout below. Bump it (and keep decoding the old one) when a field is added or moved."""

TIME_ENTRY_FIELDS = (
    "event_id",
    "occurred_at",
    "source_system",
    "correlation_id",
    "time_entry_id",
    "revision",
    "worker_id",
    "project_id",
    "task_id",
    "work_date",
    "duration_seconds",
    "billable",
    "notes",
    "deleted",
    "invoiced_at_source",
    "source_invoice_id",
)
"""A time entry's fields in their changelog order; a test fails when the model gains one not listed.

Fields added to the model later go at the end: a record written before them is a shorter list, and its
missing trailing fields take the model's defaults (so the layout stays `FORMAT` 1)."""

FORMAT_1_TIME_ENTRY_FIELDS = 14
"""How many fields the first time entries in changelogs carried (up to `deleted`)."""

_TIME_ENTRY_VALUES = itemgetter(*TIME_ENTRY_FIELDS)
_TIME_ENTRY_DEFAULTS = tuple(TimeEntry.model_fields[name].default for name in TIME_ENTRY_FIELDS)
if tuple(TimeEntry.model_fields) != TIME_ENTRY_FIELDS:  # a field added to the model goes at the end of both
    raise RuntimeError(f"TimeEntry's fields are not TIME_ENTRY_FIELDS in their order: {tuple(TimeEntry.model_fields)}")
_BUILD_TIME_ENTRY = event_builder(TimeEntry)
"""A time entry from its values in the model's (and the changelog's) order, built as the compiled Avro
reader's entries are: one store per field into a copy of their key-sharing dict, so a restored entry
takes no more memory than a consumed one, in a third of the time of `dict.update(zip(...))`."""
_OCCURRED_AT = TIME_ENTRY_FIELDS.index("occurred_at")
_WORK_DATE = TIME_ENTRY_FIELDS.index("work_date")

SAME_AS_ENTRY = 1
"""A ledger's `last_seen` written as this when it is its `entry` (the usual case), not a second copy."""

SAME_AS_BILLED = 1
"""A line's pricing written as this when it is the ledger's `billed_pricing` (the usual case: the entry's
latest line), not a second copy."""

SAME_AS_TIME_CANDIDATE = 1
"""A line's candidate id written as this when it is the ledger's `time_candidate_id` (the usual case: the
entry's one TIME line), not a second copy."""

ENTRY_STATE_FIELDS_BEFORE_HANDED_OFF = 7
"""How many values an entry state record held before changes were numbered (`EntryState.handed_off`)."""

LEDGER_FIELDS_BEFORE_LINES = 19
"""How many values a ledger record held before lines were kept; such a ledger has no lines (a refusal of
one of its candidates then finds nothing to take back, and BILLING_REJECTED waits for an operator)."""


_DECISIONS = {decision.value: decision for decision in Decision}
"""A decision by its text: a dict lookup, where `Decision(text)` goes through the enum's metaclass (which
still reads, or refuses with its ValueError, any other text)."""


class CodecError(ValueError):
    """A changelog record this codec cannot read (another format, or not one of its records)."""


# --- values inside the state ----------------------------------------------------------------------


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _to_decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def time_entry_values(entry: TimeEntry | None) -> tuple[Any, ...] | None:
    """A time entry as the changelogs and the book commands carry it: its values in `TIME_ENTRY_FIELDS` order."""
    if entry is None:
        return None
    return _TIME_ENTRY_VALUES(entry.__dict__)  # a JSON array; orjson writes the dates and instants as ISO text


def time_entry_from_values(values: list[Any] | None) -> TimeEntry | None:
    """The time entry `time_entry_values` wrote, trusted as written (see the module's docstring); fields a
    shorter, older record lacks take the model's defaults."""
    if values is None:
        return None
    count = len(values)
    if count != len(TIME_ENTRY_FIELDS):
        if not FORMAT_1_TIME_ENTRY_FIELDS <= count < len(TIME_ENTRY_FIELDS):
            raise CodecError(f"a time entry in a changelog has {count} fields, not {len(TIME_ENTRY_FIELDS)}")
        values.extend(_TIME_ENTRY_DEFAULTS[count:])
    values[_OCCURRED_AT] = occurred_at = datetime.fromisoformat(values[_OCCURRED_AT])
    values[_WORK_DATE] = date.fromisoformat(values[_WORK_DATE])
    if occurred_at.tzinfo is not UTC:  # not as written: the model normalises it, or says why not
        return TimeEntry.model_validate(dict(zip(TIME_ENTRY_FIELDS, values, strict=True)))
    return _BUILD_TIME_ENTRY(values)  # type: ignore[arg-type]  # a list unpacks as the tuple would


def _pricing(pricing: Pricing | None) -> tuple[Any, ...] | None:
    if pricing is None:
        return None
    return (
        pricing.contract_id,
        pricing.contract_version,
        pricing.billable_minutes,
        str(pricing.hourly_rate),
        str(pricing.discount_percent),
        str(pricing.amount),
        pricing.currency,
        pricing.tax_code,
        pricing.client_id,
        pricing.billing_entity,
        pricing.role,
    )


def _to_pricing(values: list[Any] | None) -> Pricing | None:
    if values is None:
        return None
    contract_id, version, minutes, rate, discount, amount, currency, tax_code, client_id, entity, role = values
    # by position, in the dataclass's field order (a third cheaper than by keyword)
    return Pricing(
        contract_id,
        version,
        minutes,
        Decimal(rate),
        Decimal(discount),
        Decimal(amount),
        currency,
        tax_code,
        client_id,
        entity,
        role,
    )


def _exceptions(raised: dict[ExceptionKind, RaisedException]) -> list[list[Any]]:
    return [[kind.value, _decimal(e.amount_at_risk), e.currency, e.opened_at.isoformat()] for kind, e in raised.items()]


def _to_exceptions(values: list[list[Any]]) -> dict[ExceptionKind, RaisedException]:
    return {
        ExceptionKind(kind): RaisedException(
            amount_at_risk=_to_decimal(amount), currency=currency, opened_at=datetime.fromisoformat(opened_at)
        )
        for kind, amount, currency, opened_at in values
    }


def _lines(ledger: Ledger) -> list[tuple[Any, ...]]:
    billed, time_candidate = ledger.billed_pricing, ledger.time_candidate_id
    return [
        (
            SAME_AS_TIME_CANDIDATE if line.candidate_id == time_candidate else line.candidate_id,
            str(line.amount),
            line.minutes,
            SAME_AS_BILLED if line.pricing is billed else _pricing(line.pricing),
            None if line.refused_at is None else line.refused_at.isoformat(),
            line.resolved,
        )
        for line in ledger.lines
    ]


def _to_lines(values: list[list[Any]], billed: Pricing | None, time_candidate: str | None) -> tuple[Line, ...]:
    lines = []
    for written_id, amount, minutes, pricing, refused_at, resolved in values:
        candidate_id = time_candidate if written_id == SAME_AS_TIME_CANDIDATE else written_id
        priced = billed if pricing == SAME_AS_BILLED else _to_pricing(pricing)
        if candidate_id is None or priced is None:
            raise CodecError(f"a line of {written_id!r} refers to a TIME candidate or billed pricing the ledger lacks")
        refused = None if refused_at is None else datetime.fromisoformat(refused_at)
        lines.append(Line(candidate_id, Decimal(amount), minutes, priced, refused, resolved))
    return tuple(lines)


def _unpack(data: bytes, what: str) -> list[Any]:
    values = orjson.loads(data)
    if not isinstance(values, list) or not values or values[0] != FORMAT:
        raise CodecError(f"not a format-{FORMAT} {what} record: {bytes(data[:60])!r}")
    return values[1:]


# --- the codecs -------------------------------------------------------------------------------------


class EntryStateCodec:
    """`EntryState` ↔ `[FORMAT, time_entry_id, [revision…], [[revision, decision]…], deleted_revision,
    [seen event id…], ignored, booked_project_id, handed_off]`. `handed_off` came last and later: a
    record without it counts 0 changes handed off (its books then hold ledgers of sequence 0, which
    every numbered change supersedes)."""

    def encode(self, state: EntryState) -> bytes:
        # Tuples and `Decision`s as they are: orjson writes a tuple as an array and a StrEnum as its text,
        # so the bytes are those of lists of plain values, without building them first.
        return orjson.dumps(
            (
                FORMAT,
                state.time_entry_id,
                [time_entry_values(entry) for entry in state.revisions.values()],
                [*state.decisions.items()],
                state.deleted_revision,
                [*state.seen_event_ids],
                state.ignored,
                state.booked_project_id,
                state.handed_off,
            )
        )

    def decode(self, data: bytes) -> EntryState:
        values = _unpack(data, "entry state")
        if len(values) not in (ENTRY_STATE_FIELDS_BEFORE_HANDED_OFF, ENTRY_STATE_FIELDS_BEFORE_HANDED_OFF + 1):
            raise CodecError(
                f"an entry state record has {len(values)} values, not {ENTRY_STATE_FIELDS_BEFORE_HANDED_OFF + 1}"
            )
        entry_id, revisions, decisions, deleted, seen, ignored, booked = values[:ENTRY_STATE_FIELDS_BEFORE_HANDED_OFF]
        handed_off = (
            values[ENTRY_STATE_FIELDS_BEFORE_HANDED_OFF] if len(values) > ENTRY_STATE_FIELDS_BEFORE_HANDED_OFF else 0
        )
        entries = [time_entry_from_values(values) for values in revisions]
        return EntryState(
            time_entry_id=entry_id,
            revisions={entry.revision: entry for entry in entries if entry is not None},
            decisions={revision: _DECISIONS.get(decision) or Decision(decision) for revision, decision in decisions},
            deleted_revision=deleted,
            seen_event_ids=dict.fromkeys(seen),
            ignored=ignored,
            booked_project_id=booked,
            handed_off=handed_off,
        )


class LedgerCodec:
    """`Ledger` ↔ `[FORMAT, …its fields in declaration order…]`, decimals as text, `last_seen` as
    `SAME_AS_ENTRY` when it is the entry itself, each line's id and pricing as `SAME_AS_TIME_CANDIDATE` and
    `SAME_AS_BILLED` when they are the ledger's own. `lines` came last and later: a record without them is
    a ledger with none."""

    def encode(self, ledger: Ledger) -> bytes:
        same = ledger.last_seen is not None and ledger.last_seen is ledger.entry
        return orjson.dumps(
            (
                FORMAT,
                ledger.time_entry_id,
                ledger.correlation_id,
                time_entry_values(ledger.entry),
                SAME_AS_ENTRY if same else time_entry_values(ledger.last_seen),
                str(ledger.billed),
                ledger.billed_minutes,
                _pricing(ledger.billed_pricing),
                ledger.contract_id,
                ledger.time_candidate_id,
                ledger.time_revenue_posting_id,
                ledger.candidates,
                str(ledger.worth),
                str(ledger.at_risk),
                str(ledger.cost_posted),
                ledger.cost_currency,
                ledger.time_cost_posting_id,
                ledger.cost_postings,
                ledger.erp_target,
                _exceptions(ledger.exceptions),
                _lines(ledger),
                ledger.sequence,
            )
        )

    def decode(self, data: bytes) -> Ledger:
        values = _unpack(data, "ledger")
        if not LEDGER_FIELDS_BEFORE_LINES <= len(values) <= LEDGER_FIELDS_BEFORE_LINES + 2:
            raise CodecError(f"a ledger record has {len(values)} values, not {LEDGER_FIELDS_BEFORE_LINES + 2}")
        lines = values[LEDGER_FIELDS_BEFORE_LINES] if len(values) > LEDGER_FIELDS_BEFORE_LINES else []
        sequence = values[LEDGER_FIELDS_BEFORE_LINES + 1] if len(values) > LEDGER_FIELDS_BEFORE_LINES + 1 else 0
        (
            time_entry_id,
            correlation_id,
            entry,
            last_seen,
            billed,
            billed_minutes,
            billed_pricing,
            contract_id,
            time_candidate_id,
            time_revenue_posting_id,
            candidates,
            worth,
            at_risk,
            cost_posted,
            cost_currency,
            time_cost_posting_id,
            cost_postings,
            erp_target,
            exceptions,
        ) = values[:LEDGER_FIELDS_BEFORE_LINES]
        priced = time_entry_from_values(entry)
        billed_pricing_ = _to_pricing(billed_pricing)
        return Ledger(
            time_entry_id=time_entry_id,
            correlation_id=correlation_id,
            entry=priced,
            last_seen=priced if last_seen == SAME_AS_ENTRY else time_entry_from_values(last_seen),
            billed=Decimal(billed),
            billed_minutes=billed_minutes,
            billed_pricing=billed_pricing_,
            contract_id=contract_id,
            time_candidate_id=time_candidate_id,
            time_revenue_posting_id=time_revenue_posting_id,
            candidates=candidates,
            worth=Decimal(worth),
            at_risk=Decimal(at_risk),
            cost_posted=Decimal(cost_posted),
            cost_currency=cost_currency,
            time_cost_posting_id=time_cost_posting_id,
            cost_postings=cost_postings,
            erp_target=erp_target,
            exceptions=_to_exceptions(exceptions),
            lines=_to_lines(lines, billed_pricing_, time_candidate_id),
            sequence=sequence,
        )


class InstantCodec:
    """An aware `datetime` ↔ its ISO 8601 text as a JSON string (also reads the former "…Z" records)."""

    def encode(self, value: datetime) -> bytes:
        if value.tzinfo is None:
            raise CodecError("an instant needs a time zone")
        return orjson.dumps(value.isoformat())

    def decode(self, data: bytes) -> datetime:
        text = orjson.loads(data)
        if not isinstance(text, str):
            raise CodecError(f"not an instant record: {bytes(data[:60])!r}")
        return datetime.fromisoformat(text)


ENTRY_STATE = EntryStateCodec()
LEDGER = LedgerCodec()
INSTANT = InstantCodec()
