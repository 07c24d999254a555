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

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

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


class Store:
    """One partition of one store: a dict, plus the keys changed since the last flush.

    A restored key keeps its changelog bytes (`encoded`) until it is first read: most of a partition's
    keys are never read again after a restart (an entry whose approval is in), and decoding all of them
    was most of a restore's time and a decoded value takes several times its bytes' memory
    (docs/topology-performance.md, "Sixth session"). A key is in `data` or in `encoded`, never both."""

    __slots__ = ("data", "dirty", "encoded", "partition", "spec")

    def __init__(self, spec: StoreSpec, partition: int) -> None:
        self.spec = spec
        self.partition = partition
        self.data: dict[str, Any] = {}
        self.encoded: dict[str, bytes] = {}
        self.dirty: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        if value is None:
            if not self.encoded or key not in self.encoded:
                return default
            value = self.data[key] = self._decode(key, self.encoded.pop(key))
        return value

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty.add(key)
        if self.encoded:
            self.encoded.pop(key, None)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)
        self.encoded.pop(key, None)
        self.dirty.add(key)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every key and value (the restored ones decoded now)."""
        if self.encoded:
            self.data.update((key, self._decode(key, data)) for key, data in self.encoded.items())
            self.encoded.clear()
        return iter(self.data.items())

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
        return len(self.data) + len(self.encoded)

    def restored(self, key: str, data: bytes | None) -> None:
        """A changelog record read by a restore: the key's latest value, or its deletion (None)."""
        self.data.pop(key, None)
        if data is None:
            self.encoded.pop(key, None)
        else:
            self.encoded[key] = data

    def changes(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Changelog records (key, encoded value or None for a deletion) of the dirty keys; clears them."""
        encode, data = self.spec.codec.encode, self.data
        for key in self.dirty:
            value = data.get(key)
            yield key.encode(), None if value is None else encode(value)
        self.dirty.clear()


Produce = Callable[[str, int, bytes, bytes | None], None]
"""produce(topic, partition, key, value): how a flush hands changelog records to the transaction."""


class StateStores:
    """Every store partition this worker holds."""

    def __init__(self, specs: Iterable[StoreSpec]) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self._stores: dict[tuple[str, int], Store] = {}

    def get(self, name: str, partition: int) -> Store:
        store = self._stores.get((name, partition))
        if store is None:
            raise KeyError(f"store {name} partition {partition} is not held by this worker (not assigned/restored)")
        return store

    def held(self) -> list[tuple[str, int]]:
        return list(self._stores)

    def flush(self, produce: Produce) -> int:
        """Hand every dirty key's changelog record to `produce`; the number of records."""
        written = 0
        for store in self._stores.values():
            if store.dirty:
                for key, value in store.changes():
                    produce(store.spec.changelog, store.partition, key, value)
                    written += 1
        return written

    def forget(self, keys: Iterable[tuple[str, int]] | None = None) -> None:
        """Drop the named store partitions (all when None): they are restored again when needed."""
        for key in list(self._stores) if keys is None else list(keys):
            self._stores.pop(key, None)

    def restore(self, reader: Consumer, keys: Iterable[tuple[str, int]], timeout: float = 600.0) -> int:
        """Rebuild the named store partitions from their changelogs; the number of records read."""
        wanted = [key for key in keys if key[0] in self.specs]
        if not wanted:
            return 0
        started = time.monotonic()
        fresh = {key: Store(self.specs[key[0]], key[1]) for key in wanted}
        by_partition = {(self.specs[name].changelog, partition): fresh[(name, partition)] for name, partition in wanted}
        records = _read_to_end(reader, by_partition, timeout)
        self._stores.update(fresh)
        log.info(
            "state restored",
            partitions=sorted(f"{name}/{partition}" for name, partition in wanted),
            records=records,
            keys=sum(len(s) for s in fresh.values()),
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
                _apply(store, message.key(), message.value())
                records += 1
    finally:
        reader.unassign()
    return records


def _apply(store: Store, key: bytes | None, value: bytes | None) -> None:
    if key is not None:
        store.restored(key.decode(), value)
