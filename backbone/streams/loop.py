"""The processor loop: consume a batch, run each record's handler, commit everything in one transaction.

    init_transactions()                       fences the slot's previous holder at once
    loop:  consume(n, timeout) → for each record: its stage's handler(record, context)
           (outputs, dead letters and state changes go into the open transaction)
           every commit_interval_ms or commit_records (sooner, after commit_idle_ms, when no input waits):
           changelog records of changed keys,
           send_offsets_to_transaction(processed positions, group metadata), commit_transaction()
    errors: retriable → the call again | abortable → abort, forget state, seek to the committed
            offsets, restore | fatal → one critical log line, FatalStreamError (exit 75)
    revoke → commit the open transaction, forget the partitions' state | lost → abort
    assign → restore the partitions' state from their changelogs before any of their records

This is the consume-transform-produce pattern of KIP-447 (librdkafka's `examples/transactions.c`):
outputs, state and consumed offsets are visible to read_committed readers together or not at all,
and a zombie of the same slot or an older group generation is fenced by the broker.
A `Stage` is a handler with the co-partitioned input topics it reads and the stores it keeps: its
state for partition p is restored once every input's partition p is assigned (see `clients.py` on
why the group uses the range assignor). docs/stream-runtime.md describes the guarantees and settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, KafkaException, Message, TopicPartition

from backbone.errors import ConfigurationError, ServiceUnavailableError
from backbone.settings import KafkaSettings, StreamsSettings
from backbone.streams import clients, metrics
from backbone.streams.broadcast import BroadcastTable
from backbone.streams.errors import FatalStreamError, Remedy, SlotTakenError, remedy_for
from backbone.streams.native import limit_malloc_arenas
from backbone.streams.state import StateStores, Store, StoreSpec

log = structlog.get_logger(__name__)
KAFKA_CALL_TIMEOUT = 30.0
MAX_BACKOFF = 5.0
LAG_REPORT_INTERVAL = 5.0
IDLE_WAIT = 0.2
"""How long an idle worker waits for a record before it looks at its broadcast tables and lag again."""
GC_THRESHOLDS = (50_000, 20, 20)
"""The cyclic garbage collector's thresholds in a worker process (CPython's defaults: 700, 10, 10).

A handler allocates some hundred container objects per record and reference counting frees nearly all
of them; with the default 700 the youngest generation was collected every few records and the older
ones often, 10-20 % of the billing core's time (docs/core-performance.md, ninth session). What a worker
loads to keep (master data, restored state) is moved out of the collector's sight (`gc.freeze`) once
loaded, so a full collection does not walk millions of objects that live as long as the process."""


@dataclass(frozen=True)
class Stage:
    """A handler, the co-partitioned topics it reads and the stores it keeps per partition."""

    name: str
    inputs: tuple[str, ...]
    handle: Callable[[Message, Context], None]
    stores: tuple[StoreSpec, ...] = field(default=())


@dataclass(frozen=True)
class WorkerSlot:
    """A worker's stable identity: its transactional id and its static group membership."""

    app_id: str
    instance: str
    slot: int

    @property
    def transactional_id(self) -> str:
        return f"{self.app_id}-{self.instance}-{self.slot}"


class Context:
    """What a handler may do inside the open transaction: produce, use its state, dead-letter a record."""

    __slots__ = ("_worker",)

    def __init__(self, worker: StreamWorker) -> None:
        self._worker = worker

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        self._worker.produce(topic, value, key=key, headers=headers, partition=partition)

    def store(self, name: str, partition: int) -> Store:
        return self._worker.stores.get(name, partition)

    def holds(self, name: str, partition: int) -> bool:
        """Whether this worker holds store `name`'s `partition` now (for the rest of the transaction)."""
        return self._worker.stores.holds(name, partition)

    def dead_letter(self, message: Message, error: BaseException, processor: str, error_class: str = "") -> None:
        """Send `message` as it is to its topic's dead-letter topic, with `backbone.error.*` headers."""
        self._worker.dead_letter(message, error, processor, error_class)


def keep_for_good() -> None:
    """Move every object alive now out of the cyclic collector's sight (see `GC_THRESHOLDS`): garbage
    cycles are collected first, as frozen ones would never be; frozen objects are still freed by
    reference counting when nothing refers to them any more."""
    gc.collect()
    gc.freeze()


def commit_due(streams: StreamsSettings, elapsed_ms: float, uncommitted: int, waiting: bool) -> bool:
    """Whether to commit the open transaction, `elapsed_ms` old with `uncommitted` input records, now.

    `waiting`: the last batch was full, so more input is likely fetched already. A transaction's age is
    most of an output's latency at light load, and its commit most of a worker's overhead per record at
    full load: a worker that has taken every record fetched commits once the transaction is
    `commit_idle_ms` old, one that finds full batches waiting keeps it open up to `commit_interval_ms`
    (at saturation batches are full, and commits as rare as without the early commit)."""
    if elapsed_ms >= streams.commit_interval_ms or uncommitted >= streams.commit_records:
        return True
    return not waiting and 0 < streams.commit_idle_ms <= elapsed_ms


def open_wait_ms(streams: StreamsSettings) -> int:
    """How long after its start an open transaction waits for more input before it is looked at again:
    until an early commit would be due (`commit_due`), never past the commit interval."""
    if streams.commit_idle_ms:
        return min(streams.commit_idle_ms, streams.commit_interval_ms)
    return streams.commit_interval_ms


def where(message: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record: never None for one, though the stubs allow it."""
    return message.topic(), message.partition(), message.offset()  # type: ignore[return-value]


def _header(message: Message, name: str) -> str | None:
    headers: list[tuple[str, bytes]] = message.headers() or []  # type: ignore[assignment]
    for key, value in headers:
        if key == name:
            return value.decode(errors="replace")
    return None


def dead_letter_headers(
    message: Message, error: BaseException, processor: str, error_class: str = ""
) -> list[tuple[str, bytes]]:
    """The original headers plus where the record came from and why it could not be processed."""
    return [
        *(message.headers() or []),
        ("backbone.error.topic", (message.topic() or "").encode()),
        ("backbone.error.partition", str(message.partition()).encode()),
        ("backbone.error.offset", str(message.offset()).encode()),
        ("backbone.error.class", (error_class or type(error).__name__).encode()),
        ("backbone.error.message", str(error)[:2000].encode()),
        ("backbone.error.processor", processor.encode()),
        ("backbone.error.at", datetime.now(UTC).isoformat().replace("+00:00", "Z").encode()),
    ]


class StreamWorker:
    """One worker process's consumer, transactional producer, stores and loop."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        streams: StreamsSettings,
        slot: WorkerSlot,
        stages: Iterable[Stage],
        broadcast: BroadcastTable | None = None,
        on_assigned: Callable[[list[tuple[str, int]]], None] | None = None,
        dead_letter_topic: Callable[[str], str] = lambda topic: f"{topic}.dlq",
        state_dir: Path | None = None,
    ) -> None:
        """`state_dir`: where this worker keeps its on-disk stores (`StoreSpec.on_disk`); None keeps every
        store in memory. The directory is the worker slot's: emptied at start, removed at exit."""
        limit_malloc_arenas()  # before this worker's Kafka clients start their threads (docs in native.py)
        gc.set_threshold(*GC_THRESHOLDS)
        self.streams = streams
        self.slot = slot
        self.app = slot.app_id
        self.stages = tuple(stages)
        self._stage_of = {topic: stage for stage in self.stages for topic in stage.inputs}
        self.stores = StateStores(
            (spec for stage in self.stages for spec in stage.stores), state_dir, streams.state_cache_keys
        )
        self.broadcast = broadcast
        self.on_assigned = on_assigned
        self.dead_letter_topic = dead_letter_topic
        self.consumer = clients.group_consumer(kafka, streams, slot.app_id, instance_id=slot.transactional_id)
        self.producer = clients.transactional_producer(kafka, streams, slot.transactional_id)
        self.restore_reader = clients.reader(kafka, f"{slot.app_id}-restore")
        self.context = Context(self)
        self._stop = threading.Event()
        self._in_transaction = False
        self._began = 0.0
        self._uncommitted = 0
        self._positions: dict[tuple[str, int], int] = {}
        self._records_in: Counter[str] = Counter()
        self._records_out: Counter[str] = Counter()
        self._callback_error: BaseException | None = None
        self._rewind_needed = False
        self._backoff = 0.0
        self._lag_reported = 0.0

    # --- what handlers call ---------------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        # positionally, -1 being librdkafka's "any partition": a dict of options per record was ~0.15 µs a call
        where_to = -1 if partition is None else partition
        while True:
            try:
                self.producer.produce(topic, value, key, where_to, headers=headers)  # type: ignore[arg-type]  # a list of pairs
                break
            except BufferError:  # the local queue is full: let librdkafka send some, then go on
                self.producer.poll(0.05)
        self._records_out[topic] += 1

    def dead_letter(self, message: Message, error: BaseException, processor: str, error_class: str = "") -> None:
        headers = dead_letter_headers(message, error, f"{self.app}.{processor}", error_class)
        log.error(
            "record dead-lettered",
            correlation_id=_header(message, "correlation_id"),
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            processor=processor,
            error=str(error)[:500],
        )
        metrics.DEAD_LETTERS.labels(self.app, message.topic()).inc()
        self.produce(self.dead_letter_topic(message.topic() or ""), message.value(), key=message.key(), headers=headers)

    # --- running --------------------------------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> None:
        """Process until `stop()` (or SIGTERM/SIGINT); commit what is open and leave cleanly."""
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        try:
            self._start()
        except BaseException:
            self._close()
            raise
        try:
            while not self._stop.is_set():
                self.step()
        except FatalStreamError:
            self._close()  # nothing to commit: the broker has fenced or failed this producer
            raise
        self._shut_down()

    def stop(self) -> None:
        self._stop.set()

    def _start(self) -> None:
        started = time.monotonic()
        self._check_co_partitioning()
        self._call(lambda: self.producer.init_transactions(KAFKA_CALL_TIMEOUT), "init_transactions")
        if self.broadcast is not None:
            self.broadcast.load()
            keep_for_good()  # the master data lives as long as the worker
        self.consumer.subscribe(
            list(self._stage_of), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "worker started",
            transactional_id=self.slot.transactional_id,
            stages=[s.name for s in self.stages],
            seconds=round(time.monotonic() - started, 3),
        )

    def _check_co_partitioning(self) -> None:
        """A stage's inputs and changelogs must have one partition count, or its state would be split."""
        for stage in self.stages:
            topics = [*stage.inputs, *(spec.changelog for spec in stage.stores)]
            counts = self._partition_counts(topics)
            if 0 in counts.values() or len(set(counts.values())) > 1:
                raise ConfigurationError(
                    f"stage {stage.name}: its topics must exist with one partition count, found {counts}",
                    hint="create them with `backbone topics apply`, or give them equal partitions",
                )

    def _partition_counts(self, topics: list[str]) -> dict[str, int]:
        """Each topic's partition count (0: missing), asked again for a while when one is missing: a topic
        created a moment ago (the topology creates its internal ones at start) reaches this client's
        metadata a little later than the admin client that created it."""
        deadline = time.monotonic() + KAFKA_CALL_TIMEOUT
        while True:
            metadata = self.consumer.list_topics(timeout=KAFKA_CALL_TIMEOUT).topics
            counts = {
                t: len(metadata[t].partitions) if t in metadata and metadata[t].error is None else 0 for t in topics
            }
            if 0 not in counts.values() or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)

    def step(self) -> None:
        """One batch: consume, process, and commit when the transaction is due."""
        try:
            if self._rewind_needed:
                self._rewind()
            if self.broadcast is not None:
                self.broadcast.follow()
            messages = self._next_batch()
            self._raise_callback_error()
            self._process(messages)
            if self._in_transaction and self._commit_due(waiting=len(messages) == self.streams.batch_size):
                self.commit()
            self._backoff = 0.0
        except (KafkaException, ServiceUnavailableError) as error:
            self._recover(error)
        self._report_lag()

    def _next_batch(self) -> list[Message]:
        """What has arrived, up to a batch, as soon as one record is there (`clients.take`).

        Waiting out a fixed timeout put up to 200 ms on every hop of a lightly loaded topology; the wait
        for the first record is never longer than the open transaction may stay open while nothing arrives.
        """
        timeout = IDLE_WAIT
        if self._in_transaction:
            due = self._began + open_wait_ms(self.streams) / 1000
            timeout = min(IDLE_WAIT, max(0.0, due - time.monotonic()))
        return clients.take(self.consumer, self.streams.batch_size, timeout)

    def _process(self, messages: list[Message]) -> None:
        for message in messages:
            consume_error = message.error()
            if consume_error is not None:
                clients.check_consumed(consume_error, app=self.app)
                continue
            if not self._in_transaction:
                self._begin()
            topic, partition, offset = where(message)
            stage = self._stage_of[topic]
            try:
                stage.handle(message, self.context)
            except (KafkaException, ServiceUnavailableError, FatalStreamError):
                raise
            except Exception as error:  # the record's own fault: dead-letter it, the partition moves on
                self.dead_letter(message, error, stage.name)
            self._positions[(topic, partition)] = offset + 1
            self._records_in[topic] += 1
            self._uncommitted += 1

    def _commit_due(self, waiting: bool) -> bool:
        elapsed_ms = (time.monotonic() - self._began) * 1000
        return commit_due(self.streams, elapsed_ms, self._uncommitted, waiting)

    def _begin(self) -> None:
        self.producer.begin_transaction()
        self._in_transaction = True
        self._began = time.monotonic()

    def commit(self) -> None:
        """Changelogs, consumed offsets and everything produced since `_begin`, atomically."""
        if not self._in_transaction:
            return
        started = time.monotonic()
        self.stores.flush(self._produce_changelog)
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        if offsets:
            metadata = self.consumer.consumer_group_metadata()
            self._call(
                lambda: self.producer.send_offsets_to_transaction(offsets, metadata, KAFKA_CALL_TIMEOUT),
                "send_offsets_to_transaction",
            )
        self._call(lambda: self.producer.commit_transaction(KAFKA_CALL_TIMEOUT), "commit_transaction")
        self._in_transaction = False
        self._positions.clear()
        self._uncommitted = 0
        metrics.COMMIT_SECONDS.labels(self.app).observe(time.monotonic() - started)
        metrics.COMMITS.labels(self.app).inc()
        self._count()

    def _produce_changelog(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        self.produce(topic, value, key=key, partition=partition)

    def _call(self, call: Callable[[], Any], what: str) -> Any:
        """A transactional API call, repeated while librdkafka says the error is retriable."""
        deadline = time.monotonic() + KAFKA_CALL_TIMEOUT * 4
        while True:
            try:
                return call()
            except KafkaException as error:
                if remedy_for(error) is not Remedy.RETRY or time.monotonic() > deadline:
                    raise
                log.warning("retrying a transactional call", call=what, error=str(error.args[0]))

    # --- failures ---------------------------------------------------------------------------------------

    def _recover(self, error: BaseException) -> None:
        if remedy_for(error) is Remedy.FATAL:
            log.critical(
                "fatal Kafka error; this worker stops without committing",
                error=str(error),
                transactional_id=self.slot.transactional_id,
                hint="another worker with this slot may have fenced it; otherwise check the broker and restart",
            )
            raise FatalStreamError(f"worker {self.slot.transactional_id} stopped: {error}") from error
        reason = type(error).__name__
        log.warning("transaction aborted; rewinding to the committed offsets", error=str(error), reason=reason)
        metrics.ABORTS.labels(self.app, reason).inc()
        self._abort()
        self._backoff = min(MAX_BACKOFF, max(0.05, self._backoff * 2))
        self._stop.wait(self._backoff)

    def _abort(self) -> None:
        """Abort the open transaction; all state is forgotten and the assignment rewound before going on."""
        if self._in_transaction:
            try:
                self.producer.abort_transaction(KAFKA_CALL_TIMEOUT)
            except KafkaException as error:
                if remedy_for(error) is Remedy.FATAL:
                    raise FatalStreamError(f"abort failed: {error}") from error
                raise
        self._in_transaction = False
        self._positions.clear()
        self._uncommitted = 0
        self._records_in.clear()
        self._records_out.clear()
        self.stores.forget()
        self._rewind_needed = True

    def _rewind(self) -> None:
        """Seek every assigned partition to its committed offset and restore its state."""
        assignment = self.consumer.assignment()
        if assignment:
            committed = self.consumer.committed(assignment, timeout=KAFKA_CALL_TIMEOUT)
            for tp in committed:
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            self._restore(self._tasks(assignment))
        self._rewind_needed = False

    def _raise_callback_error(self) -> None:
        error, self._callback_error = self._callback_error, None
        if error is not None:
            raise error

    # --- rebalances ---------------------------------------------------------------------------------------

    def _tasks(self, partitions: Iterable[TopicPartition]) -> list[tuple[str, int]]:
        """(stage name, partition) of each stage partition among `partitions`."""
        return sorted(
            {(self._stage_of[tp.topic].name, tp.partition) for tp in partitions if tp.topic in self._stage_of}
        )

    def _restore(self, tasks: list[tuple[str, int]]) -> None:
        started = time.monotonic()
        stages = {stage.name: stage for stage in self.stages}
        held = set(self.stores.held())
        wanted = [(spec.name, p) for name, p in tasks for spec in stages[name].stores if (spec.name, p) not in held]
        records = self.stores.restore(self.restore_reader, wanted)
        keep_for_good()  # restored state is long-lived; a forgotten partition's objects are still freed
        metrics.RESTORED_RECORDS.labels(self.app).inc(records)
        metrics.RESTORE_SECONDS.labels(self.app).observe(time.monotonic() - started)

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            metrics.REBALANCES.labels(self.app, "assign").inc()
            tasks = self._tasks(partitions)
            log.info("partitions assigned", partitions=len(partitions), tasks=[f"{s}/{p}" for s, p in tasks])
            self._restore(tasks)
            if self.on_assigned is not None:
                self.on_assigned(tasks)
        except BaseException as error:  # raised from consume() after the callback returns
            self._callback_error = error

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels(self.app, "revoke").inc()
        try:
            self.commit()
        except BaseException as error:
            log.warning("commit on revocation failed; aborting", error=str(error))
            try:
                self._abort()
            except BaseException as abort_error:
                self._callback_error = abort_error
        self._forget(partitions)

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels(self.app, "lost").inc()
        log.warning("partitions lost; aborting the open transaction", partitions=len(partitions))
        try:
            self._abort()
        except BaseException as error:
            self._callback_error = error
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        stages = {stage.name: stage for stage in self.stages}
        self.stores.forget((spec.name, p) for name, p in self._tasks(partitions) for spec in stages[name].stores)

    # --- reporting and shutdown ---------------------------------------------------------------------------

    def _count(self) -> None:
        for topic, n in self._records_in.items():
            metrics.RECORDS_IN.labels(self.app, topic).inc(n)
        for topic, n in self._records_out.items():
            metrics.RECORDS_OUT.labels(self.app, topic).inc(n)
        self._records_in.clear()
        self._records_out.clear()

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_reported < LAG_REPORT_INTERVAL:
            return
        self._lag_reported = now
        for topic, partition, behind in clients.lag(self.consumer):
            metrics.LAG.labels(self.app, topic, str(partition)).set(behind)

    def _shut_down(self) -> None:
        try:
            self.commit()
        except KafkaException as error:
            log.warning("last commit failed; the open transaction is aborted", error=str(error))
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(KAFKA_CALL_TIMEOUT)
        finally:
            self._close()
        log.info("worker stopped", transactional_id=self.slot.transactional_id)

    def _close(self) -> None:
        readers = [self.consumer, self.restore_reader] + ([self.broadcast.reader] if self.broadcast else [])
        for reader in readers:
            with contextlib.suppress(KafkaException, RuntimeError):
                reader.close()
        self.stores.close()


class SlotLock:
    """Holds a worker slot on this host for the life of the process (released by the OS on any exit)."""

    def __init__(self, directory: Path, app_id: str, instance: str, slot: int | None, slots: int = 64) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = None
        candidates = range(slots) if slot is None else [slot]
        for candidate in candidates:
            handle = open(directory / f"{app_id}-{instance}-{candidate}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.write(str(os.getpid()))
            handle.flush()
            self._file = handle
            self.slot = WorkerSlot(app_id, instance, candidate)
            return
        taken = f"slot {slot}" if slot is not None else f"all {slots} slots"
        raise SlotTakenError(
            f"{taken} of {app_id} on instance {instance!r} are held by running workers on this host",
            hint="stop the other worker, choose another --slot, or set BACKBONE_STREAMS_INSTANCE per host",
        )
