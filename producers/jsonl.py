"""Parsing canonical JSON Lines: every line becomes an event or a rejection that says why.

Pure functions over text; nothing here talks to Kafka. A rejection names the line (1-based, counting
blank lines too, so it matches an editor), the field (`rate_card.0.hourly_rate` for nested ones,
`(json)` when the line is not JSON, `(record)` when it is not a JSON object) and a reason a person can
act on. `backbone emit` prints them as `line N: field: reason`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from backbone.domain.models import ID_MAX_LENGTH, ID_PATTERN, INPUT_EVENTS, Event

WHOLE_RECORD = "(record)"
NOT_JSON = "(json)"
WHOLE_LINE = "(line)"
MAX_LINE_BYTES = 1_048_576
"""A longer line is rejected unread (no event comes near it), so one huge line cannot exhaust memory."""
SHOWN_TEXT = 200
"""Characters of a rejected line kept for the rejects file when the line is not valid text or too long."""
CURRENCY_PATTERN = "^[A-Z]{3}$"


@dataclass(frozen=True)
class Problem:
    """One reason a line was rejected."""

    field: str
    reason: str


@dataclass(frozen=True)
class Rejection:
    """A line that is not a valid event, with every problem found in it."""

    line: int
    text: str
    problems: tuple[Problem, ...]

    def messages(self) -> list[str]:
        return [f"line {self.line}: {p.field}: {p.reason}" for p in self.problems]

    def to_json(self) -> dict[str, Any]:
        """The form written to a rejects file: the original text next to its reasons."""
        return {
            "line": self.line,
            "errors": [{"field": p.field, "reason": p.reason} for p in self.problems],
            "text": self.text,
        }


@dataclass(frozen=True)
class ParsedEvent:
    """A valid event and the line it came from."""

    line: int
    event: Event


@dataclass
class JsonlBatch:
    """The outcome of reading a whole input."""

    events: list[ParsedEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def event_class(event_type: str) -> type[Event]:
    """The input event class `backbone emit` accepts under `event_type` (e.g. `time-entry`)."""
    try:
        return INPUT_EVENTS[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}; known: {', '.join(sorted(INPUT_EVENTS))}") from None


def read_jsonl(lines: Iterable[str], event_type: str) -> JsonlBatch:
    """Every valid event (with its line number) and every rejection of an input."""
    batch = JsonlBatch()
    for item in iter_jsonl(lines, event_type):
        if isinstance(item, Rejection):
            batch.rejections.append(item)
        else:
            batch.events.append(item)
    return batch


def iter_jsonl(lines: Iterable[str], event_type: str) -> Iterator[ParsedEvent | Rejection]:
    """Stream form of `read_jsonl`: one result per non-blank line, in input order."""
    event_cls = event_class(event_type)
    for number, text in enumerate(lines, start=1):
        if text.strip():
            yield parse_line(text, number, event_cls)


def iter_jsonl_bytes(
    handle: IO[bytes], event_type: str, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[ParsedEvent | Rejection]:
    """`iter_jsonl` over a binary stream, holding at most `max_line_bytes` of it: a longer line and a
    line that is not UTF-8 are rejections (with the line number) like any other invalid line."""
    event_cls = event_class(event_type)
    for item in iter_raw_lines(handle, max_line_bytes):
        if isinstance(item, Rejection):
            yield item
        elif (parsed := parse_raw_line(item[1], item[0], event_cls)) is not None:
            yield parsed


def iter_raw_lines(
    handle: IO[bytes], max_line_bytes: int = MAX_LINE_BYTES, lines_before: int = 0
) -> Iterator[tuple[int, bytes] | Rejection]:
    """Every line of a binary stream as (line number, bytes), a UTF-8 byte order mark before the first
    taken off; a line longer than `max_line_bytes` is a rejection, skipped without being held.
    `lines_before` counts the lines of the input before this stream's first (a later part of a file)."""
    readline = handle.readline
    number = lines_before
    while True:
        raw = readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            skipped = _skip_rest_of_line(handle, max_line_bytes)
            reason = f"line is longer than {max_line_bytes:,} bytes ({len(raw) + skipped:,} or more); not read"
            yield Rejection(number, _escaped(raw[:SHOWN_TEXT]), (Problem(WHOLE_LINE, reason),))
            continue
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        yield number, raw


def parse_raw_line(raw: bytes, line: int, event_cls: type[Event]) -> ParsedEvent | Rejection | None:
    """One line's bytes as an event, or why they are not one (not UTF-8 included); None when blank."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        reason = f"not UTF-8 text: byte 0x{raw[error.start]:02x} at column {error.start + 1}"
        return Rejection(line, _escaped(raw[:SHOWN_TEXT]), (Problem(WHOLE_LINE, reason),))
    return parse_line(text, line, event_cls) if text.strip() else None


def _skip_rest_of_line(handle: IO[bytes], chunk: int) -> int:
    skipped = 0
    while True:
        rest = handle.readline(chunk)
        skipped += len(rest)
        if not rest or rest.endswith(b"\n"):
            return skipped


def _escaped(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace").rstrip("\r\n")


def parse_line(text: str, line: int, event_cls: type[Event]) -> ParsedEvent | Rejection:
    """One line as an event of `event_cls`, or why it is not one."""
    try:
        return ParsedEvent(line, event_cls.model_validate_json(text))
    except ValidationError as error:
        problems = tuple(_problem(detail) for detail in error.errors(include_url=False))
        return Rejection(line, text.rstrip("\r\n"), problems)


def _problem(detail: ErrorDetails) -> Problem:
    kind = detail["type"]
    where = ".".join(str(part) for part in detail["loc"]) or WHOLE_RECORD
    if kind == "json_invalid":
        return Problem(NOT_JSON, f"not valid JSON: {detail.get('ctx', {}).get('error', detail['msg'])}")
    if kind in ("model_type", "model_attributes_type") and where == WHOLE_RECORD:
        return Problem(WHOLE_RECORD, "expected a JSON object with the event's fields")
    return Problem(where, _reason(kind, detail))


def _reason(kind: str, detail: ErrorDetails) -> str:
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (not part of the canonical model)"
    if kind == "enum":
        expected = detail.get("ctx", {}).get("expected", "")
        return f"unknown value {_shown(detail['input'])}; expected {expected}"
    pattern = detail.get("ctx", {}).get("pattern") if kind == "string_pattern_mismatch" else None
    if pattern == CURRENCY_PATTERN:
        return f'{_shown(detail["input"])} is not an ISO 4217 currency code like "EUR"'
    if pattern == ID_PATTERN:
        return f"{_shown(detail['input'])} is blank or holds a control character, NUL or bidirectional override"
    if kind == "string_too_long":
        return f"longer than {detail.get('ctx', {}).get('max_length', ID_MAX_LENGTH)} characters"
    if kind == "value_error":
        # Our own validators' messages are already written for people; drop pydantic's prefix.
        return detail["msg"].removeprefix("Value error, ")
    return str(detail["msg"])


def describe(detail: ErrorDetails) -> tuple[str, str]:
    """(field, reason) of one pydantic error, worded for people (shared with the HTTP gateway)."""
    problem = _problem(detail)
    return problem.field, problem.reason


def _shown(value: object) -> str:
    """A refused value as it may be printed: escaped (no control character reaches a terminal), cut short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
