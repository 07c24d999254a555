"""The billing topology: faust-streaming agents around the pure billing core.

    psa.time-entries.v1, psa.approvals.v1 ──entries (table: EntryState per entry)──► <app>-book-commands
        (a record on another partition than its key's murmur2 partition goes through
         <app>-entry-inputs first, so an entry's state always lives in one partition)
    ref.projects/contracts/workers.v1 ──references──► <app>-book-commands (workers: every partition)
        ──books (table: one Ledger per entry)──► billing.invoice-candidates.v1,
                                                    erp.posting-requests.v1, ops.exceptions.v1
    erp.posting-acks.v1, billing.responses.v1 ──feedback (table: open rejections)──► ops.exceptions.v1

Every worker also reads all reference topics itself (`topology.reference`), so any worker can price
any project. Inputs are read as raw bytes and decoded here: a record that cannot be decoded or
processed goes to its topic's `.dlq` with the `backbone.error.*` headers and the partition moves on.
Processing is at-least-once: a record's outputs, then its changelog records, are acknowledged by the
broker before faust may commit its offset (`topology.outbox`); the domain's deterministic ids and
duplicate detection make re-processing harmless (reliability.md).
`run_topology(settings, workers=N)` is the entry point of `backbone run topology`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import structlog
from aiokafka.partitioner import murmur2
from confluent_kafka.admin import AdminClient
from pydantic import TypeAdapter

from backbone.domain import billing, entries, feedback
from backbone.domain.models import (
    ApprovalDecision,
    BusinessException,
    ContractVersion,
    Event,
    Project,
    TimeEntry,
    Worker,
)
from backbone.domain.routing import RoutingRules, parse_routing
from backbone.observability import serve_metrics
from backbone.serde import DecodeError, SerdeCache, registry_client
from backbone.settings import Settings
from topology import catalog, codecs, metrics
from topology.admin import apply_topics
from topology.catalog import Topic
from topology.guard import PartitionGuard
from topology.messages import BookCommand, Position
from topology.outbox import Outbox
from topology.reference import ReferenceStore, ReferenceTail
from topology.tables import DurableTable

log = structlog.get_logger(__name__)
DEFAULT_APP_ID = "backbone-topology"
DEFAULT_ROUTING = Path(__file__).with_name("routing.toml")
INTERNAL_PARTITIONS = catalog.TRANSACTIONAL_PARTITIONS
PRODUCER_LINGER_MS = 0
EXIT_UNDELIVERED = 75
"""Exit status when the broker refused a record's outputs (EX_TEMPFAIL: restart once the broker is back)."""
REFERENCE_CATCH_UP_S = 8.0
"""How long a rebalance may wait for master data (below the 10 s session timeout)."""


@dataclass(frozen=True)
class TopologyTopics:
    """The catalog topics the topology reads and writes (tests give them unique names)."""

    time_entries: Topic = catalog.TIME_ENTRIES
    approvals: Topic = catalog.APPROVALS
    clients: Topic = catalog.CLIENTS
    projects: Topic = catalog.PROJECTS
    workers: Topic = catalog.WORKERS
    contracts: Topic = catalog.CONTRACTS
    posting_acks: Topic = catalog.POSTING_ACKS
    billing_responses: Topic = catalog.BILLING_RESPONSES
    invoice_candidates: Topic = catalog.INVOICE_CANDIDATES
    posting_requests: Topic = catalog.POSTING_REQUESTS
    exceptions: Topic = catalog.EXCEPTIONS

    @classmethod
    def prefixed(cls, prefix: str) -> TopologyTopics:
        """Every topic (and its DLQ) renamed `<prefix><name>`."""
        return cls(**{f.name: _renamed(getattr(cls(), f.name), prefix) for f in fields(cls)})

    def all(self) -> tuple[Topic, ...]:
        own = tuple(getattr(self, f.name) for f in fields(self))
        return own + tuple(t.dlq for t in own if t.dlq)

    @property
    def reference(self) -> tuple[Topic, ...]:
        return (self.clients, self.projects, self.workers, self.contracts)


def _renamed(topic: Topic, prefix: str) -> Topic:
    dlq = replace(topic.dlq, name=f"{prefix}{topic.dlq.name}") if topic.dlq else None
    return replace(topic, name=f"{prefix}{topic.name}", dlq=dlq)


class RoutingFile:
    """The routing rules file, re-read when it changes (checked at most once a second)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = path.stat().st_mtime
        self._checked = time.monotonic()
        self.rules: RoutingRules = parse_routing(path.read_text(), source=str(path))

    def current(self) -> RoutingRules:
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                try:
                    self.rules = parse_routing(self.path.read_text(), source=str(self.path))
                    self._mtime = mtime
                    log.info("routing rules reloaded", path=str(self.path))
                except Exception as error:  # keep routing by the last good rules, say why
                    log.error("routing rules not reloaded", path=str(self.path), error=str(error))
        return self.rules


class RawRecord:
    """A faust event seen through the confluent `Message` methods the serde and the DLQ read."""

    def __init__(self, event: Any) -> None:
        self._message = event.message

    def topic(self) -> str:
        return self._message.topic  # type: ignore[no-any-return]

    def partition(self) -> int:
        return self._message.partition  # type: ignore[no-any-return]

    def offset(self) -> int:
        return self._message.offset  # type: ignore[no-any-return]

    def key(self) -> bytes | None:
        return self._message.key  # type: ignore[no-any-return]

    def value(self) -> bytes | None:
        return self._message.value  # type: ignore[no-any-return]

    def headers(self) -> list[tuple[str, bytes]]:
        headers = self._message.headers or []
        return list(headers.items()) if isinstance(headers, dict) else list(headers)


OPENED = TypeAdapter(datetime)


def _restored(value: Any, model: Any) -> Any:
    """A table value as the domain's model: values recovered from a changelog arrive as plain JSON."""
    if value is None or not isinstance(value, dict | list | str):
        return value
    if isinstance(model, TypeAdapter):
        return model.validate_python(value)
    return model.model_validate(value)


LEDGER_KEY_SEPARATOR = "\x1f"


def ledger_key(project_id: str, time_entry_id: str) -> str:
    """The ledger table's key: the project first, so its changelog partition is the book's."""
    return f"{project_id}{LEDGER_KEY_SEPARATOR}{time_entry_id}"


@functools.lru_cache(maxsize=65_536)
def partition_of(key: str, partitions: int = INTERNAL_PARTITIONS) -> int:
    """The partition of a project's book: murmur2 like Kafka's Java clients, so it is the same everywhere."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


FORWARDED_FROM = "backbone.forwarded-from"
"""Header of a record moved to <app>-entry-inputs: the topic it was read from (its schema's topic)."""


def _forwarded_from(event: Any) -> str:
    return dict(RawRecord(event).headers())[FORWARDED_FROM].decode()


def event_headers(event: Event) -> list[tuple[str, bytes]]:
    return [
        ("event_type", event.event_type.encode()),
        ("correlation_id", (event.correlation_id or "").encode()),
        ("source_system", event.source_system.encode()),
    ]


def faust_settings(settings: Settings, transport: str = "kafka") -> dict[str, Any]:
    """How every faust app of backbone talks to Kafka (the benchmark's faust pass-through uses it too)."""
    return {
        "broker": f"{transport}://{settings.kafka.servers}",
        "store": "memory://",
        "web_enabled": False,
        "topic_partitions": INTERNAL_PARTITIONS,
        "topic_replication_factor": settings.kafka.replication_factor,
        "table_standby_replicas": 0,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # aiokafka sends a produce request per record without it
        "producer_linger_ms": PRODUCER_LINGER_MS,
        "broker_commit_interval": 1.0,
        # a killed worker's partitions move on after this, not faust's default minute
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 2.0,
        "stream_wait_empty": True,
    }


class BillingTopology:
    """One faust app with its agents, tables, reference store and routing rules."""

    def __init__(
        self,
        settings: Settings,
        *,
        app_id: str = DEFAULT_APP_ID,
        topics: TopologyTopics | None = None,
        routing_path: Path = DEFAULT_ROUTING,
        transport: str = "kafka",
    ) -> None:
        self.settings = settings
        self.topics = topics or TopologyTopics()
        self.serdes = SerdeCache(registry_client(settings.registry.client_config()))
        self.store = ReferenceStore()
        self.routing = RoutingFile(routing_path)
        self.tail = ReferenceTail(settings.kafka, SerdeCache(self.serdes.registry), self.topics.reference)
        self.awaiting: dict[str, datetime] = {}
        self.internal = catalog.internal_topics(app_id, INTERNAL_PARTITIONS)
        self._books_stale = True
        self._reference_ready = asyncio.Event()
        """Set while this worker's master data is at least as new as what its books were priced with."""
        codecs.register_codecs(self.serdes)
        self.app = faust.App(app_id, **faust_settings(settings, transport))
        self.guard = PartitionGuard(self.app, settings.kafka)
        self._declare()

    # --- wiring -----------------------------------------------------------------------------------

    def _declare(self) -> None:
        app, t = self.app, self.topics
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        internal = {"partitions": INTERNAL_PARTITIONS, "internal": True, **raw}
        self.entry_inputs = app.topic(self.internal.entry_inputs.name, **internal)
        self.book_commands = app.topic(self.internal.book_commands.name, **internal)
        self.outputs = {
            topic.event: app.topic(topic.name, key_serializer="raw", value_serializer=codecs.AVRO)
            for topic in (t.invoice_candidates, t.posting_requests, t.exceptions)
        }
        consumed = self.topics.all() + self.internal.all()
        self.dlqs = {topic.name: app.topic(topic.dlq.name, **raw) for topic in consumed if topic.dlq}
        self.entry_table = self._table("entries", codecs.ENTRY_STATE)
        # A book is stored as one changelog record per entry, not one per project: a project's book grows
        # with its entries, and rewriting all of it on every change made the changelog O(entries²).
        self.ledger_table = self._table("ledgers", codecs.LEDGER)
        self.books: dict[str, billing.ProjectBook] = {}
        """Books of this worker's partitions, rebuilt from `ledger_table` after each rebalance."""
        self.rejections = self._table("rejections", codecs.OPENED_AT)
        self.catalog_topic = {topic.name: topic for topic in consumed}
        self._stage("intake", app.topic(t.time_entries.name, t.approvals.name, **raw), self._forward_entry_input)
        self._stage("entries", self.entry_inputs, self._entry_record)
        self._stage("references", app.topic(*(r.name for r in t.reference), **raw), self._reference_record)
        self._stage("books", self.book_commands, self._book_command)
        self._stage("feedback", app.topic(t.posting_acks.name, t.billing_responses.name, **raw), self._answer)
        app.timer(0.2)(self._drain_reference_tail)
        app.on_partitions_revoked.connect(self._hold_books)
        app.on_partitions_assigned.connect(self._catch_up_reference)
        app.timer(5.0)(self._report_awaiting)

    def _stage(self, stage: str, channel: Any, handle: Any) -> None:
        """An agent that runs `handle(event, outbox)` for every record of `channel`, in order per partition.

        One event at a time, not `stream.take_events` batches: faust acks a batch's events by hand, and
        with manual acks a rebalance can commit offsets of events that were never processed
        (faust-streaming#527). Records faust drops are read past it (`topology.guard`).
        """

        async def process(event: Any) -> None:
            outbox = Outbox()
            await handle(event, outbox)
            await self._deliver(outbox, stage)

        async def agent(stream: Any) -> None:
            await self.guard.each(stream, process, stage)

        self.guard.watch(stage, list(channel.topics))
        self.app.agent(channel, name=stage)(agent)

    def _table(self, name: str, codec: str) -> DurableTable:
        beacon = self.app.tables.beacon
        table = self.app.tables.add(
            DurableTable(self.app, name=name, default=None, partitions=INTERNAL_PARTITIONS, beacon=beacon)
        )
        # faust derives serializers from model types; ours are pydantic models behind named codecs
        table.key_serializer, table.value_serializer = "json", codec
        return table

    # --- agents -------------------------------------------------------------------------------------

    async def _forward_entry_input(self, event: Any, outbox: Outbox) -> None:
        """Move a decodable entry or approval, as it is, to the entry-inputs partition of its key.

        The entry stage keeps an entry's state in one partition whatever partitioner the entry's and the
        approval's producers used; a record that cannot be decoded is dead-lettered here.
        """
        decoded = await self._decode(event, "intake", outbox)
        if decoded is None:
            return
        record = RawRecord(event)
        headers = [*record.headers(), (FORWARDED_FROM, record.topic().encode())]
        home = partition_of(decoded.key)
        await outbox.send(self.entry_inputs, key=record.key(), value=record.value(), headers=headers, partition=home)

    async def _entry_record(self, event: Any, outbox: Outbox) -> None:
        decoded = await self._decode(event, "entries", outbox, source=_forwarded_from(event))
        if decoded is None:
            return
        metrics.EVENTS_IN.labels(decoded.event_type).inc()
        try:
            await self._record_entry(decoded, event, outbox)  # type: ignore[arg-type]
        except Exception as error:
            await self._dead_letter(event, error, "entries", outbox)

    async def _record_entry(self, incoming: TimeEntry | ApprovalDecision, event: Any, outbox: Outbox) -> None:
        key = incoming.key
        state = _restored(outbox.get(self.entry_table, key), entries.EntryState) or entries.new_entry(key)
        recorded = entries.record(state, incoming)
        if recorded.outcome == entries.Outcome.DUPLICATE:
            metrics.DUPLICATES.inc()
            return
        metrics.IGNORED.inc(recorded.outcome == entries.Outcome.IGNORED_AFTER_DELETION)
        for change in recorded.changes:
            await self._send_book(BookCommand(change=change), change.project_id, outbox)
        outbox.put(self.entry_table, key, recorded.state)
        waiting = entries.awaiting_approval(recorded.state)
        if waiting is None:
            self.awaiting.pop(key, None)
        else:
            self.awaiting[key] = waiting.occurred_at
        metrics.LATENCY.labels("entries").observe(max(0.0, time.time() - event.message.timestamp))

    async def _reference_record(self, event: Any, outbox: Outbox) -> None:
        if event.message.value is None:
            return  # a tombstone on a compacted topic
        decoded = await self._decode(event, "references", outbox)
        if decoded is None:
            return
        try:
            await self._announce_reference(decoded, event, outbox)
        except Exception as error:
            await self._dead_letter(event, error, "references", outbox)

    async def _announce_reference(self, decoded: Event, event: Any, outbox: Outbox) -> None:
        metrics.EVENTS_IN.labels(decoded.event_type).inc()
        position = Position(topic=event.message.topic, partition=event.message.partition, offset=event.message.offset)
        if isinstance(decoded, Project):
            await self._send_book(BookCommand(project=decoded, position=position), decoded.project_id, outbox)
        elif isinstance(decoded, ContractVersion):
            old = self.store.data.contracts.get(decoded.contract_key)
            moved = old.project_id if old is not None and old.project_id != decoded.project_id else None
            command = BookCommand(contract=decoded, position=position, moved_from=moved)
            for project_id in filter(None, (decoded.project_id, moved)):
                await self._send_book(command, project_id, outbox)
        elif isinstance(decoded, Worker):
            # the books of a worker's entries can be anywhere: every partition re-prices its own
            command = BookCommand(worker=decoded, position=position).model_dump_json().encode()
            for partition in range(INTERNAL_PARTITIONS):
                key = decoded.worker_id.encode()
                await outbox.send(self.book_commands, key=key, value=command, partition=partition)
        self.store.apply(decoded, position)  # type: ignore[arg-type]

    async def _book_command(self, event: Any, outbox: Outbox) -> None:
        await self._reference_ready.wait()
        try:
            await self._run_book_command(event, self._owned_books(), outbox)
        except Exception as error:
            await self._dead_letter(event, error, "books", outbox)

    async def _run_book_command(self, event: Any, books: dict[str, billing.ProjectBook], outbox: Outbox) -> None:
        command = BookCommand.model_validate_json(event.value)
        reference = command.project or command.contract or command.worker
        if reference is not None and command.position is not None:
            self.store.apply(reference, command.position)
        at = command.change.occurred_at if command.change else reference.occurred_at  # type: ignore[union-attr]
        context = billing.Context(reference=self.store.data, routing=self.routing.current(), at=at)
        settle = functools.partial(self._settle, books=books, outbox=outbox)
        if command.change is not None:
            await settle(command.change.project_id, lambda b: billing.book_entry(b, command.change, context))
        elif command.worker is not None:
            worker_id, partition = command.worker.worker_id, event.message.partition
            for project_id in sorted(p for p in books if partition_of(p) == partition):
                if worker_id in books[project_id].workers():
                    await settle(project_id, lambda b: billing.reprice_worker(b, worker_id, context))
        else:
            project_id = event.key.decode()
            if project_id in books:
                await settle(project_id, lambda b: billing.reprice(b, context))
        metrics.LATENCY.labels("books").observe(max(0.0, time.time() - event.message.timestamp))

    async def _settle(
        self, project_id: str, step: Any, *, books: dict[str, billing.ProjectBook], outbox: Outbox
    ) -> None:
        book = books.get(project_id) or billing.new_book(project_id)
        settled = step(book)
        await self._emit(settled.events, outbox)
        for ledger in billing.changed_ledgers(book, settled.book):
            outbox.put(self.ledger_table, ledger_key(project_id, ledger.time_entry_id), ledger)
        books[project_id] = settled.book

    def _owned_books(self) -> dict[str, billing.ProjectBook]:
        """The books of this worker's partitions; rebuilt from the ledger table after a rebalance."""
        if self._books_stale:
            grouped: dict[str, list[billing.Ledger]] = {}
            for key, value in self.ledger_table.items():
                grouped.setdefault(key.split(LEDGER_KEY_SEPARATOR, 1)[0], []).append(_restored(value, billing.Ledger))
            self.books = {project: billing.book_of(project, ledgers) for project, ledgers in grouped.items()}
            self._books_stale = False
        return self.books

    async def _answer(self, event: Any, outbox: Outbox) -> None:
        decoded = await self._decode(event, "feedback", outbox)
        if decoded is None:
            return
        metrics.EVENTS_IN.labels(decoded.event_type).inc()
        key = decoded.key
        decide = feedback.posting_feedback if decoded.event_type == "posting-ack" else feedback.billing_feedback
        was_open = _restored(outbox.get(self.rejections, key), OPENED)
        opened, out = decide(was_open, decoded)  # type: ignore[arg-type]
        await self._emit(out, outbox)
        if opened != was_open:
            outbox.put(self.rejections, key, opened)

    # --- helpers ------------------------------------------------------------------------------------

    async def _deliver(self, outbox: Outbox, stage: str) -> None:
        """Make a record's outputs, then its state, durable; a broker that refuses them stops the worker."""
        try:
            await outbox.deliver()
        except Exception as error:
            log.critical(
                "outputs not delivered; exiting so that the record is processed again after a restart",
                stage=stage,
                error=str(error),
                hint="check the broker (`backbone status`), then restart the topology",
            )
            os._exit(EXIT_UNDELIVERED)

    async def _send_book(self, command: BookCommand, project_id: str, outbox: Outbox) -> None:
        message = {"key": project_id.encode(), "value": command.model_dump_json().encode()}
        await outbox.send(self.book_commands, **message, partition=partition_of(project_id))

    async def _emit(self, events: Iterable[Event], outbox: Outbox) -> None:
        for output in events:
            topic = self.outputs[type(output)]
            await outbox.send(topic, key=output.key.encode(), value=output, headers=event_headers(output))
            metrics.EVENTS_OUT.labels(output.event_type).inc()
            if isinstance(output, BusinessException):
                metrics.EXCEPTIONS.labels(output.kind, output.status).inc()

    async def _decode(self, event: Any, processor: str, outbox: Outbox, source: str | None = None) -> Event | None:
        """The event a record carries (`source`: the topic whose schema it has, when not its own)."""
        record = RawRecord(event)
        topic = self.catalog_topic[source or record.topic()]
        try:
            return self.serdes.for_topic(topic).decode(record)  # type: ignore[arg-type]
        except DecodeError as error:
            await self._dead_letter(event, error, processor, outbox, error_class=error.error_class)
            return None

    async def _dead_letter(
        self, event: Any, error: BaseException, processor: str, outbox: Outbox, error_class: str = ""
    ) -> None:
        record = RawRecord(event)
        source = self.catalog_topic.get(record.topic())
        dlq = self.dlqs.get(source.name) if source is not None else None
        headers = [
            *record.headers(),
            ("backbone.error.topic", record.topic().encode()),
            ("backbone.error.partition", str(record.partition()).encode()),
            ("backbone.error.offset", str(record.offset()).encode()),
            ("backbone.error.class", (error_class or type(error).__name__).encode()),
            ("backbone.error.message", str(error)[:2000].encode()),
            ("backbone.error.processor", f"topology.{processor}".encode()),
            ("backbone.error.at", datetime.now(UTC).isoformat().replace("+00:00", "Z").encode()),
        ]
        log.error(
            "record dead-lettered",
            topic=record.topic(),
            partition=record.partition(),
            offset=record.offset(),
            processor=processor,
            error=str(error)[:500],
            trace="".join(traceback.format_exception_only(error)).strip(),
        )
        metrics.DEAD_LETTERS.labels(record.topic()).inc()
        assert dlq is not None, f"{record.topic()} is consumed but has no dead-letter topic"
        await outbox.send(dlq, key=record.key(), value=record.value(), headers=headers)

    async def _drain_reference_tail(self) -> None:
        while True:
            try:
                reference, position = self.tail.events.get_nowait()
            except Exception:
                return
            self.store.apply(reference, position)

    async def _hold_books(self, *_: Any, **__: Any) -> None:
        self._reference_ready.clear()
        self._books_stale = True

    async def _catch_up_reference(self, *_: Any, **__: Any) -> None:
        """Before pricing newly assigned books, read master data up to the reference topics' ends."""
        self._reference_ready.clear()
        self._books_stale = True
        self.guard.forget()
        try:
            await self._read_reference_to_end()
        finally:
            self._reference_ready.set()

    async def _read_reference_to_end(self) -> None:
        loop = asyncio.get_running_loop()
        ends = await loop.run_in_executor(None, self.tail.end_offsets)
        deadline = time.monotonic() + REFERENCE_CATCH_UP_S
        while not self.tail.caught_up(ends):
            if time.monotonic() > deadline:
                log.warning("reference data not caught up after a rebalance", seconds=REFERENCE_CATCH_UP_S)
                break
            await asyncio.sleep(0.02)
        await self._drain_reference_tail()

    async def _report_awaiting(self) -> None:
        metrics.AWAITING.set(len(self.awaiting))
        oldest = min(self.awaiting.values(), default=None)
        metrics.AWAITING_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)

    # --- running ------------------------------------------------------------------------------------

    def run(self) -> None:
        """Create missing topics, load reference data, then process until SIGTERM/SIGINT."""
        admin = AdminClient(self.settings.kafka.client_config())
        apply_topics(
            admin, self.topics.all() + self.internal.all(), replication_factor=self.settings.kafka.replication_factor
        )
        self.tail.preload(self.store)
        self.tail.start()
        worker = faust.Worker(self.app, loglevel=self.settings.runtime.faust_log_level, override_logging=False)
        try:
            worker.execute_from_commandline()
        finally:
            self.tail.stop()
            self.guard.close()


def run_topology(settings: Settings, workers: int = 1, **options: Any) -> None:
    """`backbone run topology`: one faust worker in this process, or `workers` worker processes."""
    prefix = options.pop("topic_prefix", None)
    if workers <= 1:
        serve_metrics(settings.runtime.metrics_port)
        topics = TopologyTopics.prefixed(prefix) if prefix else options.pop("topics", None)
        BillingTopology(settings, topics=topics, **options).run()
        return
    options["topic_prefix"] = prefix
    children = [_spawn_worker(settings, index, options) for index in range(workers)]
    signal.signal(signal.SIGTERM, lambda *_: [c.terminate() for c in children])
    try:
        for child in children:
            child.wait()
    except KeyboardInterrupt:
        for child in children:
            child.terminate()
        for child in children:
            child.wait()


def _spawn_worker(settings: Settings, index: int, options: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if settings.runtime.metrics_port is not None:
        env["BACKBONE_METRICS_PORT"] = str(settings.runtime.metrics_port + index)
    env.setdefault("BACKBONE_KAFKA_BOOTSTRAP_SERVERS", settings.kafka.servers)
    env.setdefault("BACKBONE_SCHEMA_REGISTRY_URL", settings.registry.endpoint)
    args = [sys.executable, "-m", "topology"]
    for name in ("app_id", "topic_prefix", "routing_path", "transport"):
        if options.get(name) is not None:
            args += [f"--{name.replace('_', '-')}", str(options[name])]
    return subprocess.Popen(args, env=env)
