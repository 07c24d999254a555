"""Reading canonical JSON lines: every bad line is named by number, field and a reason to act on."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from producers.jsonl import NOT_JSON, WHOLE_RECORD, Problem, read_jsonl
from tests.examples import RICH, minimal_time_entry


def _line(payload: dict[str, Any]) -> str:
    return json.dumps(payload)


def _without(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != name}


WORKER = RICH["worker"]
ENTRY = minimal_time_entry(1)
CONTRACT = RICH["contract"]

REJECTED = [
    pytest.param("time-entry", '{"time_entry_id": "TE-1",', NOT_JSON, "not valid JSON", id="bad-json"),
    pytest.param("time-entry", "[1, 2, 3]", WHOLE_RECORD, "expected a JSON object", id="not-an-object"),
    pytest.param("time-entry", _line({**ENTRY, "revision": "two"}), "revision", "valid integer", id="wrong-type-int"),
    pytest.param(
        "time-entry", _line({**ENTRY, "billable": "maybe"}), "billable", "valid boolean", id="wrong-type-bool"
    ),
    pytest.param(
        "time-entry",
        _line({**ENTRY, "work_date": "02/11/2026"}),
        "work_date",
        "valid date",
        id="wrong-date-format",
    ),
    pytest.param(
        "time-entry",
        _line({**ENTRY, "duration_seconds": -5}),
        "duration_seconds",
        "greater than or equal to 0",
        id="negative-duration",
    ),
    pytest.param(
        "time-entry",
        _line(_without(ENTRY, "worker_id")),
        "worker_id",
        "required field is missing",
        id="missing-field",
    ),
    pytest.param("time-entry", _line({**ENTRY, "colour": "red"}), "colour", "unknown field", id="unknown-field"),
    pytest.param("time-entry", _line({**ENTRY, "billable": "yes"}), "billable", "boolean", id="bool-as-text"),
    pytest.param("time-entry", _line({**ENTRY, "revision": "2"}), "revision", "integer", id="int-as-text"),
    pytest.param(
        "time-entry", _line({**ENTRY, "duration_seconds": 3600.5}), "duration_seconds", "integer", id="int-as-float"
    ),
    pytest.param(
        "time-entry", _line({**ENTRY, "occurred_at": 1793000000}), "occurred_at", "RFC 3339", id="instant-as-number"
    ),
    pytest.param(
        "time-entry",
        _line({**ENTRY, "occurred_at": "2026-11-02T09:30:00"}),
        "occurred_at",
        "time zone",
        id="instant-without-zone",
    ),
    pytest.param(
        "worker",
        _line({**WORKER, "employment_type": "FREELANCER"}),
        "employment_type",
        "unknown value 'FREELANCER'; expected 'EMPLOYEE' or 'CONTRACTOR'",
        id="unknown-enum",
    ),
    pytest.param("worker", _line({**WORKER, "cost_rate": 85.5}), "cost_rate", "decimal strings", id="float-money"),
    pytest.param(
        "worker",
        _line({**WORKER, "cost_rate": "85.12345"}),
        "cost_rate",
        "more than 4 decimal places",
        id="too-many-decimals",
    ),
    pytest.param(
        "worker",
        _line({**WORKER, "cost_rate": "lots"}),
        "cost_rate",
        "not a decimal number",
        id="money-not-a-number",
    ),
    pytest.param("worker", _line({**WORKER, "cost_currency": "euro"}), "cost_currency", "ISO 4217", id="bad-currency"),
    pytest.param(
        "contract",
        _line({**CONTRACT, "rate_card": [{"hourly_rate": 150.5}]}),
        "rate_card.0.hourly_rate",
        "decimal strings",
        id="float-money-nested",
    ),
    pytest.param(
        "approval",
        _line({**RICH["approval"], "decision": "MAYBE"}),
        "decision",
        "expected 'APPROVED' or 'REJECTED'",
        id="unknown-enum-decision",
    ),
]


@pytest.mark.parametrize(("event_type", "text", "field", "reason"), REJECTED)
def test_invalid_line_is_rejected_with_line_field_and_reason(
    event_type: str, text: str, field: str, reason: str
) -> None:
    good = _line(RICH[event_type])
    batch = read_jsonl([good, text, good], event_type)
    assert [e.line for e in batch.events] == [1, 3]
    (rejection,) = batch.rejections
    assert rejection.line == 2
    assert rejection.text == text
    matching = [p for p in rejection.problems if p.field == field]
    assert matching, rejection.problems
    assert reason in matching[0].reason
    assert any(m.startswith(f"line 2: {field}: ") for m in rejection.messages())


def test_every_problem_of_a_line_is_reported() -> None:
    text = _line({**_without(ENTRY, "worker_id"), "revision": 0, "billable": "maybe"})
    (rejection,) = read_jsonl([text], "time-entry").rejections
    assert {p.field for p in rejection.problems} == {"worker_id", "revision", "billable"}


def test_line_numbers_count_blank_lines_like_an_editor() -> None:
    batch = read_jsonl(["", _line(ENTRY), "   ", "{nope"], "time-entry")
    assert [e.line for e in batch.events] == [2]
    assert [r.line for r in batch.rejections] == [4]


def test_valid_lines_become_canonical_events() -> None:
    batch = read_jsonl([_line(RICH["contract"])], "contract")
    (parsed,) = batch.events
    assert parsed.event.rate_card[1].hourly_rate == Decimal("150.25")
    assert parsed.event.key == "K-1:3"


def test_optional_fields_may_be_omitted_or_null() -> None:
    batch = read_jsonl([_line(ENTRY), _line({**ENTRY, "notes": None, "task_id": None})], "time-entry")
    assert len(batch.events) == 2 and not batch.rejections
    assert batch.events[0].event == batch.events[1].event


def test_rejection_json_keeps_the_original_text_and_reasons() -> None:
    (rejection,) = read_jsonl(["{nope"], "time-entry").rejections
    record = rejection.to_json()
    assert record["line"] == 1 and record["text"] == "{nope"
    assert record["errors"][0]["field"] == NOT_JSON


def test_unknown_event_type_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="time-entry"):
        read_jsonl([], "timesheet")


def test_problem_is_a_value() -> None:
    assert Problem("a", "b") == Problem("a", "b")
