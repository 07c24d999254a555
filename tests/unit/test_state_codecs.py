"""The changelog codecs give back exactly the state they were given: every entry state and ledger the
billing core builds in the domain scenarios, decimals digit for digit, instants to the microsecond."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from backbone.domain.billing import Ledger, Pricing, RaisedException
from backbone.domain.entries import SEEN_EVENT_IDS, EntryState, new_entry, record
from backbone.domain.models import BillingResponse, ExceptionKind, TimeEntry
from backbone.domain.pipeline import BillingPipeline
from tests.unit.domain.domain_builders import (
    ROUTING,
    approval,
    client,
    contract,
    entry,
    master_data,
    project,
    reject,
    worker,
)
from topology.state_codecs import (
    ENTRY_STATE,
    FORMAT,
    INSTANT,
    LEDGER,
    TIME_ENTRY_FIELDS,
    CodecError,
)

D = Decimal


def _pipeline(*events) -> BillingPipeline:
    pipeline = BillingPipeline(ROUTING)
    for event in events:
        pipeline.handle(event)
    return pipeline


SCENARIOS = {
    "billed": [*master_data(), entry(task_id="T1", notes="workshop"), approval()],
    "approvals-waiting-for-their-revisions": [*master_data(), approval(), entry(), approval(revision=2)],
    "amended-then-unapproved": [
        *master_data(),
        entry(),
        approval(),
        entry(revision=2, duration_seconds=5400, correlation_id="corr-2"),
        approval(revision=2),
        reject(revision=2),
        reject(),
    ],
    "deleted-with-ignored-events": [
        *master_data(),
        entry(),
        approval(),
        entry(revision=2, deleted=True),
        approval(revision=2),
    ],
    "capped-and-blocked": [
        client(),
        project(),
        worker(),
        contract(not_to_exceed=D("200")),
        entry(),
        approval(),
        entry(time_entry_id="E2"),
        approval(time_entry_id="E2"),
        entry(time_entry_id="E3", worker_id="W9"),
        approval(time_entry_id="E3"),
    ],
    "kwd-three-decimals": [
        client(),
        project(),
        worker(cost_currency="KWD", cost_rate=D("20.001")),
        contract(currency="KWD", default_hourly_rate=D("33.333")),
        entry(duration_seconds=600),
        approval(),
    ],
}


@pytest.mark.parametrize("events", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_entry_state_round_trips(events) -> None:
    pipeline = _pipeline(*events)
    assert pipeline.entries
    for state in pipeline.entries.values():
        assert ENTRY_STATE.decode(ENTRY_STATE.encode(state)) == state


@pytest.mark.parametrize("events", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_ledger_round_trips(events) -> None:
    pipeline = _pipeline(*events)
    ledgers = [ledger for book in pipeline.books.values() for ledger in book.ledgers.values()]
    assert ledgers
    for ledger in ledgers:
        assert LEDGER.decode(LEDGER.encode(ledger)) == ledger


def test_the_scenarios_reach_the_interesting_fields() -> None:
    ledgers = [
        ledger
        for events in SCENARIOS.values()
        for book in _pipeline(*events).books.values()
        for ledger in book.ledgers.values()
    ]
    assert any(ledger.exceptions for ledger in ledgers)
    assert any(ledger.at_risk for ledger in ledgers)
    assert any(ledger.billed_pricing for ledger in ledgers)
    assert any(ledger.entry is None and ledger.last_seen is not None for ledger in ledgers)


@pytest.mark.parametrize(
    "amount",
    ["0", "-0.00", "155.00", "5.556", "0.0001", "-187.5000", "1E+3", "123456789012345678901234567890.1234"],
)
def test_decimals_come_back_digit_for_digit(amount: str) -> None:
    pricing = Pricing("K1", 2, 62, D("150.00"), D("12.5"), D(amount), "EUR", "VAT20", "C1", None, "senior")
    ledger = Ledger(
        time_entry_id="E1",
        correlation_id="E1",
        billed=D(amount),
        billed_pricing=pricing,
        worth=D(amount),
        at_risk=D(amount),
        cost_posted=D(amount),
        exceptions={ExceptionKind.NO_RATE: RaisedException(D(amount), "EUR", datetime(2026, 11, 2, tzinfo=UTC))},
    )
    decoded = LEDGER.decode(LEDGER.encode(ledger))
    for value in (
        decoded.billed,
        decoded.worth,
        decoded.at_risk,
        decoded.cost_posted,
        decoded.billed_pricing.amount,  # type: ignore[union-attr]
        decoded.exceptions[ExceptionKind.NO_RATE].amount_at_risk,
    ):
        assert value.as_tuple() == D(amount).as_tuple()  # same sign, digits and scale, not merely equal


def test_entry_state_keeps_its_seen_event_ids_in_order() -> None:
    state = new_entry("E1")
    for n in range(SEEN_EVENT_IDS + 5):
        record(state, approval(event_id=f"a{n}", revision=1 + n % 3))
    assert len(state.seen_event_ids) == SEEN_EVENT_IDS
    decoded = ENTRY_STATE.decode(ENTRY_STATE.encode(state))
    assert list(decoded.seen_event_ids) == list(state.seen_event_ids)
    assert decoded == state


def test_an_entry_state_written_before_changes_were_numbered_restores_with_none_handed_off() -> None:
    state = _pipeline(client(), project(), worker(), contract(), entry(), approval()).entries["E1"]
    assert state.handed_off == 1
    older = orjson.loads(ENTRY_STATE.encode(state))[:-1]  # the layout before `handed_off`
    assert ENTRY_STATE.decode(orjson.dumps(older)) == replace(state, handed_off=0)


def test_a_ledger_writes_its_priced_revision_once() -> None:
    priced = entry(notes="x" * 200)
    ledger = Ledger(time_entry_id="E1", correlation_id="E1", entry=priced, last_seen=priced)
    assert LEDGER.encode(ledger).count(b"x" * 200) == 1
    decoded = LEDGER.decode(LEDGER.encode(ledger))
    assert decoded.last_seen is decoded.entry


def test_time_entry_layout_lists_every_field() -> None:
    # a new TimeEntry field must be added (at the end) to the changelog layout, not dropped silently
    assert set(TIME_ENTRY_FIELDS) == set(TimeEntry.model_fields)


def test_an_empty_entry_state_round_trips() -> None:
    state = EntryState(time_entry_id="E1")
    assert ENTRY_STATE.decode(ENTRY_STATE.encode(state)) == state


@pytest.mark.parametrize(
    "instant",
    [
        datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
        datetime(2026, 11, 2, 9, 30, 0, 123456, tzinfo=UTC),
        datetime(2026, 11, 2, 10, 30, tzinfo=timezone(timedelta(hours=1))),
    ],
    ids=["utc", "microseconds", "other-zone"],
)
def test_instants_round_trip(instant: datetime) -> None:
    decoded = INSTANT.decode(INSTANT.encode(instant))
    assert decoded == instant and decoded.utcoffset() == instant.utcoffset()


def test_instant_codec_reads_the_former_json_records() -> None:
    assert INSTANT.decode(b'"2026-11-02T09:30:00Z"') == datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "data",
    [b'{"time_entry_id": "E1"}', orjson.dumps([FORMAT + 1, "E1"]), b"[]"],
    ids=["former-model-json", "unknown-format", "empty"],
)
def test_records_of_another_layout_are_refused(data: bytes) -> None:
    with pytest.raises(CodecError):
        ENTRY_STATE.decode(data)
    with pytest.raises(CodecError):
        LEDGER.decode(data)


def test_a_ledger_record_is_compact() -> None:
    pipeline = _pipeline(*SCENARIOS["billed"])
    [ledger] = pipeline.books["P1"].ledgers.values()
    assert len(LEDGER.encode(ledger)) < 0.6 * len(orjson.dumps(_as_dict(ledger), default=str))


def _as_dict(ledger: Ledger) -> dict[str, object]:
    from dataclasses import asdict

    data = asdict(ledger)
    for name in ("entry", "last_seen"):
        value = getattr(ledger, name)
        data[name] = value.model_dump(mode="json") if isinstance(value, TimeEntry) else value
    return data


def test_an_entry_state_written_before_the_invoice_fields_restores_them_as_not_said() -> None:
    state = _pipeline(*SCENARIOS["billed"]).entries["E1"]
    [values] = orjson.loads(ENTRY_STATE.encode(state))[2]
    older = orjson.loads(ENTRY_STATE.encode(state))
    older[2] = [values[:14]]  # the layout before invoiced_at_source and source_invoice_id
    restored = ENTRY_STATE.decode(orjson.dumps(older))
    assert restored == state
    assert restored.revisions[1].invoiced_at_source is None


def test_an_invoiced_entry_keeps_its_invoice_through_the_changelog() -> None:
    pipeline = _pipeline(*master_data(), entry(invoiced_at_source=True, source_invoice_id="INV-7"), approval())
    [ledger] = pipeline.books["P1"].ledgers.values()
    decoded = LEDGER.decode(LEDGER.encode(ledger))
    assert decoded == ledger
    assert decoded.entry is not None and decoded.entry.source_invoice_id == "INV-7"
    assert ExceptionKind.INVOICED_AT_SOURCE in decoded.exceptions


def _refused_and_billed_again() -> Ledger:
    """E1's ledger after the engine refused its first line (blank tax code) and a new version re-billed it."""
    pipeline = _pipeline(*master_data()[:3], contract(tax_code=" "), entry(), approval())
    [refused] = pipeline.books["P1"].ledgers["E1"].lines
    answer = BillingResponse(
        occurred_at=datetime(2026, 11, 3, 8, 0, 0, 250000, tzinfo=UTC),
        source_system="billing-engine",
        candidate_id=refused.candidate_id,
        status="REJECTED",
        reason_code="tax_code_missing",
        project_id="P1",
        amount=refused.amount,
        currency="EUR",
        time_entry_id="E1",
    )
    pipeline.handle(answer)
    pipeline.handle(contract(version=2, tax_code="VAT20", default_hourly_rate=D("180.00")))
    return pipeline.books["P1"].ledgers["E1"]


def test_a_ledger_keeps_its_lines_and_their_refusals_through_the_changelog() -> None:
    ledger = _refused_and_billed_again()
    refused, again = ledger.lines
    assert refused.refused_at is not None and refused.resolved and not again.refused_at  # the case is what it says
    decoded = LEDGER.decode(LEDGER.encode(ledger))
    assert decoded == ledger
    assert decoded.lines[-1].pricing is decoded.billed_pricing  # written once, as the billed pricing


def test_a_ledger_written_before_lines_were_kept_restores_with_none() -> None:
    ledger = _refused_and_billed_again()
    older = orjson.loads(LEDGER.encode(ledger))[:-2]  # the layout before `lines` (and `sequence`)
    assert LEDGER.decode(orjson.dumps(older)) == replace(ledger, lines=(), sequence=0)


def test_a_ledger_written_before_changes_were_numbered_restores_at_sequence_zero() -> None:
    ledger = _refused_and_billed_again()
    assert ledger.sequence > 0  # the pipeline numbers the changes it hands to the book
    older = orjson.loads(LEDGER.encode(ledger))[:-1]  # the layout before `sequence`
    assert LEDGER.decode(orjson.dumps(older)) == replace(ledger, sequence=0)


def test_a_restored_time_entry_is_the_model_it_was_written_from() -> None:
    state = _pipeline(*SCENARIOS["billed"]).entries["E1"]
    restored = ENTRY_STATE.decode(ENTRY_STATE.encode(state)).revisions[1]
    written = state.revisions[1]
    assert restored == written
    assert restored.model_dump() == written.model_dump()  # same fields, same order, same types
    assert restored.occurred_at.tzinfo is UTC
    assert TimeEntry.model_validate(restored.model_dump()) == restored  # a valid entry, though not re-validated


def test_a_restored_time_entry_with_an_offset_is_normalised_to_utc_as_the_model_does() -> None:
    state = _pipeline(*SCENARIOS["billed"]).entries["E1"]
    record = orjson.loads(ENTRY_STATE.encode(state))
    record[2][0][TIME_ENTRY_FIELDS.index("occurred_at")] = "2026-11-02T10:30:00+01:00"
    restored = ENTRY_STATE.decode(orjson.dumps(record)).revisions[1]
    assert restored.occurred_at == datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    assert restored.occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("field", "value"),
    [("occurred_at", 1762075800), ("occurred_at", "2026-11-02T09:30:00"), ("work_date", "2 Nov 2026")],
    ids=["instant-as-number", "instant-without-zone", "date-not-iso"],
)
def test_a_time_entry_that_was_not_written_by_the_codec_is_refused(field: str, value: object) -> None:
    state = _pipeline(*SCENARIOS["billed"]).entries["E1"]
    record = orjson.loads(ENTRY_STATE.encode(state))
    record[2][0][TIME_ENTRY_FIELDS.index(field)] = value
    with pytest.raises((TypeError, ValueError)):  # a worker stops on it (`Store._decode`), never bills it
        ENTRY_STATE.decode(orjson.dumps(record))


def test_an_entry_state_with_a_decision_the_model_does_not_know_is_refused() -> None:
    state = _pipeline(*SCENARIOS["billed"]).entries["E1"]
    record = orjson.loads(ENTRY_STATE.encode(state))
    assert record[3], "the scenario has a decision to corrupt"
    record[3][0][1] = "MAYBE"
    with pytest.raises(ValueError, match="MAYBE"):  # as for any other malformed field: never a KeyError
        ENTRY_STATE.decode(orjson.dumps(record))
