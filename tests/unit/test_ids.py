"""Derived event ids: the same payload always gets the same id; any real change gets another."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from backbone.domain.ids import derive_event_id
from backbone.domain.models import ALL_EVENTS, Event
from producers.emitter import with_envelope_defaults
from tests.examples import RICH


def _event(event_type: str, **changes: Any) -> Event:
    return ALL_EVENTS[event_type].model_validate({**RICH[event_type], "event_id": None, **changes})


@pytest.mark.parametrize("event_type", sorted(ALL_EVENTS))
def test_id_is_a_stable_uuid5(event_type: str) -> None:
    first, again = derive_event_id(_event(event_type)), derive_event_id(_event(event_type))
    assert first == again
    assert uuid.UUID(first).version == 5


@pytest.mark.parametrize(
    ("event_type", "a", "b"),
    [
        pytest.param("worker", {"cost_rate": "85.5"}, {"cost_rate": "85.5000"}, id="decimal-scale-does-not-matter"),
        pytest.param(
            "time-entry",
            {"occurred_at": "2026-11-02T10:30:00+01:00"},
            {"occurred_at": "2026-11-02T09:30:00Z"},
            id="same-instant-other-zone",
        ),
        pytest.param("time-entry", {"event_id": "given"}, {}, id="event-id-not-part-of-payload"),
        pytest.param("time-entry", {"deleted": False}, {}, id="explicit-default-equals-omitted"),
    ],
)
def test_equal_payloads_get_equal_ids(event_type: str, a: dict[str, Any], b: dict[str, Any]) -> None:
    assert derive_event_id(_event(event_type, **a)) == derive_event_id(_event(event_type, **b))


@pytest.mark.parametrize(
    ("event_type", "change"),
    [
        pytest.param("time-entry", {"revision": 3}, id="new-revision"),
        pytest.param("time-entry", {"duration_seconds": 5401}, id="other-duration"),
        pytest.param("worker", {"cost_rate": "85.51"}, id="other-rate"),
        pytest.param("time-entry", {"correlation_id": "other"}, id="other-correlation"),
    ],
)
def test_changed_payloads_get_new_ids(event_type: str, change: dict[str, Any]) -> None:
    assert derive_event_id(_event(event_type, **change)) != derive_event_id(_event(event_type))


def test_same_fields_under_another_event_type_get_another_id() -> None:
    # An approval and a time entry never share an id, even with identical envelope and key.
    entry, approval = _event("time-entry"), _event("approval")
    assert derive_event_id(entry) != derive_event_id(approval)


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        pytest.param("time-entry", "TE-1", id="time-entry-correlates-by-itself"),
        pytest.param("approval", "TE-1", id="approval-correlates-by-its-entry"),
        pytest.param("client", None, id="reference-data-has-no-default"),
    ],
)
def test_correlation_id_defaults_to_the_time_entry(event_type: str, expected: str | None) -> None:
    event = with_envelope_defaults(_event(event_type, correlation_id=None))
    assert event.correlation_id == expected
    assert event.event_id == derive_event_id(event)


def test_given_event_id_and_correlation_are_kept() -> None:
    event = with_envelope_defaults(_event("time-entry", event_id="mine", correlation_id="corr"))
    assert (event.event_id, event.correlation_id) == ("mine", "corr")


def test_omitted_and_explicit_correlation_give_the_same_id() -> None:
    omitted = with_envelope_defaults(_event("time-entry", correlation_id=None))
    explicit = with_envelope_defaults(_event("time-entry", correlation_id="TE-1"))
    assert omitted.event_id == explicit.event_id


@pytest.mark.parametrize("name", ["", "invoice-candidate\nE1\nP1\n0", "ünïcode ✓", "x" * 1000])
def test_fast_uuid5_is_the_standard_uuid5(name: str) -> None:
    from backbone.domain.ids import BACKBONE_NAMESPACE, _uuid5_text

    assert _uuid5_text(name) == str(uuid.uuid5(BACKBONE_NAMESPACE, name))


@pytest.mark.parametrize("event_type", sorted(ALL_EVENTS))
def test_payload_read_from_the_instance_is_the_python_dump(event_type: str) -> None:
    from backbone.domain.ids import _payload

    event = _event(event_type)
    assert _payload(event) == event.model_dump(mode="python", exclude={"event_id"})


def _amounts_before() -> list[Any]:
    from decimal import Decimal

    from backbone.domain.money import ZERO

    return [
        pytest.param(ZERO, Decimal("12.50"), id="a-ledgers-starting-zero-taken-as-written"),
        pytest.param(Decimal(0), Decimal("12.50"), id="another-zero-object"),
        pytest.param(Decimal("0.00"), Decimal("12.50"), id="a-zero-a-sum-came-to"),
        pytest.param(Decimal("-0.00"), Decimal("12.50"), id="a-negative-zero"),
        pytest.param(Decimal("-0"), Decimal("-1.005"), id="a-negative-zero-and-a-negative-amount"),
        pytest.param(Decimal("63.00"), Decimal("12.50"), id="an-amount"),
    ]


@pytest.mark.parametrize("kind", ["TIME", "ADJUSTMENT"])
@pytest.mark.parametrize(("before", "amount"), _amounts_before())
def test_core_ids_are_the_generic_derivation_written_out(before: Any, amount: Any, kind: str) -> None:
    from backbone.domain.ids import _uuid, candidate_id, posting_id
    from backbone.domain.models import CandidateKind, PostingType

    candidate_kind = CandidateKind(kind)
    assert candidate_id(
        time_entry_id="E1",
        project_id="P1",
        sequence=2,
        kind=candidate_kind,
        revision=3,
        contract_id="K1",
        contract_version=4,
        billed_before=before,
        amount=amount,
    ) == _uuid("invoice-candidate", "E1", "P1", 2, candidate_kind, 3, "K1", 4, before, amount)
    for posting_type in (PostingType.REVENUE, PostingType.COST):
        assert posting_id(
            posting_type=posting_type,
            time_entry_id="E1",
            project_id="P1",
            sequence=0,
            revision=1,
            posted_before=before,
            amount=amount,
        ) == _uuid("posting-request", posting_type, "E1", "P1", 0, 1, before, amount)


@pytest.mark.parametrize("event_type", sorted(ALL_EVENTS))
def test_derived_id_is_uuid5_over_type_and_canonical_payload(event_type: str) -> None:
    from backbone.domain.ids import BACKBONE_NAMESPACE, canonical_payload

    event = _event(event_type)
    text = f"{event_type}\n{canonical_payload(event.model_dump(mode='python', exclude={'event_id'}))}"
    assert derive_event_id(event) == str(uuid.uuid5(BACKBONE_NAMESPACE, text))


@pytest.mark.parametrize("event_type", sorted(set(ALL_EVENTS) - {"contract"}))  # flat events: no nested dicts
def test_a_presorted_payload_gets_the_id_of_the_sorted_one(event_type: str) -> None:
    from backbone.domain.ids import ADDED_LATER, event_id_from_payload, event_id_from_sorted

    payload = _event(event_type).model_dump(mode="python", exclude={"event_id"})
    presorted = {name: payload[name] for name in sorted(payload) if not (name in ADDED_LATER and payload[name] is None)}
    assert event_id_from_sorted(event_type, presorted) == event_id_from_payload(event_type, payload)
    assert list(presorted) != list(payload) or len(payload) < 2  # the shortcut was tested on a shuffled order


@pytest.mark.parametrize("text", ["0", "-0", "0E-10", "155.00", "-187.5", "5.556", "1E+3", "1.00005", "-0.00015"])
def test_decimal_parts_are_at_the_wire_scale(text: str) -> None:
    from decimal import Decimal

    from backbone.domain.ids import _QUANTUM, _decimal

    assert _decimal(Decimal(text)) == format(Decimal(text).quantize(_QUANTUM), "f")


def test_fields_added_later_leave_the_ids_of_events_without_them_unchanged() -> None:
    """A time entry re-emitted after the invoiced-at-source fields were added keeps its earlier id."""
    from backbone.domain.ids import BACKBONE_NAMESPACE, canonical_payload

    entry = _event("time-entry", invoiced_at_source=None, source_invoice_id=None)
    before_the_fields = entry.model_dump(mode="python", exclude={"event_id", "invoiced_at_source", "source_invoice_id"})
    text = f"time-entry\n{canonical_payload(before_the_fields)}"
    assert derive_event_id(entry) == str(uuid.uuid5(BACKBONE_NAMESPACE, text))
    invoiced = _event("time-entry", invoiced_at_source=True, source_invoice_id=None)
    assert derive_event_id(invoiced) != derive_event_id(entry)
