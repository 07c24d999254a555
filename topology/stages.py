"""The billing topology's stages: decode a record once, call the pure billing core, produce its outputs.

    psa.time-entries.v1, psa.approvals.v1 ──entries (store: EntryState per entry)──► <app>-book-commands
        (a record on another partition than its key's murmur2 partition is moved, undecoded, to
         <app>-entry-inputs on that partition first, so an entry's state always lives in one partition;
         a change whose book this worker holds is priced in place, in the same transaction)
    ref.projects/contracts/workers.v1 ──references──► <app>-book-commands (workers: every partition)
    <app>-book-commands ──books (store: one Ledger per entry)──► billing.invoice-candidates.v1,
                                                   erp.posting-requests.v1, ops.exceptions.v1
    erp.posting-acks.v1, billing.responses.v1 ──feedback (store: open rejections)──► ops.exceptions.v1,
                                                   <app>-book-commands (a refused candidate, to its book)

Everything a handler produces, the state it changes and the offset it consumed commit in one
transaction (`backbone.streams.loop`); the rules themselves are `backbone.domain`'s pure functions.
A record that cannot be decoded or processed is dead-lettered by the runtime and the partition moves on.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime

from confluent_kafka import Message

from backbone.domain import billing, entries, feedback
from backbone.domain.models import (
    BillingResponse,
    BusinessException,
    ContractVersion,
    Event,
    Project,
    Worker,
)
from backbone.domain.routing import RoutingRules
from backbone.kafka import topics as catalog
from backbone.kafka.serde import DecodeError, SerdeCache, TopicSerde
from backbone.kafka.topics import InternalTopics, Topic
from backbone.streams.loop import Context, Stage, where
from backbone.streams.partitioner import murmur2_partition
from backbone.streams.state import Store, StoreSpec
from backbone.streams.tally import CounterTally
from topology import messages, metrics, state_codecs
from topology.books import LEDGER_KEY_SEPARATOR, Books, ledger_key
from topology.messages import BookCommand
from topology.reference import ReferenceStore, position_of

FORWARDED_FROM = "backbone.forwarded-from"
"""Header of a record moved to <app>-entry-inputs: the topic it was read from (its schema's topic)."""
AWAITING_REPORT_INTERVAL = 5.0
_APPLIED, _DUPLICATE = entries.Outcome.APPLIED, entries.Outcome.DUPLICATE
"""Read once: `Enum.MEMBER` goes through the enum metaclass's `__getattr__` hook (~0.3 µs a read)."""


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


def event_headers(event: Event) -> list[tuple[str, bytes]]:
    return [
        ("event_type", event.event_type.encode()),
        ("correlation_id", (event.correlation_id or "").encode()),
        ("source_system", event.source_system.encode()),
    ]


@dataclass(frozen=True, slots=True)
class _Output:
    """Where `BillingStages._emit` sends one output type: its topic, serde and counter, looked up once."""

    topic: str
    serde: TopicSerde
    emitted: CounterTally


class BillingStages:
    """The four stages' handlers around one reference store, one routing source and the serdes."""

    def __init__(
        self,
        topics: TopologyTopics,
        internal: InternalTopics,
        serdes: SerdeCache,
        reference: ReferenceStore,
        routing: Callable[[], RoutingRules],
    ) -> None:
        self.topics = topics
        self.internal = internal
        self.serdes = serdes
        self.reference = reference
        self.routing = routing
        self.partitions = internal.book_commands.partitions
        self.catalog_topic = {t.name: t for t in topics.all()}
        self._serdes: dict[str, TopicSerde] = {}
        """Topic name -> the serde of its catalog topic, for `_decode`'s one lookup per record."""
        self.outputs = {t.event: t for t in (topics.invoice_candidates, topics.posting_requests, topics.exceptions)}
        self._output_of: dict[type[Event], _Output] = {}
        self._books: dict[int, Books] = {}
        self.awaiting: dict[str, datetime] = {}
        self._awaiting_reported = 0.0
        changelog = {t.name.rsplit("-", 2)[-2]: t.name for t in internal.changelogs}
        self.entry_store = StoreSpec("entries", changelog["entries"], state_codecs.ENTRY_STATE, on_disk=True)
        self.ledger_store = StoreSpec(
            "ledgers", changelog["ledgers"], state_codecs.LEDGER, on_disk=True, group_separator=LEDGER_KEY_SEPARATOR
        )
        self.rejection_store = StoreSpec("rejections", changelog["rejections"], state_codecs.INSTANT)

    def stages(self) -> list[Stage]:
        t, i = self.topics, self.internal
        return [
            Stage(
                "entries", (t.time_entries.name, t.approvals.name, i.entry_inputs.name), self.entry, (self.entry_store,)
            ),
            Stage("references", tuple(r.name for r in t.reference), self.announce),
            Stage("books", (i.book_commands.name,), self.book, (self.ledger_store,)),
            Stage("feedback", (t.posting_acks.name, t.billing_responses.name), self.answer, (self.rejection_store,)),
        ]

    # --- entries ----------------------------------------------------------------------------------------

    def entry(self, message: Message, context: Context) -> None:
        """An entry revision or approval through the entry state machine; changes go to the books."""
        topic, partition = message.topic(), message.partition()
        home = murmur2_partition(message.key() or b"", self.partitions)
        forwarded = topic == self.internal.entry_inputs.name
        if not forwarded and home != partition:
            headers = [*(message.headers() or []), (FORWARDED_FROM, topic.encode())]  # type: ignore[union-attr]
            context.produce(
                self.internal.entry_inputs.name, message.value(), key=message.key(), headers=headers, partition=home
            )
            return
        # only a moved record has the header: reading headers builds a list of tuples
        incoming = self._decode(message, context, source=_forwarded_from(message) if forwarded else None)
        if incoming is None:
            return
        metrics.events_in(incoming.event_type).inc()
        store = context.store("entries", home)
        key = incoming.key
        recorded = entries.record(store.get(key) or entries.new_entry(key), incoming)  # type: ignore[arg-type]
        outcome = recorded.outcome
        if outcome is not _APPLIED:
            if outcome is _DUPLICATE:
                metrics.DUPLICATES.inc()
                return
            metrics.IGNORED.inc()
        for change in recorded.changes:
            self._hand_to_book(change, context)
        store.put(key, recorded.state)
        self._track_awaiting(key, recorded.state)
        _observe_latency("entries", message)

    def _hand_to_book(self, change: entries.EntryChange, context: Context) -> None:
        """Price the change in its book now when this worker holds the book's partition, else send it there.

        In place, the change and the candidates it prices commit in one transaction, instead of the
        change committing first and the books stage reading it back in the next (half the latency of an
        approval, and no book command to encode, produce, fetch and decode). Both paths can reach one
        book for one entry (its entry partition and book partition move between workers), so a change sent
        before may arrive after a later one priced in place: changes are numbered per entry and a book
        ignores one older than what it priced (`billing.book_entry`)."""
        partition = murmur2_partition(change.project_id.encode(), self.partitions)
        if context.holds("ledgers", partition):
            metrics.CHANGES_IN_PLACE.inc()
            self._price_change(change, self._books_of(context.store("ledgers", partition)), context)
        else:
            metrics.CHANGES_THROUGH_TOPIC.inc()
            self._send_book(messages.encode_change(change), change.project_id, context)

    def _track_awaiting(self, key: str, state: entries.EntryState) -> None:
        waiting = entries.awaiting_approval(state)
        if waiting is None:
            self.awaiting.pop(key, None)
        else:
            self.awaiting[key] = waiting.occurred_at
        now = time.monotonic()
        if now - self._awaiting_reported >= AWAITING_REPORT_INTERVAL:
            self._awaiting_reported = now
            metrics.AWAITING.set(len(self.awaiting))
            oldest = min(self.awaiting.values(), default=None)
            metrics.AWAITING_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)

    # --- references ---------------------------------------------------------------------------------------

    def announce(self, message: Message, context: Context) -> None:
        """A master-data change, as a book command, to every book it can re-price; its header names the
        event (`messages.reference_headers`), so a book can skip it without decoding it."""
        if message.value() is None:
            return  # a tombstone on a compacted topic
        decoded = self._decode(message, context)
        if decoded is None:
            return
        metrics.events_in(decoded.event_type).inc()
        position = position_of(message)
        headers = messages.reference_headers(position, decoded.key)
        if isinstance(decoded, Project):
            command = BookCommand(project=decoded, position=position)
            self._send_book(messages.encode_command(command), decoded.project_id, context, headers)
        elif isinstance(decoded, ContractVersion):
            old = self.reference.data.contracts.get(decoded.contract_key)
            moved = old.project_id if old is not None and old.project_id != decoded.project_id else None
            command = BookCommand(contract=decoded, position=position, moved_from=moved)
            for project_id in filter(None, (decoded.project_id, moved)):
                self._send_book(messages.encode_command(command), project_id, context, headers)
        elif isinstance(decoded, Worker):
            # the books of a worker's entries can be anywhere: every partition re-prices its own
            value = messages.encode_command(BookCommand(worker=decoded, position=position))
            key = decoded.worker_id.encode()
            for partition in range(self.partitions):
                context.produce(self.internal.book_commands.name, value, key=key, headers=headers, partition=partition)
        self.reference.apply(decoded, position)  # type: ignore[arg-type]

    # --- books --------------------------------------------------------------------------------------------

    def book(self, message: Message, context: Context) -> None:
        """Price an entry change, or re-price books after master data changed."""
        data = message.value() or b""
        mark = messages.reference_mark(message.headers()) if data[:1] == b"{" else None  # type: ignore[arg-type]
        command = None
        if mark is None or not self.reference.holds(mark.topic, mark.key, mark.offset):
            command = messages.decode_command(data)
            reference = command.project or command.contract or command.worker
            if reference is not None and command.position is not None:
                self.reference.apply(reference, command.position)
                mark = messages.ReferenceMark(command.position.topic, command.position.offset, reference.key)
        # else the command's event (or a newer one of its key) is applied: decoded only if a book needs it
        books = self._books_of(context.store("ledgers", where(message)[1]))
        if mark is not None and self._priced_already(mark.topic, mark.key, books):
            metrics.REPRICES_SKIPPED.inc()
            _observe_latency("books", message)
            return
        if command is None:
            command = messages.decode_command(data)
        context_ = billing.Context(reference=self.reference.data, routing=self.routing(), at=_time_of(command))
        settle = functools.partial(self._settle, books=books, context=context)
        if command.change is not None:
            self._price_change(command.change, books, context)
        elif command.refusal is not None:
            refusal = command.refusal
            if books.has_ledgers(refusal.project_id):  # else no book of ours emitted the line
                settle(refusal.project_id, lambda b: billing.refuse(b, refusal, context_))
        elif command.worker is not None:
            worker_id = command.worker.worker_id
            for project_id in books.projects_of_worker(worker_id):
                settle(project_id, lambda b: billing.reprice_worker(b, worker_id, context_))
        else:
            project_id = (message.key() or b"").decode()
            if books.has_ledgers(project_id):
                settle(project_id, lambda b: billing.reprice(b, context_))
        _observe_latency("books", message)

    def _price_change(self, change: entries.EntryChange, books: Books, context: Context) -> None:
        priced = billing.Context(reference=self.reference.data, routing=self.routing(), at=change.occurred_at)
        self._settle(change.project_id, lambda b: billing.book_entry(b, change, priced), books=books, context=context)

    def _books_of(self, store: Store) -> Books:
        """The partition's books over its ledger store (opened anew after every restore)."""
        books = self._books.get(store.partition)
        if books is None or books.store is not store:
            books = self._books[store.partition] = Books(store)
            if books.is_empty():  # every ledger it will hold is priced from now on
                books.priced_since = self.reference.watch()
        return books

    def _priced_already(self, topic: str, key: str, books: Books) -> bool:
        """Whether every ledger of the partition was already priced with the master-data event of `key`
        from `topic` that a command carries (or a newer one of its key): re-pricing would change nothing,
        so the command is skipped.

        A replay from offset 0 is where this matters: every worker reads all master data before it
        prices anything, so each book is priced with the final master data from the start, while the
        references stage's commands for those very events reach the books after many of their entries
        (re-pricing a book reads and settles every ledger it has).
        """
        return books.priced_with(self.reference.applied_at(topic, key))

    def _settle(
        self,
        project_id: str,
        step: Callable[[billing.ProjectBook], billing.Settled],
        *,
        books: Books,
        context: Context,
    ) -> None:
        settled = step(books.book(project_id))
        self._emit(settled.events, context)
        for ledger in settled.changed:
            books.store.put(ledger_key(project_id, ledger.time_entry_id), ledger)

    # --- feedback -----------------------------------------------------------------------------------------

    def answer(self, message: Message, context: Context) -> None:
        """An ERP acknowledgment or billing response opens or resolves a rejection exception; a refused
        candidate also goes to its book as a `Refusal`, in the same transaction."""
        decoded = self._decode(message, context)
        if decoded is None:
            return
        metrics.events_in(decoded.event_type).inc()
        decide = feedback.posting_feedback if decoded.event_type == "posting-ack" else feedback.billing_feedback
        store = context.store("rejections", where(message)[1])
        was_open = store.get(decoded.key)
        opened, out = decide(was_open, decoded)  # type: ignore[arg-type]
        self._emit(out, context)
        refusal = feedback.refusal_of(was_open, decoded) if isinstance(decoded, BillingResponse) else None
        if refusal is not None:  # the line's book must learn that the engine does not hold it
            self._send_book(messages.encode_command(BookCommand(refusal=refusal)), refusal.project_id, context)
        if opened != was_open:
            if opened is None:
                store.delete(decoded.key)
            else:
                store.put(decoded.key, opened)

    # --- helpers ------------------------------------------------------------------------------------------

    def _send_book(
        self, command: bytes, project_id: str, context: Context, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        key = project_id.encode()
        context.produce(
            self.internal.book_commands.name,
            command,
            key=key,
            headers=headers,
            partition=murmur2_partition(key, self.partitions),
        )

    def _emit(self, events: Iterable[Event], context: Context) -> None:
        for output in events:
            to = self._output_of.get(type(output)) or self._output(type(output))
            context.produce(
                to.topic, to.serde.encode_value(output), key=output.key.encode(), headers=event_headers(output)
            )
            to.emitted.inc()
            if isinstance(output, BusinessException):
                metrics.EXCEPTIONS.labels(output.kind, output.status).inc()

    def _output(self, event_cls: type[Event]) -> _Output:
        """The topic, serde and counter of an output type, kept: three outputs an approved entry made
        three lookups of each (catalog topic, serde by topic name, counter by event type)."""
        topic = self.outputs[event_cls]
        output = _Output(topic.name, self.serdes.for_topic(topic), metrics.events_out(event_cls.event_type))
        self._output_of[event_cls] = output
        return output

    def _decode(self, message: Message, context: Context, source: str | None = None) -> Event | None:
        """The event a record carries (`source`: the topic whose schema it has, when not its own)."""
        name: str = source or message.topic()  # type: ignore[assignment]  # a consumed record has a topic
        serde = self._serdes.get(name)
        if serde is None:
            serde = self._serdes[name] = self.serdes.for_topic(self.catalog_topic[name])
        try:
            return serde.decode(message)
        except DecodeError as error:
            context.dead_letter(message, error, "decode", error_class=error.error_class)
            metrics.DEAD_LETTERS.labels(message.topic()).inc()
            return None


def _time_of(command: BookCommand) -> datetime:
    """The instant a book command's outputs carry: of the entry change, the refusal or the reference event."""
    if command.change is not None:
        return command.change.occurred_at
    if command.refusal is not None:
        return command.refusal.refused_at
    reference = command.project or command.contract or command.worker
    assert reference is not None  # a command carries one of the four
    return reference.occurred_at


def _forwarded_from(message: Message) -> str | None:
    headers: list[tuple[str, bytes]] = message.headers() or []  # type: ignore[assignment]
    for name, value in headers:
        if name == FORWARDED_FROM:
            return value.decode()
    return None


def _observe_latency(stage: str, message: Message) -> None:
    kind, stamp = message.timestamp()
    if kind:
        metrics.latency(stage).observe(max(0.0, time.time() - stamp / 1000))
