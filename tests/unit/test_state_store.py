"""A store partition keeps restored keys as their changelog bytes until first read, and behaves as a dict.

`backbone.streams.state.Store` (in memory) and `DiskStore` (RocksDB on local disk, a bounded cache of
decoded values) after a restore: what a handler reads, writes, deletes and iterates is what it would be
had every record been decoded at once, each restored value is decoded at most once while cached, and a
changelog record that cannot be decoded stops the worker instead of being taken for a record's fault.
The restore itself, on the real broker, is in tests/integration/test_streams.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backbone.streams.errors import FatalStreamError
from backbone.streams.state import StateStores, Store, StoreSpec


class CountingJson:
    """A JSON codec that counts its decodes."""

    def __init__(self) -> None:
        self.decodes = 0

    def encode(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def decode(self, data: bytes) -> Any:
        self.decodes += 1
        return json.loads(data)


@pytest.fixture(params=["memory", "disk"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStores]:
    """The stores of a worker whose `entries` store is in memory, or on disk as the topology's are."""
    codec = CountingJson()
    spec = StoreSpec("entries", "app-entries-changelog", codec, on_disk=request.param == "disk")
    held = StateStores([spec], tmp_path / "state", cache_keys=2)
    yield held
    held.close()


@pytest.fixture
def restored(stores: StateStores) -> Any:
    def restore(records: list[tuple[str, Any]]) -> tuple[Store, CountingJson]:
        """A store after a restore read `records` (key, value or None for a tombstone), in order."""
        store = stores.open("entries", 3)
        codec: CountingJson = store.spec.codec  # type: ignore[assignment]
        for key, value in records:
            store.restored(key, None if value is None else codec.encode(value))
        store.restore_done()
        return store, codec

    return restore


def test_a_restored_key_reads_as_its_latest_value_and_is_decoded_once_on_first_read(restored: Any) -> None:
    store, codec = restored([("a", {"v": 1}), ("a", {"v": 2}), ("b", {"v": 3})])
    assert codec.decodes == 0
    assert store.get("a") == {"v": 2}
    assert store.get("a") == {"v": 2}
    assert codec.decodes == 1
    assert store.get("missing", "default") == "default"
    assert len(store) == 2


def test_a_tombstone_removes_a_restored_key(restored: Any) -> None:
    store, _ = restored([("a", {"v": 1}), ("b", {"v": 2}), ("a", None)])
    assert store.get("a") is None
    assert dict(store.items()) == {"b": {"v": 2}}
    assert len(store) == 1


def test_a_put_replaces_a_restored_value_without_decoding_it_and_is_logged(restored: Any) -> None:
    store, codec = restored([("a", {"v": 1})])
    store.put("a", {"v": 9})
    assert store.get("a") == {"v": 9}
    assert codec.decodes == 0
    assert list(store.changes()) == [(b"a", b'{"v": 9}')]
    assert len(store) == 1


def test_a_delete_of_a_restored_key_is_logged_as_a_tombstone(restored: Any) -> None:
    store, _ = restored([("a", {"v": 1})])
    store.delete("a")
    assert store.get("a") is None
    assert len(store) == 0
    assert list(store.changes()) == [(b"a", None)]


def test_items_yield_every_key_restored_or_written_and_reading_them_logs_nothing(restored: Any) -> None:
    store, codec = restored([("a", {"v": 1}), ("b", {"v": 2})])
    assert store.get("a") == {"v": 1}
    store.put("c", {"v": 3})
    assert dict(store.items()) == {"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 3}}
    assert codec.decodes == 2
    assert list(store.changes()) == [(b"c", b'{"v": 3}')]


@pytest.mark.parametrize("read", [lambda s: s.get("a"), lambda s: dict(s.items())], ids=["get", "items"])
def test_a_changelog_record_that_cannot_be_decoded_stops_the_worker(restored: Any, read: Any) -> None:
    store, _ = restored([])
    store.restored("a", b"not json")
    store.restore_done()
    with pytest.raises(FatalStreamError, match=r"state entries/3: the changelog record of key 'a'"):
        read(store)


# --- on disk -------------------------------------------------------------------------------------------


@pytest.fixture(params=[None, "|"], ids=["keys", "grouped-keys"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[StateStores, CountingJson]]:
    codec = CountingJson()
    spec = StoreSpec("ledgers", "app-ledgers-changelog", codec, on_disk=True, group_separator=request.param)
    held = StateStores([spec], tmp_path / "s", 2)
    yield held, codec
    held.close()


def test_after_a_flush_a_disk_store_keeps_few_values_decoded_and_reads_the_rest_back_equal(
    disk: tuple[StateStores, CountingJson],
) -> None:
    stores, codec = disk
    store = stores.take("ledgers", 0)
    for n in range(10):
        store.put(f"k{n}", {"n": n})
    assert stores.flush(lambda *record: None) == 10
    assert len(store.data) == 2  # cache_keys
    assert [store.get(f"k{n}") for n in range(10)] == [{"n": n} for n in range(10)]
    assert codec.decodes == 8
    assert len(store) == 10


def test_a_disk_store_only_read_since_the_last_flush_is_cut_back_too(disk: tuple[StateStores, CountingJson]) -> None:
    stores, _ = disk
    read = stores.take("ledgers", 0)
    written = stores.take("ledgers", 1)
    for n in range(10):
        read.put(f"k{n}", {"n": n})
    stores.flush(lambda *record: None)
    assert [read.get(f"k{n}") for n in range(10)] == [{"n": n} for n in range(10)]  # decoded, cached
    written.put("w", {"n": 0})
    assert stores.flush(lambda *record: None) == 1
    assert len(read.data) == 2


def test_a_disk_store_scan_sees_unflushed_writes_hides_deletions_keeps_key_order_and_caches_nothing(
    disk: tuple[StateStores, CountingJson],
) -> None:
    stores, codec = disk
    store = stores.open("ledgers", 0)
    for key in ("p1|b", "p1|a", "p2|a", "p1|c"):
        store.put(key, {"key": key})
    list(store.changes())
    store.data.clear()
    store.put("p1|a", {"key": "changed"})
    store.put("p1|aa", {"key": "new"})
    store.delete("p1|c")
    store.hold("p1|d", {"key": "held"})
    assert list(store.items("p1|")) == [
        ("p1|a", {"key": "changed"}),
        ("p1|aa", {"key": "new"}),
        ("p1|b", {"key": "p1|b"}),
        ("p1|d", {"key": "held"}),
    ]
    assert "p1|b" not in store.data
    assert codec.decodes == 1


def test_a_store_is_empty_until_a_key_has_a_value_and_again_once_every_key_is_deleted(restored: Any) -> None:
    store, codec = restored([])
    assert store.is_empty()
    store.hold("held", {"v": 0})
    assert not store.is_empty()
    store.discard("held")
    for key in ("a", "b", "c"):
        store.put(key, {"v": key})
    assert not store.is_empty()
    list(store.changes())
    store.trim()  # the disk store keeps two decoded: "a" is only on disk now
    store.delete("b")
    store.delete("c")
    list(store.changes())
    assert not store.is_empty()
    store.delete("a")
    assert store.is_empty()  # deleted, not flushed yet
    list(store.changes())
    assert store.is_empty()
    other, _ = restored([("b", {"v": 2}), ("c", None)])
    assert not other.is_empty()
    assert codec.decodes == 0


def test_a_held_value_is_readable_until_the_flush_and_only_a_put_makes_it_last(stores: StateStores) -> None:
    store = stores.open("entries", 0)
    store.hold("kept", {"v": 1})
    store.hold("dropped", {"v": 2})
    store.hold("undone", {"v": 3})
    store.discard("undone")
    assert store.get("dropped") == {"v": 2}
    assert store.get("undone") is None
    store.put("kept", store.get("kept"))
    assert list(store.changes()) == [(b"kept", b'{"v": 1}')]
    assert store.get("dropped") is None
    assert store.get("kept") == {"v": 1}


def test_forgetting_a_partition_erases_only_its_keys_and_closing_removes_the_directory(tmp_path: Path) -> None:
    spec = StoreSpec("ledgers", "app-ledgers-changelog", CountingJson(), on_disk=True)
    stores = StateStores([spec], tmp_path / "state", 0)
    for partition in (0, 1):
        store = stores.take("ledgers", partition)
        store.put("k", {"partition": partition})
        list(store.changes())
    stores.forget([("ledgers", 0)])
    assert stores.open("ledgers", 0).get("k") is None
    assert stores.get("ledgers", 1).get("k") == {"partition": 1}
    stores.close()
    assert not (tmp_path / "state").exists()


def test_a_disk_left_by_a_killed_worker_is_emptied_when_the_next_one_opens_it(tmp_path: Path) -> None:
    spec = StoreSpec("ledgers", "app-ledgers-changelog", CountingJson(), on_disk=True)
    first = StateStores([spec], tmp_path / "state", 0)
    store = first.open("ledgers", 0)
    store.put("k", {"v": 1})
    list(store.changes())
    assert first.disk is not None
    first.disk.db.close()  # killed: nothing removed
    second = StateStores([spec], tmp_path / "state", 0)
    assert second.open("ledgers", 0).get("k") is None
    second.close()
