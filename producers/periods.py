"""Period imports: an export is the tracker's truth for a period, so a re-export withdraws what it dropped.

Tracker CSV exports carry no entry id, so an entry's id is derived from what identifies the piece of
work (who, when, which project, the notes: `producers.harvest`, `producers.toggl`,
`producers.clockify`). Correcting a note or a start time in the tracker therefore gives the entry
another id in the next export; exports that carry the tracker's own id (API JSON) keep theirs. Either
way, `backbone import TRACKER FILE --period FROM..TO` reconciles the file against what earlier imports
of that source and workspace (the *scope*) published:

- an entry of the file that no earlier import published is published as it is;
- an entry published before and unchanged is not published again;
- an entry published before and changed (duration, billable, approval, invoicing...) is published
  as a higher revision of the same entry (above the revision published before, whatever the export time);
- an entry published before, dated in the period and absent from the file is **withdrawn**: a deletion
  revision of the entry as last published (`deleted: true`, terminal; the topology reverses whatever
  it billed, billing-rules.md §1 and §6). An edited entry whose id changed is thus the old one
  withdrawn and the new one added, and the net billed amount is right after any number of re-exports;
- an entry withdrawn earlier that a later export has again (restored in the tracker, or an earlier
  import of the wrong file) comes back under a new id (`<id>~2`): a deletion is terminal, so the old
  id could never be billed again.

A row dated outside the period is rejected with its line (the file would not be the period's truth).

What was published per entry is kept in the compacted topic `psa.import-ledger.v1` (key
`source|workspace|base id`, JSON value: the entry as published, its fingerprint, incarnation and
whether it is withdrawn), on one partition per scope. The ledger records and the file's events are
written in **one Kafka transaction** by a producer whose transactional id is the scope's
(`backbone-import.<source>.<workspace>`), and the ledger is read, read-committed, only after that
producer initialised its transactions. Hence:

- all or nothing per file: a crash or error at any point leaves neither events nor ledger records
  visible to read-committed readers (the topology is one); a plain import only validates first;
- two imports of one scope at the same time (any periods, any hosts): the later one's
  initialisation fences the earlier, whose transaction is aborted and which fails telling its operator
  to run it again; the later one read the ledger after every earlier import of the scope had committed
  or aborted, so it reconciles against exactly what is on the topics. Imports of other scopes run
  side by side; one whose transaction is left open by a crash (until `TRANSACTION_TIMEOUT_S`, or until
  the same scope is imported again) delays the ledger reads of scopes sharing its partition.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from confluent_kafka import KafkaException

from backbone.domain.ids import canonical_payload
from backbone.domain.models import ApprovalDecision, Event, TimeEntry
from backbone.errors import BackboneError, InvalidInputError, ServiceUnavailableError
from backbone.kafka.topics import IMPORT_LEDGER, Topic
from backbone.settings import Settings
from producers.parsing import Outcome, Parsed, Rejection, revision_at

INCARNATION_MARK = "~"
TRANSACTION_TIMEOUT_S = 300.0
"""How long an import's transaction may stay open (the broker aborts it after that)."""
_FINGERPRINT_EXCLUDED = {"event_id", "occurred_at", "revision", "time_entry_id", "correlation_id", "decided_at"}


class ConcurrentImportError(BackboneError):
    """Another import of the same scope started while this one ran; this one published nothing."""

    exit_code = 75


@dataclass(frozen=True)
class Period:
    """Work dates FROM..TO, both included."""

    first: date
    last: date

    @classmethod
    def parse(cls, text: str) -> Period:
        first, sep, last = text.partition("..")
        try:
            period = cls(date.fromisoformat(first.strip()), date.fromisoformat(last.strip()))
        except ValueError:
            sep = ""
        if not sep:
            raise InvalidInputError(f"--period {text!r} is not FROM..TO", hint="e.g. --period 2024-03-01..2024-03-31")
        if period.first > period.last:
            raise InvalidInputError(f"--period {text!r} ends before it starts")
        return period

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.first <= day <= self.last

    def __str__(self) -> str:
        return f"{self.first.isoformat()}..{self.last.isoformat()}"


@dataclass(frozen=True)
class Scope:
    """What one tracker export speaks for: a source system and one of its workspaces."""

    source: str
    workspace: str = "default"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", self.workspace):
            raise InvalidInputError(
                f"--workspace {self.workspace!r}: use letters, digits, '.', '_' or '-' (at most 100)"
            )

    @property
    def prefix(self) -> str:
        return f"{self.source}|{self.workspace}|"

    @property
    def transactional_id(self) -> str:
        return f"backbone-import.{self.source}.{self.workspace}"

    def partition(self, partitions: int) -> int:
        """The ledger partition of this scope (stable: CRC-32 of the scope, not Python's salted hash)."""
        return zlib.crc32(self.prefix.encode()) % partitions

    def __str__(self) -> str:
        return f"{self.source}/{self.workspace}"


@dataclass(frozen=True)
class LedgerEntry:
    """What imports of a scope last published for one entry (keyed by the id the file gives it)."""

    base_id: str
    entry: TimeEntry  # as published: its published id and revision
    fingerprint: str
    incarnation: int = 1
    withdrawn: bool = False

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "entry": self.entry.model_dump(mode="json", exclude={"event_id"}),
                "fingerprint": self.fingerprint,
                "incarnation": self.incarnation,
                "withdrawn": self.withdrawn,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, base_id: str, data: bytes) -> LedgerEntry:
        value = json.loads(data)
        return cls(
            base_id=base_id,
            entry=TimeEntry.model_validate(value["entry"]),
            fingerprint=value["fingerprint"],
            incarnation=int(value["incarnation"]),
            withdrawn=bool(value["withdrawn"]),
        )


def published_id(base_id: str, incarnation: int) -> str:
    return base_id if incarnation == 1 else f"{base_id}{INCARNATION_MARK}{incarnation}"


def fingerprint(entry: TimeEntry, decisions: Iterable[ApprovalDecision]) -> str:
    """What the tracker says about an entry, without what changes at every export (times, revisions)."""
    said: dict[str, Any] = {k: v for k, v in entry.__dict__.items() if k not in _FINGERPRINT_EXCLUDED}
    said["decisions"] = [{k: v for k, v in d.__dict__.items() if k not in _FINGERPRINT_EXCLUDED} for d in decisions]
    return canonical_payload(said)


# --- the reconciliation: pure, no Kafka ------------------------------------------------------------


@dataclass
class Reconciliation:
    """One import of a period against the scope's ledger; `updates` are the ledger records to write."""

    period: Period
    ledger: dict[str, LedgerEntry]
    at: datetime  # the export time: the revision and occurred_at of withdrawals
    updates: dict[str, LedgerEntry] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    unchanged: int = 0
    withdrawn: int = 0

    def admit(self, events: tuple[Event, ...]) -> tuple[Event, ...]:
        """The events to publish for one record's events (a time entry and its decisions)."""
        entry, decisions = _split(events)
        base = entry.time_entry_id
        self.seen.add(base)
        known = self.updates.get(base) or self.ledger.get(base)
        said = fingerprint(entry, decisions)
        if known is not None and _unchanged(known, entry, said):
            self.unchanged += 1
            return ()
        incarnation, revision = _place(known, entry)
        update = {"time_entry_id": published_id(base, incarnation), "revision": revision}
        published = entry.model_copy(update=update)
        self.updates[base] = LedgerEntry(base, published, said, incarnation, withdrawn=entry.deleted)
        return (published, *(d.model_copy(update=update) for d in decisions))

    def withdrawals(self) -> Iterator[TimeEntry]:
        """Deletion revisions of the entries published before, dated in the period, absent from the file."""
        for base, known in self.ledger.items():
            if known.withdrawn or base in self.seen or known.entry.work_date not in self.period:
                continue
            revision = max(revision_at(self.at), known.entry.revision + 1)
            deletion = known.entry.model_copy(
                update={"revision": revision, "deleted": True, "occurred_at": self.at, "correlation_id": None}
            )
            self.updates[base] = LedgerEntry(base, deletion, known.fingerprint, known.incarnation, withdrawn=True)
            self.withdrawn += 1
            yield deletion

    def publishable(self, events: Iterable[Event]) -> Iterator[Event]:
        """Every event to publish: the file's new and changed entries, then the withdrawals."""
        for group in records_of(events):
            yield from self.admit(group)
        yield from self.withdrawals()


def _unchanged(known: LedgerEntry, entry: TimeEntry, said: str) -> bool:
    """Nothing to publish: the entry is as published, or the tracker deleted what was withdrawn already."""
    if entry.deleted:
        return known.withdrawn
    return not known.withdrawn and known.fingerprint == said


def _place(known: LedgerEntry | None, entry: TimeEntry) -> tuple[int, int]:
    """The incarnation and revision to publish a new or changed entry as."""
    if known is None:
        return 1, entry.revision
    if known.withdrawn and not entry.deleted:  # back after a withdrawal: a deletion is terminal, so a new id
        return known.incarnation + 1, entry.revision
    return known.incarnation, max(entry.revision, known.entry.revision + 1)


def _split(events: tuple[Event, ...]) -> tuple[TimeEntry, list[ApprovalDecision]]:
    entry, *rest = events
    assert isinstance(entry, TimeEntry), "a tracker record's events start with its time entry"
    return entry, [d for d in rest if isinstance(d, ApprovalDecision)]


def records_of(events: Iterable[Event]) -> Iterator[tuple[Event, ...]]:
    """A flat stream of a tracker's events regrouped per record: each time entry with its decisions."""
    group: list[Event] = []
    for event in events:
        if isinstance(event, TimeEntry) and group:
            yield tuple(group)
            group = []
        group.append(event)
    if group:
        yield tuple(group)


def within(period: Period) -> Callable[[Iterable[Outcome]], Iterator[Outcome]]:
    """Reject records whose work date lies outside the period (the file must be the period's truth)."""

    def check(outcomes: Iterable[Outcome]) -> Iterator[Outcome]:
        for outcome in outcomes:
            if isinstance(outcome, Parsed):
                outside = [e for e in outcome.events if isinstance(e, TimeEntry) and e.work_date not in period]
                if outside:
                    day = outside[0].work_date.isoformat()
                    yield Rejection(outcome.where, f"{day} is outside the period {period}", "work_date")
                    continue
            yield outcome

    return check


# --- the ledger on Kafka -------------------------------------------------------------------------------


def read_ledger(
    kafka_config: dict[str, Any], topic: str, partitions: int, scope: Scope, timeout: float
) -> dict[str, LedgerEntry]:
    """The scope's ledger as committed, read to the partition's end (past other scopes' open transactions)."""
    from confluent_kafka import Consumer, TopicPartition

    partition = TopicPartition(topic, scope.partition(partitions))
    base = {**kafka_config, "group.id": "backbone-import-ledger-reader", "enable.auto.commit": False}
    # the read_committed high watermark is the last stable offset, which another scope's open transaction
    # holds back: this scope's own records may lie beyond it, so read to the real end
    peek = Consumer({**base, "isolation.level": "read_uncommitted"})
    try:
        _, end = peek.get_watermark_offsets(partition, timeout=timeout, cached=False)
    except KafkaException as error:
        raise ServiceUnavailableError(
            f"cannot read the import ledger {topic}: {error.args[0].str()}",
            hint="create the catalog topics with `backbone up` (or `backbone topics apply`), and check Kafka",
        ) from error
    finally:
        peek.close()
    consumer = Consumer({**base, "isolation.level": "read_committed"})
    try:
        consumer.assign([TopicPartition(topic, partition.partition, 0)])
        return _read_scope(consumer, partition, end, scope, time.monotonic() + timeout)
    finally:
        consumer.close()


def _read_scope(consumer: Any, partition: Any, end: int, scope: Scope, deadline: float) -> dict[str, LedgerEntry]:
    ledger: dict[str, LedgerEntry] = {}
    prefix = scope.prefix.encode()
    while end > 0 and consumer.position([partition])[0].offset < end:
        if time.monotonic() > deadline:
            raise ConcurrentImportError(
                f"the import ledger of {scope} could not be read to its end: another import's transaction is open",
                hint=f"run the import again later: an open transaction ends within {TRANSACTION_TIMEOUT_S:.0f}s",
            )
        for message in consumer.consume(1000, timeout=0.5):
            key = message.key() or b""
            if message.error() is None and key.startswith(prefix) and key != prefix:  # prefix alone: a claim
                base_id = key[len(prefix) :].decode()
                value = message.value()
                if value is None:
                    ledger.pop(base_id, None)
                else:
                    ledger[base_id] = LedgerEntry.from_json(base_id, value)
    return ledger


@dataclass(frozen=True)
class PeriodImport:
    """What `--period` and `--workspace` ask of one import."""

    scope: Scope
    period: Period
    ledger_topic: Topic = IMPORT_LEDGER
    topics: Mapping[str, Topic] | None = None  # event type -> topic, when not the catalog's (tests)


@dataclass
class PeriodReport:
    """What a period import published."""

    events: int
    withdrawn: int
    unchanged: int
    seconds: float


class PeriodPublisher:
    """Publishes a file's reconciled events and the scope's ledger records in one Kafka transaction.

    Creating it fences every earlier producer of the scope (an import still running elsewhere fails
    and publishes nothing), then reads the ledger as committed.
    """

    def __init__(
        self,
        settings: Settings,
        scope: Scope,
        period: Period,
        *,
        topics: Mapping[str, Topic] | None = None,
        ledger_topic: Topic = IMPORT_LEDGER,
    ) -> None:
        from producers.emitter import Emitter

        self.scope, self.period, self.ledger_topic = scope, period, ledger_topic
        self.emitter = Emitter(
            settings, topics=topics, transactional_id=scope.transactional_id, delivery_timeout_s=TRANSACTION_TIMEOUT_S
        )
        try:
            self.ledger = read_ledger(
                settings.kafka.client_config(), ledger_topic.name, ledger_topic.partitions, scope, TRANSACTION_TIMEOUT_S
            )
        except BaseException:
            self.emitter.close()
            raise
        self._healthy = True

    def __enter__(self) -> PeriodPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.emitter.close(None if self._healthy else 5.0)
        except (KafkaException, SystemError):
            # a fenced producer raises its fatal error from every flush (confluent-kafka then reports it as
            # a SystemError of the delivery callback); its transaction was aborted, there is nothing to lose
            if self._healthy:
                raise

    def publish(self, events: Iterable[Event], at: datetime) -> PeriodReport:
        """Publish what the file changes, withdraw what it dropped, record both: all or nothing."""
        from producers.emitter import DeliveryError

        started = time.monotonic()
        reconciliation = Reconciliation(self.period, self.ledger, at)
        try:
            with self.emitter.transaction():
                self._claim(at)
                report = self.emitter.publish(reconciliation.publishable(events))
                for base_id, record in reconciliation.updates.items():
                    self._record(base_id, record)
        except (KafkaException, DeliveryError, SystemError) as error:  # SystemError: see close()
            self._healthy = False
            raise _failure(self.scope, error) from error
        self.ledger.update(reconciliation.updates)
        return PeriodReport(
            report.published, reconciliation.withdrawn, reconciliation.unchanged, time.monotonic() - started
        )

    def _claim(self, at: datetime) -> None:
        """Write the scope's own record first and wait for it: a producer another import fenced fails
        here, before any event is queued, instead of part-way through the file."""
        claim = {"period": str(self.period), "exported_at": at.isoformat()}
        self._record_bytes(self.scope.prefix.encode(), json.dumps(claim, sort_keys=True).encode())
        if self.emitter.flush(TRANSACTION_TIMEOUT_S):
            raise BackboneError(f"the import ledger of {self.scope} did not take the import's first record in time")

    def _record(self, base_id: str, record: LedgerEntry) -> None:
        self._record_bytes(f"{self.scope.prefix}{base_id}".encode(), record.to_json())

    def _record_bytes(self, key: bytes, value: bytes) -> None:
        partition = self.scope.partition(self.ledger_topic.partitions)
        self.emitter.produce_bytes(self.ledger_topic.name, key, value, partition)


def _failure(scope: Scope, error: Exception) -> BackboneError:
    cause = error.__cause__ if isinstance(error, SystemError) else error
    text = str(cause)
    # a transactional producer's fatal errors are fencing by a newer holder of its transactional id
    if any(word in text.lower() for word in ("fenced", "epoch", "fatal")):
        return ConcurrentImportError(
            f"another import of {scope} started while this one ran; nothing of this file was published",
            hint="let the other import finish, then run this one again (it reconciles against the other's result)",
        )
    return BackboneError(
        f"the import of {scope} failed and its transaction was aborted; nothing of this file was published: {text}",
        hint="check that Kafka is up (`backbone status`) and run the import again",
    )
