"""Books kept in a ledger store on disk price exactly as books kept in memory.

The topology's books stage keeps each project's ledgers in its ledger store (`topology.books`), on local
disk with almost nothing decoded in memory between flushes, and opens a book (counting its totals) the
first time its project is priced. Hypothesis draws the interleavings test's firms and feeds the same
events to the core's in-memory pipeline and to one whose books live in a `DiskStore` flushed after every
operation with a one-value cache, so nearly every ledger is read back from its changelog bytes: every
output event, every final ledger and every book's totals must be the same, and a book opened again from
the disk alone (a restarted worker) must count the same totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from domain_builders import ROUTING, entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_domain_interleavings import firms, interleave, labels

from backbone.domain import billing
from backbone.domain.pipeline import BillingPipeline
from backbone.domain.routing import RoutingRules
from backbone.streams.state import StateStores, StoreSpec
from topology import state_codecs
from topology.books import LEDGER_KEY_SEPARATOR, Books, ledger_key


class StoredPipeline(BillingPipeline):
    """The core's pipeline with its books over a ledger store, as the books stage keeps them."""

    def __init__(self, routing: RoutingRules, stores: StateStores) -> None:
        super().__init__(routing)
        self.store = stores.open("ledgers", 0)
        self.shelf = Books(self.store)
        self.books = self.shelf.books  # the same dict: the pipeline's "has a book" checks see opened books

    def _settle(self, project_id: str, step: Any) -> list[Any]:
        settled = step(self.shelf.book(project_id))
        for ledger in settled.changed:
            self.store.put(ledger_key(project_id, ledger.time_entry_id), ledger)
        list(self.store.changes())  # a commit after every operation: the cache is cut to one value
        self.store.trim()
        return list(settled.events)


@pytest.fixture
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateStores]:
    spec = StoreSpec(
        "ledgers", "app-ledgers-changelog", state_codecs.LEDGER, on_disk=True, group_separator=LEDGER_KEY_SEPARATOR
    )
    held = StateStores([spec], tmp_path_factory.mktemp("books") / "state", cache_keys=1)
    yield held
    held.close()


def _ledgers(book: billing.ProjectBook) -> dict[str, bytes]:
    return {entry_id: state_codecs.LEDGER.encode(ledger) for entry_id, ledger in book.ledgers.items()}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_books_on_disk_price_every_interleaving_exactly_as_books_in_memory(data: Any, stores: StateStores) -> None:
    chains = data.draw(firms())
    order = data.draw(st.permutations(labels(chains)))
    in_memory, on_disk = BillingPipeline(ROUTING), StoredPipeline(ROUTING, stores)
    for event in interleave(chains, order):
        assert on_disk.handle(event) == in_memory.handle(event)
    assert sorted(on_disk.books) == sorted(in_memory.books)
    reopened = Books(on_disk.store)
    for project_id, book in in_memory.books.items():
        stored = on_disk.books[project_id]
        assert _ledgers(stored) == _ledgers(book)
        assert stored.billed_by_contract == book.billed_by_contract
        assert stored.at_risk_by_contract == book.at_risk_by_contract
        again = reopened.book(project_id)
        assert (again.billed_by_contract, again.at_risk_by_contract) == (
            book.billed_by_contract,
            book.at_risk_by_contract,
        )


def test_a_worker_change_finds_the_projects_of_its_entries_on_disk(stores: StateStores) -> None:
    store = stores.open("ledgers", 0)
    for project_id, entry_id, worker_id in (("P1", "E1", "W1"), ("P2", "E2", "W2"), ("P3", "E3", "W1")):
        ledger = billing.Ledger(time_entry_id=entry_id, correlation_id="c", last_seen=entry(worker_id=worker_id))
        store.put(ledger_key(project_id, entry_id), ledger)
    list(store.changes())
    books = Books(store)
    assert books.projects_of_worker("W1") == ["P1", "P3"]
    assert books.has_ledgers("P2") and not books.has_ledgers("P4")
