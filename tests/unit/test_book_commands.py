"""The book commands the entry stage sends the books: an entry change comes back exactly as it was sent,
in its compact form or in the pydantic JSON that reference commands (and records of earlier versions) use."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest

from backbone.domain.entries import EntryChange
from backbone.domain.feedback import Refusal
from tests.unit.domain.domain_builders import entry
from topology.messages import BookCommand, decode_command, encode_change, encode_command

AT = datetime(2026, 11, 2, 9, 30, 0, 123456, tzinfo=UTC)


def _change(time_entry=None) -> EntryChange:
    return EntryChange(
        time_entry_id="E1", project_id="P1", entry=time_entry, correlation_id="corr-1", occurred_at=AT, sequence=7
    )


@pytest.mark.parametrize(
    "time_entry",
    [
        entry(task_id="T1", notes="workshop, day 2", correlation_id="corr-1", work_date=date(2026, 2, 28)),
        entry(deleted=True, revision=3, billable=False),
        None,
    ],
    ids=["a-billed-revision", "a-deleting-revision", "nothing-approved"],
)
def test_an_entry_change_comes_back_field_for_field(time_entry) -> None:
    sent = _change(time_entry)
    received = decode_command(encode_change(sent)).change
    assert received == sent
    assert received is not None and received.occurred_at.utcoffset() is not None
    if time_entry is not None:
        assert received.entry is not None
        assert received.entry.__dict__ == time_entry.__dict__
        assert received.entry.occurred_at.tzinfo is not None
        assert isinstance(received.entry.work_date, date)


def test_a_change_written_before_changes_were_numbered_is_change_zero() -> None:
    sent = _change(entry())
    older = orjson.loads(encode_change(sent))[:-1]  # the layout before `sequence`
    received = decode_command(orjson.dumps(older)).change
    assert received == sent.model_copy(update={"sequence": 0})


def test_the_pydantic_form_is_still_read() -> None:
    """Records written before the compact form (and reference commands) are BookCommand JSON."""
    sent = BookCommand(change=_change(entry()))
    assert decode_command(encode_command(sent)) == sent


@pytest.mark.parametrize("data", [b"[2, 1, 2]", b"[1]", b"not json", b'{"change": 3}'])
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_command(data)


def test_a_refusal_reaches_the_books_as_it_was_sent() -> None:
    refusal = Refusal(candidate_id="cand-1", time_entry_id="E1", project_id="P1", refused_at=AT)
    received = decode_command(encode_command(BookCommand(refusal=refusal)))
    assert received.refusal == refusal and received.change is None
