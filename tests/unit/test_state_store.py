"""A store partition keeps restored keys as their changelog bytes until first read, and behaves as a dict.

`backbone.streams.state.Store` after a restore: what a handler reads, writes, deletes and iterates is
what it would be had every record been decoded at once, each restored value is decoded at most once,
and a changelog record that cannot be decoded stops the worker instead of being taken for a record's
fault. The restore itself, on the real broker, is in tests/integration/test_streams.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from backbone.streams.errors import FatalStreamError
from backbone.streams.state import Store, StoreSpec


class CountingJson:
    """A JSON codec that counts its decodes."""

    def __init__(self) -> None:
        self.decodes = 0

    def encode(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def decode(self, data: bytes) -> Any:
        self.decodes += 1
        return json.loads(data)


def restored(records: list[tuple[str, Any]]) -> tuple[Store, CountingJson]:
    """A store after a restore read `records` (key, value or None for a tombstone), in order."""
    codec = CountingJson()
    store = Store(StoreSpec("entries", "app-entries-changelog", codec), partition=3)
    for key, value in records:
        store.restored(key, None if value is None else codec.encode(value))
    return store, codec


def test_a_restored_key_reads_as_its_latest_value_and_is_decoded_once_on_first_read() -> None:
    store, codec = restored([("a", {"v": 1}), ("a", {"v": 2}), ("b", {"v": 3})])
    assert codec.decodes == 0
    assert store.get("a") == {"v": 2}
    assert store.get("a") == {"v": 2}
    assert codec.decodes == 1
    assert store.get("missing", "default") == "default"
    assert len(store) == 2


def test_a_tombstone_removes_a_restored_key() -> None:
    store, _ = restored([("a", {"v": 1}), ("b", {"v": 2}), ("a", None)])
    assert store.get("a") is None
    assert dict(store.items()) == {"b": {"v": 2}}
    assert len(store) == 1


def test_a_put_replaces_a_restored_value_without_decoding_it_and_is_logged() -> None:
    store, codec = restored([("a", {"v": 1})])
    store.put("a", {"v": 9})
    assert store.get("a") == {"v": 9}
    assert codec.decodes == 0
    assert list(store.changes()) == [(b"a", b'{"v": 9}')]
    assert len(store) == 1


def test_a_delete_of_a_restored_key_is_logged_as_a_tombstone() -> None:
    store, _ = restored([("a", {"v": 1})])
    store.delete("a")
    assert store.get("a") is None
    assert len(store) == 0
    assert list(store.changes()) == [(b"a", None)]


def test_items_yield_every_key_restored_or_written_and_reading_them_logs_nothing() -> None:
    store, codec = restored([("a", {"v": 1}), ("b", {"v": 2})])
    assert store.get("a") == {"v": 1}
    store.put("c", {"v": 3})
    assert dict(store.items()) == {"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 3}}
    assert codec.decodes == 2
    assert list(store.changes()) == [(b"c", b'{"v": 3}')]


@pytest.mark.parametrize("read", [lambda s: s.get("a"), lambda s: dict(s.items())], ids=["get", "items"])
def test_a_changelog_record_that_cannot_be_decoded_stops_the_worker(read: Any) -> None:
    store, _ = restored([])
    store.restored("a", b"not json")
    with pytest.raises(FatalStreamError, match=r"state entries/3: the changelog record of key 'a'"):
        read(store)
