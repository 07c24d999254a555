"""The project books of the books stage, kept in its ledger store rather than in memory.

A book is its project's ledgers plus per-contract running totals. The ledgers live in the partition's
ledger store under `ledger_key(project, entry)`, so a book holds only its totals and a `LedgerView` of
its project's keys: with the store on disk (`backbone.streams.state.DiskStore`) memory stays flat however
many entries a partition tracks. A book is opened the first time its project is priced in this process
(its totals counted once from its ledgers) and kept while the partition's store is the same one.
"""

from __future__ import annotations

from collections.abc import Iterator

from backbone.domain import billing
from backbone.domain.billing import Ledger
from backbone.streams.state import Store

LEDGER_KEY_SEPARATOR = "\x1f"


def ledger_key(project_id: str, time_entry_id: str) -> str:
    """The ledger store's key: the project first, so a book's ledgers are one range of keys."""
    return f"{project_id}{LEDGER_KEY_SEPARATOR}{time_entry_id}"


def project_of(key: str) -> str:
    return key.split(LEDGER_KEY_SEPARATOR, 1)[0]


class LedgerView:
    """One project's ledgers in a ledger store, as `billing.Ledgers`.

    A new ledger set here is only held (`Store.hold`): the stage `put`s every ledger an operation
    changed, and one it did not is forgotten at the next flush, as if never made."""

    __slots__ = ("prefix", "store")

    def __init__(self, store: Store, project_id: str) -> None:
        self.store = store
        self.prefix = project_id + LEDGER_KEY_SEPARATOR

    def get(self, entry_id: str, /) -> Ledger | None:
        ledger: Ledger | None = self.store.get(self.prefix + entry_id)
        return ledger

    def __getitem__(self, entry_id: str, /) -> Ledger:
        ledger = self.get(entry_id)
        if ledger is None:
            raise KeyError(entry_id)
        return ledger

    def __setitem__(self, entry_id: str, ledger: Ledger, /) -> None:
        self.store.hold(self.prefix + entry_id, ledger)

    def pop(self, entry_id: str, default: None, /) -> Ledger | None:
        ledger = self.get(entry_id)
        self.store.discard(self.prefix + entry_id)
        return ledger if ledger is not None else default

    def items(self) -> Iterator[tuple[str, Ledger]]:
        skip = len(self.prefix)
        return ((key[skip:], ledger) for key, ledger in self.store.items(self.prefix))

    def values(self) -> Iterator[Ledger]:
        return (ledger for _, ledger in self.store.items(self.prefix))


class Books:
    """The open books of one partition of the books stage.

    `priced_since`: a master-data generation (`topology.reference.ReferenceStore.generation`) at or
    after which every ledger of the partition was priced, when known: the partition held no ledger when
    its books were opened at that generation, so all of them were priced in this process since. None:
    the partition was restored with ledgers priced before (by this process or another), at unknown times.
    """

    __slots__ = ("books", "priced_since", "store")

    def __init__(self, store: Store, priced_since: int | None = None) -> None:
        self.store = store
        self.priced_since = priced_since
        self.books: dict[str, billing.ProjectBook] = {}

    def priced_with(self, generation: int) -> bool:
        """True when every ledger here was priced with the master data of `generation`, or newer."""
        return self.priced_since is not None and generation <= self.priced_since

    def is_empty(self) -> bool:
        return not self.books and self.store.is_empty()

    def book(self, project_id: str) -> billing.ProjectBook:
        """The project's book, opened (its totals counted from its ledgers) on first use."""
        book = self.books.get(project_id)
        if book is None:
            book = self.books[project_id] = billing.open_book(project_id, LedgerView(self.store, project_id))
        return book

    def has_ledgers(self, project_id: str) -> bool:
        if project_id in self.books:
            return True
        return next(iter(self.store.items(project_id + LEDGER_KEY_SEPARATOR)), None) is not None

    def projects_of_worker(self, worker_id: str) -> list[str]:
        """The projects with a ledger whose latest revision is the worker's (a scan of the partition)."""
        return sorted(
            {
                project_of(key)
                for key, ledger in self.store.items()
                if ledger.last_seen is not None and ledger.last_seen.worker_id == worker_id
            }
        )
