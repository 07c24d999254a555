"""The entry stage prices a change in its book at once when the worker holds the book's partition, and
sends it through the book-commands topic otherwise; the two paths never bill an entry's stale state.

Entry and book partitions move between workers, so one entry's changes can take both paths: a change
sent through the topic while another worker held the book can reach the book after a later change of
the same entry was priced in place. Each change carries its number in the entry's sequence, and a book
ignores one older than what it priced (`billing.book_entry`). The stages run as a worker runs them, over
the harness of test_books_reprice_skip.py.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from tests.unit.domain.domain_builders import approval, client, contract, entry, project, reject, worker
from tests.unit.test_books_reprice_skip import Worker, candidates


def _through_the_topic(worker_: Worker, *events) -> list:
    """The events through the entry stage of a worker that does not hold their book: the commands it sent."""
    worker_.holding = False
    worker_.book_inputs(*events)
    sent = worker_.take_produced()
    worker_.holding = True
    return sent


def test_a_change_read_from_the_topic_after_a_later_one_priced_in_place_bills_nothing(tmp_path: Path) -> None:
    worker_ = Worker(tmp_path / "state")
    worker_.load(client(), project(), worker(), contract())
    sent = _through_the_topic(worker_, entry(), approval())  # change 1: revision 1 approved
    assert [p.topic for p in sent] == [worker_.internal.book_commands.name]

    assert candidates(worker_.book(reject()), worker_) == []  # change 2, in place: nothing approved
    worker_.produced = sent  # change 1 reaches the book only now
    assert candidates(worker_.book(), worker_) == []  # the entry is rejected: nothing to bill


def test_changes_in_order_bill_the_same_on_either_path(tmp_path: Path) -> None:
    worker_ = Worker(tmp_path / "state")
    worker_.load(client(), project(), worker(), contract())
    sent = _through_the_topic(worker_, entry(), approval())
    worker_.produced = sent
    [billed] = candidates(worker_.book(), worker_)  # change 1 through the topic, in order
    assert billed.amount == Decimal("150.00")
    longer = entry(revision=2, duration_seconds=7200)
    [adjustment] = candidates(worker_.book(longer, approval(revision=2)), worker_)  # change 2, in place
    assert adjustment.amount == Decimal("150.00") and adjustment.kind == "ADJUSTMENT"
