"""Compiled line writers against the model path they stand in for (backbone/kafka/compiled_writer.py).

The guard is differential: for every JSON line, the compiled writer either gives exactly what the model
path gives (`model_validate_json`, then the emitter's `encode_for_spool`: the same key, Avro body,
derived event id and headers) or defers (None) and the model path decides. Lines come from the
canonical examples, from hand-picked odd and hostile values, and from hypothesis (any JSON value in any
field). `backbone emit` as a whole, bad lines included, is tests/unit/test_emit_validation.py and
tests/integration/test_emit_hostile.py.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from backbone.domain.models import INPUT_EVENTS, ApprovalDecision, ContractVersion, Event, TimeEntry, Worker
from backbone.errors import InvalidInputError
from backbone.kafka.compiled import CannotCompile
from backbone.kafka.compiled_writer import CACHE_LIMIT, compile_writer
from backbone.kafka.serde import TopicSerde
from backbone.kafka.topics import BY_EVENT_TYPE
from producers.emitter import encode_for_spool, line_writer

ENTRY: dict[str, Any] = {
    "occurred_at": "2026-11-02T09:30:00Z",
    "source_system": "toggl",
    "time_entry_id": "TE-1",
    "revision": 1,
    "worker_id": "W-1",
    "project_id": "P-1",
    "task_id": "T-1",
    "work_date": "2026-11-02",
    "duration_seconds": 5400,
    "billable": True,
    "notes": "Design review",
}
APPROVAL: dict[str, Any] = {
    "occurred_at": "2026-11-03T10:00:00Z",
    "source_system": "harvest",
    "time_entry_id": "TE-1",
    "revision": 2,
    "decision": "APPROVED",
    "approver_id": "M-1",
    "decided_at": "2026-11-03T10:00:00+01:00",
}
WORKER: dict[str, Any] = {
    "occurred_at": "2026-11-01T00:00:00Z",
    "source_system": "erp",
    "worker_id": "W-1",
    "name": "Ann Lee",
    "role": "Engineer",
    "employment_type": "EMPLOYEE",
    "cost_rate": "85.50",
    "cost_currency": "EUR",
    "active": True,
}
BASES = {TimeEntry: ENTRY, ApprovalDecision: APPROVAL, Worker: WORKER}


def model_way(event_cls: type[Event], line: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """What `backbone emit` spools for a line the full way; None when the model refuses it."""
    try:
        event = event_cls.model_validate_json(line)
        key, body, headers = encode_for_spool(event, TopicSerde(BY_EVENT_TYPE[event_cls.event_type], None))  # type: ignore[arg-type]
    except (ValidationError, InvalidInputError):
        return None
    values = dict(headers)
    source, correlation = values["source_system"], values.get("correlation_id") or b""
    return key, body, source, correlation  # type: ignore[return-value]


def assert_same_or_deferred(event_cls: type[Event], line: bytes) -> bool:
    """The compiled writer's answer is the model's, or None; returns whether it vouched."""
    writer = line_writer(event_cls)
    assert writer is not None
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    written = writer(parsed)
    if written is not None:
        assert written == model_way(event_cls, line), line
    return written is not None


def line_of(base: dict[str, Any], **changes: Any) -> bytes:
    record = {**base, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not _DROP}).encode()


_DROP = object()


@pytest.mark.parametrize("event_cls", list(INPUT_EVENTS.values()), ids=list(INPUT_EVENTS))
def test_every_flat_input_event_compiles_and_nested_ones_are_left_to_the_model(event_cls: type[Event]) -> None:
    if event_cls is ContractVersion:
        with pytest.raises(CannotCompile):
            compile_writer(event_cls)
        assert line_writer(event_cls) is None
    else:
        assert line_writer(event_cls) is not None


@pytest.mark.parametrize("event_cls", list(BASES), ids=lambda cls: cls.event_type)
def test_a_valid_line_is_written_as_the_model_path_writes_it(event_cls: type[Event]) -> None:
    assert assert_same_or_deferred(event_cls, line_of(BASES[event_cls]))


ODD_BUT_VALID = {
    "an offset instant is held in UTC": {"occurred_at": "2026-11-02T09:30:00.25+05:30"},
    "a negative offset": {"occurred_at": "2026-11-02T23:30:00-08:00"},
    "microseconds": {"occurred_at": "2026-11-02T09:30:00.123456Z"},
    "the epoch": {"occurred_at": "1970-01-01T00:00:00Z", "work_date": "1970-01-01"},
    "before the epoch": {"occurred_at": "1969-12-31T23:59:59.999999Z", "work_date": "1969-12-31"},
    "year 1 and 9999": {"occurred_at": "0001-01-01T00:00:00Z", "work_date": "9999-12-31"},
    "given event and correlation ids": {"event_id": "e-1", "correlation_id": "c-1"},
    "no optional fields": {"task_id": _DROP, "notes": _DROP},
    "explicit nulls": {"task_id": None, "notes": None, "invoiced_at_source": None, "source_invoice_id": None},
    "invoiced at the source": {"invoiced_at_source": True, "source_invoice_id": "INV-7"},
    "not invoiced, said so": {"invoiced_at_source": False},
    "an invoice id alone": {"source_invoice_id": "INV-8"},
    "deleted": {"deleted": True},
    "ids at their longest": {"time_entry_id": "x" * 512, "worker_id": "w" * 300},
    "unicode ids and notes": {"worker_id": "Zoë 李", "notes": "naïve 🙂" * 100},
    "a long note": {"notes": "n" * 70_000},
    "a space inside an id": {"project_id": "Project A"},
    "large numbers": {"revision": 2**31 - 1, "duration_seconds": 2**63 - 1},
    "duration at a varint boundary": {"duration_seconds": 63},
    "duration at the next": {"duration_seconds": 64},
    "escaped text": {"notes": 'quote " backslash \\ tab \t'},
}


@pytest.mark.parametrize("changes", list(ODD_BUT_VALID.values()), ids=list(ODD_BUT_VALID))
def test_odd_values_the_model_takes_give_the_same_record_either_way(changes: dict[str, Any]) -> None:
    assert_same_or_deferred(TimeEntry, line_of(ENTRY, **changes))


REFUSED = {
    "an unknown field": {"hours": 3},
    "a missing field": {"worker_id": _DROP},
    "a blank id": {"worker_id": "   "},
    "an empty id": {"worker_id": ""},
    "a NUL in an id": {"worker_id": "W\x001"},
    "a bidi override": {"project_id": "P\u202e1"},
    "a line separator": {"project_id": "P\u20281"},
    "an id too long": {"time_entry_id": "x" * 513},
    "ids too long together are still each checked": {"time_entry_id": "x" * 400, "worker_id": "w" * 400},
    "revision zero": {"revision": 0},
    "revision beyond Avro's int": {"revision": 2**31},
    "a float revision": {"revision": 1.0},
    "a boolean revision": {"revision": True},
    "a string duration": {"duration_seconds": "900"},
    "a negative duration": {"duration_seconds": -1},
    "a duration beyond a long": {"duration_seconds": 2**64},
    "a string boolean": {"billable": "yes"},
    "an integer boolean": {"billable": 1},
    "a null boolean with a default": {"deleted": None},
    "an instant without a zone": {"occurred_at": "2026-11-02T09:30:00"},
    "an instant as a number": {"occurred_at": 1_700_000_000},
    "an instant with a space": {"occurred_at": "2026-11-02 09:30:00Z"},
    "an instant in lower case": {"occurred_at": "2026-11-02t09:30:00z"},
    "nanoseconds": {"occurred_at": "2026-11-02T09:30:00.123456789Z"},
    "hour 24": {"occurred_at": "2026-11-02T24:00:00Z"},
    "a leap second": {"occurred_at": "2026-12-31T23:59:60Z"},
    "an offset of 60 minutes (fromisoformat takes it)": {"occurred_at": "2026-11-02T09:30:00+12:60"},
    "an offset of 24 hours": {"occurred_at": "2026-11-02T09:30:00+24:00"},
    "an offset without minutes": {"occurred_at": "2026-11-02T09:30:00+05"},
    "year 0": {"occurred_at": "0000-01-01T00:00:00Z"},
    "out of range in UTC": {"occurred_at": "0001-01-01T00:00:00+01:00"},
    "a day that does not exist": {"work_date": "2026-02-30"},
    "a slashed date": {"work_date": "02/11/2026"},
    "a date and time for a date": {"work_date": "2026-11-02T00:00:00Z"},
    "a compact date": {"work_date": "20261102"},
    "non-ASCII digits": {"work_date": "٢٠٢٦-11-02"},
    "a list for an id": {"worker_id": ["W-1"]},
    "an object for a note": {"notes": {"text": "x"}},
    "a number for an id": {"worker_id": 7},
}


@pytest.mark.parametrize("changes", list(REFUSED.values()), ids=list(REFUSED))
def test_what_the_model_might_refuse_is_left_to_it(changes: dict[str, Any]) -> None:
    line = line_of(ENTRY, **changes)
    writer = line_writer(TimeEntry)
    assert writer is not None
    written = writer(orjson.loads(line))
    assert written is None or written == model_way(TimeEntry, line)
    if model_way(TimeEntry, line) is None:
        assert written is None


@pytest.mark.parametrize(
    "line",
    [b"[1, 2]", b"7", b'"text"', b"null", b"{}", b'{"occurred_at": null}'],
    ids=["an array", "a number", "a string", "null", "an empty object", "a null field"],
)
def test_json_that_is_not_an_event_object_is_left_to_the_model(line: bytes) -> None:
    writer = line_writer(TimeEntry)
    assert writer is not None
    assert writer(orjson.loads(line)) is None


@pytest.mark.parametrize(
    "changes",
    [{"decision": "MAYBE"}, {"decision": "approved"}, {"decided_at": "yesterday"}],
    ids=["an unknown symbol", "a symbol in lower case", "not an instant"],
)
def test_approvals_the_model_refuses_are_left_to_it(changes: dict[str, Any]) -> None:
    writer = line_writer(ApprovalDecision)
    assert writer is not None
    assert writer(orjson.loads(line_of(APPROVAL, **changes))) is None


@pytest.mark.parametrize(
    "cost_rate",
    ["85.50", "0", "-3.1234", "99999999999999.9999", 120, "1E+2", "1e-4", ".5", "5."],
    ids=str,
)
def test_decimals_the_model_takes_are_written_as_it_writes_them(cost_rate: Any) -> None:
    assert assert_same_or_deferred(Worker, line_of(WORKER, cost_rate=cost_rate))


@pytest.mark.parametrize(
    "cost_rate",
    ["1E+30", "1.23456", "NaN", "Infinity", "٣", " 5", "1_000", 85.5, True, "0.00000"],
    ids=str,
)
def test_decimals_the_model_refuses_are_left_to_it(cost_rate: Any) -> None:
    writer = line_writer(Worker)
    assert writer is not None
    assert writer(orjson.loads(line_of(WORKER, cost_rate=cost_rate))) is None


def test_instants_dates_and_numbers_stay_right_when_their_caches_start_over() -> None:
    lines = [
        line_of(
            ENTRY,
            occurred_at=f"2026-11-02T09:{i // 60 % 60:02d}:{i % 60:02d}Z",
            work_date=f"{1900 + i % 8000:04d}-11-02",
            revision=64 + i,
            duration_seconds=64 + i,
        )
        for i in range(CACHE_LIMIT * 2 + 7)
    ]
    assert all(assert_same_or_deferred(TimeEntry, line) for line in lines)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
_FIELD_VALUES = st.one_of(
    _JSON_VALUES,
    st.sampled_from(
        ["2026-11-02", "2026-11-02T09:30:00Z", "2026-02-29", "9999-12-31T23:59:59.999999-01:00", " ", "W 1"]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(
        st.sampled_from([*TimeEntry.model_fields, "extra"]), _FIELD_VALUES | st.just(_DROP), max_size=4
    )
)
def test_any_line_is_written_as_the_model_writes_it_or_left_to_it(changes: dict[str, Any]) -> None:
    try:
        line = line_of(ENTRY, **changes)
    except ValueError:  # a value json cannot write (an integer beyond its range for orjson is still fine)
        return
    assert_same_or_deferred(TimeEntry, line)


_FRACTION = st.sampled_from(["", ".1", ".25", ".123456", ".1234567"])
_OFFSET = st.sampled_from(["Z", "z", ""]) | st.builds(
    "{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 25), st.integers(0, 61)
)
_INSTANT_SHAPED = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format,
    st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32),
    st.integers(0, 25), st.integers(0, 61), st.integers(0, 61), _FRACTION, _OFFSET,
)  # fmt: skip
_DATE_SHAPED = st.builds("{:04d}-{:02d}-{:02d}".format, st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32))


@settings(max_examples=1000, deadline=None)
@given(text=_INSTANT_SHAPED | _DATE_SHAPED)
def test_any_instant_or_date_shaped_text_is_read_as_the_model_reads_it_or_left_to_it(text: str) -> None:
    field = "occurred_at" if "T" in text else "work_date"
    assert_same_or_deferred(TimeEntry, line_of(ENTRY, **{field: text}))
