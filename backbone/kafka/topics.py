"""The topic catalog: every topic backbone knows, declared once.

Each `Topic` holds a topic's whole contract: name, the canonical event its values carry (and so its
key field and Avro schema), partitions, cleanup policy, retention, and its dead-letter topic. Code
receives `Topic` objects, never name strings; `backbone up` and `backbone topics apply` create what is
missing and report drift (see `backbone.kafka.admin`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backbone.domain import models

DAY_MS = 24 * 60 * 60 * 1000
FOREVER = -1


@dataclass(frozen=True)
class Topic:
    """One topic's contract."""

    name: str
    event: type[models.Event] | None
    partitions: int
    compacted: bool = False
    retention_ms: int = 30 * DAY_MS
    dlq: Topic | None = None
    extra_config: tuple[tuple[str, str], ...] = field(default=())

    @property
    def event_type(self) -> str | None:
        return self.event.event_type if self.event else None

    @property
    def key_field(self) -> str | None:
        return self.event.key_field if self.event else None

    @property
    def value_subject(self) -> str:
        """Schema registry subject (TopicNameStrategy)."""
        return f"{self.name}-value"

    def config(self) -> dict[str, str]:
        """Topic-level configuration the broker should hold."""
        config = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms),
        }
        config.update(dict(self.extra_config))
        return config


def _dlq(name: str) -> Topic:
    return Topic(name=f"{name}.dlq", event=None, partitions=1, retention_ms=FOREVER)


def _topic(name: str, event: type[models.Event], partitions: int, **kwargs: object) -> Topic:
    return Topic(name=name, event=event, partitions=partitions, dlq=_dlq(name), **kwargs)  # type: ignore[arg-type]


REFERENCE_PARTITIONS = 3
TRANSACTIONAL_PARTITIONS = 6

CLIENTS = _topic("ref.clients.v1", models.Client, REFERENCE_PARTITIONS, compacted=True, retention_ms=FOREVER)
PROJECTS = _topic("ref.projects.v1", models.Project, REFERENCE_PARTITIONS, compacted=True, retention_ms=FOREVER)
WORKERS = _topic("ref.workers.v1", models.Worker, REFERENCE_PARTITIONS, compacted=True, retention_ms=FOREVER)
CONTRACTS = _topic(
    "ref.contracts.v1", models.ContractVersion, REFERENCE_PARTITIONS, compacted=True, retention_ms=FOREVER
)
TIME_ENTRIES = _topic("psa.time-entries.v1", models.TimeEntry, TRANSACTIONAL_PARTITIONS, retention_ms=FOREVER)
APPROVALS = _topic("psa.approvals.v1", models.ApprovalDecision, TRANSACTIONAL_PARTITIONS, retention_ms=FOREVER)
INVOICE_CANDIDATES = _topic(
    "billing.invoice-candidates.v1", models.InvoiceCandidate, TRANSACTIONAL_PARTITIONS, retention_ms=FOREVER
)
POSTING_REQUESTS = _topic(
    "erp.posting-requests.v1", models.PostingRequest, TRANSACTIONAL_PARTITIONS, retention_ms=FOREVER
)
POSTING_ACKS = _topic("erp.posting-acks.v1", models.PostingAck, TRANSACTIONAL_PARTITIONS, retention_ms=FOREVER)
BILLING_RESPONSES = _topic(
    "billing.responses.v1", models.BillingResponse, TRANSACTIONAL_PARTITIONS, retention_ms=FOREVER
)
EXCEPTIONS = _topic(
    "ops.exceptions.v1", models.BusinessException, REFERENCE_PARTITIONS, compacted=True, retention_ms=FOREVER
)

EVENT_TOPICS: tuple[Topic, ...] = (
    CLIENTS,
    PROJECTS,
    WORKERS,
    CONTRACTS,
    TIME_ENTRIES,
    APPROVALS,
    INVOICE_CANDIDATES,
    POSTING_REQUESTS,
    POSTING_ACKS,
    BILLING_RESPONSES,
    EXCEPTIONS,
)
"""Topics that carry canonical events (each has a registered value schema and a DLQ)."""

IMPORT_LEDGER = Topic(
    name="psa.import-ledger.v1",
    event=None,
    partitions=REFERENCE_PARTITIONS,
    compacted=True,
    retention_ms=FOREVER,
)
"""What `backbone import --period` published per entry (JSON, key `source|workspace|entry`), written in the
same Kafka transaction as the events; the next import of a period withdraws what its file no longer has
(`producers.periods`). Not part of the event contract: no schema, no DLQ (only the importer reads it)."""

ALL_TOPICS: tuple[Topic, ...] = EVENT_TOPICS + tuple(t.dlq for t in EVENT_TOPICS if t.dlq) + (IMPORT_LEDGER,)

STREAMS: dict[str, Topic] = {
    "invoice-candidates": INVOICE_CANDIDATES,
    "posting-requests": POSTING_REQUESTS,
    "posting-acks": POSTING_ACKS,
    "billing-responses": BILLING_RESPONSES,
    "exceptions": EXCEPTIONS,
    **{t.event_type: t for t in EVENT_TOPICS[:6] if t.event_type},
}
"""Names `backbone tail` accepts besides raw topic names."""


@dataclass(frozen=True)
class InternalTopics:
    """The billing topology's own topics for one app id (not part of the contract).

    Repartition streams carry JSON between the topology's stages and have DLQs like every consumed
    topic; store changelogs `<app id>-<store>-changelog` are compacted and kept forever (they *are*
    the state). Creating them up front (with the right partitions and policy) means several workers
    starting at once never subscribe before a topic exists.
    """

    entry_inputs: Topic
    book_commands: Topic
    changelogs: tuple[Topic, ...]

    def all(self) -> tuple[Topic, ...]:
        streams = (self.entry_inputs, self.book_commands)
        return streams + tuple(t.dlq for t in streams if t.dlq) + self.changelogs


TOPOLOGY_TABLES = ("entries", "ledgers", "rejections")


def internal_topics(app_id: str, partitions: int = TRANSACTIONAL_PARTITIONS) -> InternalTopics:
    def stream(name: str) -> Topic:
        full = f"{app_id}-{name}"
        return Topic(name=full, event=None, partitions=partitions, retention_ms=7 * DAY_MS, dlq=_dlq(full))

    def changelog(table: str) -> Topic:
        return Topic(
            name=f"{app_id}-{table}-changelog",
            event=None,
            partitions=partitions,
            compacted=True,
            retention_ms=FOREVER,
        )

    return InternalTopics(
        entry_inputs=stream("entry-inputs"),
        book_commands=stream("book-commands"),
        changelogs=tuple(changelog(t) for t in TOPOLOGY_TABLES),
    )


BY_EVENT_TYPE: dict[str, Topic] = {t.event_type: t for t in EVENT_TOPICS if t.event_type}
BY_NAME: dict[str, Topic] = {t.name: t for t in ALL_TOPICS}


def topic_for(event_type: str) -> Topic:
    """The topic that carries `event_type` (e.g. 'time-entry')."""
    try:
        return BY_EVENT_TYPE[event_type]
    except KeyError:
        known = ", ".join(sorted(BY_EVENT_TYPE))
        raise KeyError(f"unknown event type {event_type!r}; known: {known}") from None


def resolve_stream(name: str) -> Topic:
    """A stream name (`invoice-candidates`, `time-entry`, ...) or a catalog topic name."""
    topic = STREAMS.get(name) or BY_NAME.get(name)
    if topic is None:
        known = ", ".join(sorted(STREAMS))
        raise KeyError(f"unknown stream or topic {name!r}; streams: {known}")
    return topic


def validate(topics: tuple[Topic, ...] = ALL_TOPICS) -> list[str]:
    """Problems in a catalog (empty when sound): duplicate names, bad partitions, missing DLQs."""
    problems: list[str] = []
    names = [t.name for t in topics]
    problems += [f"topic {n} is declared twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for topic in topics:
        if topic.partitions < 1:
            problems.append(f"topic {topic.name} needs at least one partition")
        if topic.event is not None and topic.dlq is None:
            problems.append(f"topic {topic.name} carries events but has no dead-letter topic")
        if topic.dlq is not None and topic.dlq.name != f"{topic.name}.dlq":
            problems.append(f"topic {topic.name} has DLQ {topic.dlq.name}; expected {topic.name}.dlq")
    return problems
