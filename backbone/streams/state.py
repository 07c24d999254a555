"""State of a processor: one in-memory store per (store name, partition), backed by a changelog topic.

A handler reads and writes its partition's `Store` like a dict. The keys it changed are written to the
store's compacted changelog topic (same partition number) when the transaction commits, so state,
outputs and consumed offsets become durable together. On assignment a partition's store is rebuilt
by reading its changelog partition to the end with read_committed (`restore`); a partition handed
away, or a transaction aborted, forgets its state and restores it again when needed.
The values are whatever the store's `Codec` turns into bytes: the changelog record is the compact
encoding of one key's state, never a whole store.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import rocksdict
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from backbone.streams.clients import take
from backbone.streams.errors import FatalStreamError

log = structlog.get_logger(__name__)


class Codec(Protocol):
    """Turns one key's state into a changelog value and back."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


@dataclass(frozen=True)
class StoreSpec:
    """A named store and the compacted topic its partitions are logged to."""

    name: str
    changelog: str
    codec: Codec
    on_disk: bool = False
    """Kept in the worker's `LocalDisk` (`DiskStore`) when it has one: for state that grows with the
    number of keys ever seen (entries, ledgers); small or often-scanned state stays in memory."""
    group_separator: str | None = None
    """Keys are `group + separator + rest` and handlers list a group (`items(group + separator)`): a
    `DiskStore` then finds a group's keys written since the last flush without looking at the others."""


DELETED: Any = object()
"""A key deleted since the last flush (`Store.data`): its tombstone is still to be written."""


class Store:
    """One partition of one store held in memory: a dict, plus the keys changed since the last flush.

    A restored key keeps its changelog bytes (`encoded`) until it is first read: most of a partition's
    keys are never read again after a restart (an entry whose approval is in), and decoding all of them
    was most of a restore's time and a decoded value takes several times its bytes' memory
    (docs/topology-performance.md, "Sixth session"). A key is in `data` or in `encoded`, never both.
    For state that must not grow with the number of keys see `DiskStore`."""

    __slots__ = ("data", "dirty", "encoded", "held", "partition", "spec")

    def __init__(self, spec: StoreSpec, partition: int) -> None:
        self.spec = spec
        self.partition = partition
        self.data: dict[str, Any] = {}
        self.encoded: dict[str, bytes] = {}
        self.dirty: set[str] = set()
        self.held: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        if value is None:
            if not self.encoded or key not in self.encoded:
                return default
            value = self.data[key] = self._decode(key, self.encoded.pop(key))
        return default if value is DELETED else value

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty.add(key)
        if self.encoded:
            self.encoded.pop(key, None)

    def delete(self, key: str) -> None:
        self.data[key] = DELETED
        self.encoded.pop(key, None)
        self.dirty.add(key)

    def hold(self, key: str, value: Any) -> None:
        """Keep a new value readable without logging it: a handler `put`s it once it is worth keeping,
        and one never put is gone after the next flush (as if it had never been)."""
        self.data[key] = value
        self.held.add(key)

    def discard(self, key: str) -> None:
        """Forget a value `hold` kept (an operation that made it was rolled back)."""
        if key not in self.dirty:
            self.data.pop(key, None)

    def items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Every key (starting with `prefix`) and its value; the restored ones are decoded now."""
        if self.encoded:
            restored = [key for key in self.encoded if key.startswith(prefix)]
            self.data.update((key, self._decode(key, self.encoded.pop(key))) for key in restored)
        return ((k, v) for k, v in list(self.data.items()) if v is not DELETED and k.startswith(prefix))

    def _decode(self, key: str, data: bytes) -> Any:
        try:
            return self.spec.codec.decode(data)
        except Exception as error:  # our own changelog: not a record's fault, so no dead letter
            raise FatalStreamError(
                f"state {self.spec.name}/{self.partition}: the changelog record of key {key!r:.80} in "
                f"{self.spec.changelog} cannot be read ({error}); this worker stops without committing",
                hint="a changelog written by another version of the processor? run the version that wrote it",
            ) from error

    def __len__(self) -> int:
        return sum(v is not DELETED for v in self.data.values()) + len(self.encoded)

    def is_empty(self) -> bool:
        """No key has a value (cheaper than `len`, which a store on disk counts by a scan)."""
        return not self.encoded and all(value is DELETED for value in self.data.values())

    def restored(self, key: str, data: bytes | None) -> None:
        """A changelog record read by a restore: the key's latest value, or its deletion (None)."""
        self.data.pop(key, None)
        if data is None:
            self.encoded.pop(key, None)
        else:
            self.encoded[key] = data

    def restored_record(self, key: bytes, data: bytes | None) -> None:
        """`restored`, with the record's key as it was read."""
        self.restored(key.decode(), data)

    def restore_done(self) -> None:
        """Every changelog record of the partition has been handed to `restored`."""

    def changes(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Changelog records (key, encoded value or None for a deletion) of the dirty keys; clears them."""
        encode, data = self.spec.codec.encode, self.data
        for key in self.dirty:
            value = data.get(key)
            if value is DELETED or value is None:
                data.pop(key, None)
                yield key.encode(), None
            else:
                yield key.encode(), encode(value)
        self._drop_held()
        self.dirty.clear()

    def trim(self) -> None:
        """Called after every flush: a store in memory keeps what it holds."""

    def _drop_held(self) -> None:
        """Values `hold` kept and nobody `put`: not state (see `hold`)."""
        for key in self.held:
            if key not in self.dirty:
                self.data.pop(key, None)
        self.held.clear()

    def drop(self) -> None:
        """The partition is no longer held here."""


class DiskStore(Store):
    """One partition of one store on local disk (RocksDB), with a bounded cache of decoded values.

    Memory stays flat however many keys a partition holds (docs/topology-performance.md, "Seventh
    session"): every flushed value is kept on disk as its changelog bytes, and `data` holds only the
    values read or written since the last flush plus the most recently read ones, at most `cache_keys`
    after a flush. The disk is a copy of the changelog, never trusted across processes: it starts empty
    and a restore fills it. A handler may change a value it read in place until the next flush, as with
    `Store`; it must `put` it for the change to last.
    """

    __slots__ = ("cache_keys", "disk", "fresh", "prefix")

    def __init__(self, spec: StoreSpec, partition: int, disk: LocalDisk, cache_keys: int) -> None:
        super().__init__(spec, partition)
        self.disk = disk
        self.prefix = disk.namespace(spec.name, partition)
        self.cache_keys = cache_keys
        self.fresh: dict[str, set[str]] = {}
        """By group (`StoreSpec.group_separator`): the keys written or held since the last flush."""

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        if value is None:
            raw = self.disk.db.get(self.prefix + key.encode())
            if raw is None:
                return default
            value = self.data[key] = self._decode(key, raw)
        return default if value is DELETED else value

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty.add(key)
        if self.spec.group_separator is not None:
            self._fresh(key)

    def delete(self, key: str) -> None:
        self.data[key] = DELETED
        self.dirty.add(key)

    def hold(self, key: str, value: Any) -> None:
        super().hold(key, value)
        if self.spec.group_separator is not None:
            self._fresh(key)

    def _fresh(self, key: str) -> None:
        group = key.partition(self.spec.group_separator)[0]  # type: ignore[arg-type]  # checked by callers
        keys = self.fresh.get(group)
        if keys is None:
            self.fresh[group] = {key}
        else:
            keys.add(key)

    def items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Every key starting with `prefix` and its value, in key order.

        Values only on disk are decoded for the caller and not cached (a scan must not fill memory):
        read them, do not change them; `get` the ones to change."""
        found = self._found(prefix)
        for key in sorted(found):
            value = found[key]
            yield key, self._decode(key, value) if isinstance(value, bytes) else value

    def __len__(self) -> int:
        """The keys (a scan of the partition: for reports, not for handlers)."""
        return len(self._found(""))

    def is_empty(self) -> bool:
        if any(value is not DELETED for value in self.data.values()):
            return False
        start, skip = self.prefix, len(self.prefix)
        raw_key: bytes
        for raw_key in self.disk.db.keys(from_key=start):  # type: ignore[assignment]  # raw mode: bytes
            if not raw_key.startswith(start):
                break
            if raw_key[skip:].decode() not in self.data:  # on disk and not deleted since the flush
                return False
        return True

    def _found(self, prefix: str) -> dict[str, Any]:
        """Each live key starting with `prefix`: its value if cached, else its bytes on disk."""
        data, start, skip = self.data, self.prefix + prefix.encode(), len(self.prefix)
        found: dict[str, Any] = {}
        raw_key: bytes
        for raw_key, raw in self.disk.db.items(from_key=start):  # type: ignore[assignment]  # raw mode: bytes
            if not raw_key.startswith(start):
                break
            key = raw_key[skip:].decode()
            found[key] = data.get(key, raw)
        for key in self._written_since_flush(prefix):  # new ones are not on disk yet
            if key not in found and key.startswith(prefix):
                found[key] = data.get(key, DELETED)
        return {key: value for key, value in found.items() if value is not DELETED}

    def _written_since_flush(self, prefix: str) -> Iterable[str]:
        """The keys put or held since the last flush that may start with `prefix` (a superset)."""
        separator = self.spec.group_separator
        if separator is not None and prefix.endswith(separator) and prefix.count(separator) == 1:
            return self.fresh.get(prefix[: -len(separator)], ())
        return itertools.chain(self.dirty, self.held)

    def restored(self, key: str, data: bytes | None) -> None:
        self.disk.stage(self.prefix + key.encode(), data)

    def restored_record(self, key: bytes, data: bytes | None) -> None:
        self.disk.stage(self.prefix + key, data)  # a restore reads millions: no str round trip

    def restore_done(self) -> None:
        self.disk.write_staged()

    def changes(self) -> Iterator[tuple[bytes, bytes | None]]:
        """As `Store.changes`; the records also go to disk (one write of them all)."""
        encode, data, prefix = self.spec.codec.encode, self.data, self.prefix
        batch = rocksdict.WriteBatch(raw_mode=True)  # a flush's records are in memory already: one batch
        for key in self.dirty:
            value = data.get(key)
            raw_key = key.encode()
            if value is DELETED or value is None:
                data.pop(key, None)
                batch.delete(prefix + raw_key)
                yield raw_key, None
            else:
                encoded = encode(value)
                batch.put(prefix + raw_key, encoded)
                yield raw_key, encoded
        self.disk.write(batch)
        self._drop_held()
        self.dirty.clear()
        self.fresh.clear()

    def trim(self) -> None:
        """Cut the decoded values back to `cache_keys`, oldest first (a dict keeps insertion order):
        every flushed value is on disk. After every flush, for every partition, including one that was
        only read since (reads fill the cache as writes do: a replay's worker grew by ~800 MiB when only
        some partitions were written for a while)."""
        excess = len(self.data) - self.cache_keys
        if excess > 0:
            data = self.data
            for key in list(itertools.islice(data, excess)):
                del data[key]

    def drop(self) -> None:
        self.disk.erase(self.prefix)


class LocalDisk:
    """The RocksDB database of one worker process: every `DiskStore` partition under its own key prefix.

    It is a cache of the changelogs, not a source of truth: it is emptied when opened, a partition's
    range is erased when the partition is forgotten, and the directory is removed on close. So nothing
    needs the write-ahead log, and memory is RocksDB's bounded write buffers and block cache.
    """

    def __init__(self, path: Path, memory_mib: int = 64) -> None:
        shutil.rmtree(path, ignore_errors=True)  # what a killed predecessor in this slot left
        path.mkdir(parents=True)
        self.path = path
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_db_write_buffer_size(memory_mib * 1024 * 1024 // 2)
        options.set_write_buffer_size(memory_mib * 1024 * 1024 // 4)
        # Most reads that reach the disk are of keys it does not hold (a new entry, a new ledger): a bloom
        # filter over each write buffer's keys answers those without searching it (~6-7 µs of CPU per
        # miss down to ~2-3 in stages_bench, two misses per entry; docs/topology-performance.md,
        # "Twelfth session"), for a tenth of the buffer's size.
        options.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO)
        options.set_memtable_whole_key_filtering(True)
        # Compressing the files is CPU spent on a copy that is thrown away with the process (snappy was
        # ~1 % of a saturated worker's CPU in perf; docs/topology-performance.md, "Thirteenth session").
        options.set_compression_type(rocksdict.DBCompressionType.none())
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(memory_mib * 1024 * 1024 // 2))
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        self.db = rocksdict.Rdict(str(path), options)
        self._write = rocksdict.WriteOptions()
        self._write.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; the stub says method
        self._batch = rocksdict.WriteBatch(raw_mode=True)
        self._staged = 0

    @staticmethod
    def namespace(name: str, partition: int) -> bytes:
        return f"{name}\x00{partition}\x00".encode()

    def stage(self, key: bytes, value: bytes | None) -> None:
        """Add a write (None: a deletion) to the next `write_staged`; written early when many."""
        if value is None:
            self._batch.delete(key)
        else:
            self._batch.put(key, value)
        self._staged += 1
        if self._staged >= STAGED_WRITES:
            self.write_staged()

    def write_staged(self) -> None:
        if self._staged:
            self.db.write(self._batch, self._write)
            self._batch = rocksdict.WriteBatch(raw_mode=True)
            self._staged = 0

    def write(self, batch: rocksdict.WriteBatch) -> None:
        """Write a batch a caller filled itself (after what is staged)."""
        self.write_staged()
        self.db.write(batch, self._write)

    def erase(self, prefix: bytes) -> None:
        self.write_staged()
        self.db.delete_range(prefix, prefix[:-1] + b"\x01", self._write)

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)


MEMTABLE_BLOOM_RATIO = 0.1
"""The write buffers' bloom filters, as a share of their size (RocksDB's memtable_prefix_bloom_size_ratio)."""

STAGED_WRITES = 10_000
"""Writes collected before RocksDB gets them as one batch (a restore stages millions)."""


Produce = Callable[[str, int, bytes, bytes | None], None]
"""produce(topic, partition, key, value): how a flush hands changelog records to the transaction."""


class StateStores:
    """Every store partition this worker holds."""

    def __init__(self, specs: Iterable[StoreSpec], disk: Path | None = None, cache_keys: int = 1_024) -> None:
        """`disk`: the directory of this worker's `LocalDisk` (None: every store in memory);
        `cache_keys`: decoded values a `DiskStore` partition keeps after a flush."""
        self.specs = {spec.name: spec for spec in specs}
        self._stores: dict[tuple[str, int], Store] = {}
        self.cache_keys = cache_keys
        wants_disk = disk is not None and any(spec.on_disk for spec in self.specs.values())
        self.disk = LocalDisk(disk) if wants_disk and disk is not None else None

    def open(self, name: str, partition: int) -> Store:
        """An empty store partition, on disk when its spec asks and this worker has one."""
        spec = self.specs[name]
        if spec.on_disk and self.disk is not None:
            self.disk.erase(self.disk.namespace(name, partition))
            return DiskStore(spec, partition, self.disk, self.cache_keys)
        return Store(spec, partition)

    def take(self, name: str, partition: int) -> Store:
        """Hold an empty store partition from now on, without a restore (processing without Kafka: see
        `backbone.streams.memory`)."""
        store = self._stores[(name, partition)] = self.open(name, partition)
        return store

    def close(self) -> None:
        """Give back the disk (the stores are rebuilt from their changelogs by the next worker)."""
        self._stores.clear()
        if self.disk is not None:
            self.disk.close()
            self.disk = None

    def get(self, name: str, partition: int) -> Store:
        store = self._stores.get((name, partition))
        if store is None:
            raise KeyError(f"store {name} partition {partition} is not held by this worker (not assigned/restored)")
        return store

    def holds(self, name: str, partition: int) -> bool:
        return (name, partition) in self._stores

    def held(self) -> list[tuple[str, int]]:
        return list(self._stores)

    def flush(self, produce: Produce) -> int:
        """Hand every dirty key's changelog record to `produce`; the number of records."""
        written = 0
        for store in self._stores.values():
            if store.dirty:
                topic, partition = store.spec.changelog, store.partition
                written += len(store.dirty)  # one record per dirty key
                for key, value in store.changes():
                    produce(topic, partition, key, value)
            store.trim()
        return written

    def forget(self, keys: Iterable[tuple[str, int]] | None = None) -> None:
        """Drop the named store partitions (all when None): they are restored again when needed."""
        for key in list(self._stores) if keys is None else list(keys):
            store = self._stores.pop(key, None)
            if store is not None:
                store.drop()

    def restore(self, reader: Consumer, keys: Iterable[tuple[str, int]], timeout: float = 600.0) -> int:
        """Rebuild the named store partitions from their changelogs; the number of records read."""
        wanted = [key for key in keys if key[0] in self.specs]
        if not wanted:
            return 0
        started = time.monotonic()
        fresh = {key: self.open(*key) for key in wanted}
        by_partition = {(self.specs[name].changelog, partition): fresh[(name, partition)] for name, partition in wanted}
        records = _read_to_end(reader, by_partition, timeout)
        for store in fresh.values():
            store.restore_done()
        self._stores.update(fresh)
        log.info(
            "state restored",
            partitions=sorted(f"{name}/{partition}" for name, partition in wanted),
            records=records,
            on_disk=sum(isinstance(s, DiskStore) for s in fresh.values()),
            seconds=round(time.monotonic() - started, 3),
        )
        return records


def _read_to_end(reader: Consumer, stores: dict[tuple[str, int], Store], timeout: float) -> int:
    """Apply every committed changelog record of the given partitions up to their current end."""
    pending = set(stores)
    reader.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for topic, partition in stores])
    deadline = time.monotonic() + timeout
    records = 0
    try:
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"changelog partitions not read to their end within {timeout}s: {sorted(pending)}")
            for message in take(reader, 10_000, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"reading changelog {message.topic()}: {error}")
                    pending.discard((message.topic(), message.partition()))
                    continue
                store = stores[(message.topic(), message.partition())]  # type: ignore[index]
                key = message.key()
                if key is not None:
                    store.restored_record(key, message.value())
                records += 1
    finally:
        reader.unassign()
    return records
