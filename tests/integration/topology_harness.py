"""Helpers for topology integration tests: isolated topics, publishing, worker processes, reading outputs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from backbone.domain.billing import evaluate
from backbone.domain.entries import new_entry, priced_view, record
from backbone.domain.models import (
    ApprovalDecision,
    BusinessException,
    Client,
    ContractVersion,
    Event,
    InvoiceCandidate,
    PostingRequest,
    Project,
    RateCardLine,
    TimeEntry,
    Worker,
)
from backbone.domain.rating import contract_cap
from backbone.domain.reference import ReferenceData
from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.kafka.topics import Topic
from backbone.settings import Settings
from topology.app import TopologyTopics

ROOT = Path(__file__).resolve().parents[2]
D = Decimal


class Harness:
    """One test's topics (unique prefix), its topology workers and readers of what they emit."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self.settings = settings
        self.prefix = prefix
        self.app_id = f"{prefix}app"
        self.topics = TopologyTopics.prefixed(prefix)
        self.serdes = SerdeCache(registry_client(settings.registry.client_config()))
        apply_topics(AdminClient(settings.kafka.client_config()), self.topics.all())
        config = settings.kafka.client_config() | {"enable.idempotence": True, "linger.ms": 5}
        self.producer = Producer(config | {"partitioner": "murmur2_random"})
        """Like backbone's connectors: every record on its key's murmur2 partition."""
        self.foreign_producer = Producer(config)
        """Like a producer with librdkafka's default partitioner (CRC32): the topology must move its records."""
        self.workers: list[subprocess.Popen[bytes]] = []
        self.seen: dict[str, dict[str, Event]] = defaultdict(dict)
        self._consumers: dict[str, Consumer] = {}

    def topic_for(self, event: Event) -> Topic:
        return {
            "client": self.topics.clients,
            "project": self.topics.projects,
            "worker": self.topics.workers,
            "contract": self.topics.contracts,
            "time-entry": self.topics.time_entries,
            "approval": self.topics.approvals,
            "posting-ack": self.topics.posting_acks,
            "billing-response": self.topics.billing_responses,
        }[event.event_type]

    def publish(self, events: list[Event]) -> None:
        """Publish in order; approvals come from a producer that does not partition like the topology."""
        for event in events:
            topic = self.topic_for(event)
            value = self.serdes.for_topic(topic).encode_value(event)
            producer = self.foreign_producer if event.event_type == "approval" else self.producer
            producer.produce(
                topic.name, key=event.key.encode(), value=value, headers=[("event_type", event.event_type.encode())]
            )
            producer.poll(0)
        assert self.producer.flush(30) == 0
        assert self.foreign_producer.flush(30) == 0

    def publish_raw(self, topic: Topic, key: bytes, value: bytes) -> None:
        self.producer.produce(topic.name, key=key, value=value, headers=[("event_type", b"garbage")])
        assert self.producer.flush(30) == 0

    def start_worker(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["BACKBONE_KAFKA_BOOTSTRAP_SERVERS"] = self.settings.kafka.servers
        env["BACKBONE_SCHEMA_REGISTRY_URL"] = self.settings.registry.endpoint
        env.setdefault("BACKBONE_LOG_LEVEL", "WARNING")
        log_dir = self.settings.runtime.data_dir.resolve()
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / f"{self.app_id}-{len(self.workers)}.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "topology", "--app-id", self.app_id, "--topic-prefix", self.prefix],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(worker)
        return worker

    def check_alive(self) -> None:
        dead = [
            w.args
            for w in self.workers
            if w.returncode is None and w.poll() is not None and not getattr(w, "killed", False)
        ]
        assert not dead, f"topology worker exited on its own; see the logs in {self.settings.runtime.data_dir}"

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        worker.killed = True  # type: ignore[attr-defined]
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in self.workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        for consumer in self._consumers.values():
            consumer.close()

    def read(self, topic: Topic) -> dict[str, Event]:
        """Everything on an output topic so far, deduplicated by id (what an idempotent sink keeps)."""
        consumer = self._consumers.get(topic.name)
        if consumer is None:
            consumer = Consumer(
                self.settings.kafka.client_config()
                | {
                    "group.id": f"{self.prefix}reader-{topic.name}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                }
            )
            consumer.subscribe([topic.name])
            self._consumers[topic.name] = consumer
        serde = self.serdes.for_topic(topic)
        while True:
            batch = consumer.consume(1000, timeout=0.5)
            if not batch:
                break
            for message in batch:
                if message.error() is None:
                    event = serde.decode(message)
                    self.seen[topic.name][_identity(event)] = event
        return self.seen[topic.name]

    def committed_view(self, topic: Topic) -> list[Event]:
        """Every record on `topic` a read_committed reader sees, in partition order, duplicates kept."""
        serde = self.serdes.for_topic(topic)
        return [serde.decode(message) for message in self._read_to_end(topic)]

    def candidates(self) -> list[InvoiceCandidate]:
        return list(self.read(self.topics.invoice_candidates).values())  # type: ignore[arg-type]

    def dead_letters(self, topic: Topic) -> list[Message]:
        """Every record on `topic`'s dead-letter topic (read to its end, without a group)."""
        return self._read_to_end(topic.dlq)  # type: ignore[arg-type]

    def _read_to_end(self, topic: Topic) -> list[Message]:
        consumer = Consumer(
            self.settings.kafka.client_config()
            | {
                "group.id": f"{self.prefix}view-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition(topic.name, p, OFFSET_BEGINNING) for p in range(topic.partitions)])
        messages, ended = [], set()
        try:
            while len(ended) < topic.partitions:
                for message in consumer.consume(5000, 1.0):
                    if message.error() is None:
                        messages.append(message)
                    elif message.error().code() == KafkaError._PARTITION_EOF:
                        ended.add(message.partition())
        finally:
            consumer.close()
        return messages


def _identity(event: Event) -> str:
    if isinstance(event, InvoiceCandidate):
        return event.candidate_id
    if isinstance(event, PostingRequest):
        return event.posting_id
    assert isinstance(event, BusinessException)
    return event.event_id or ""


def output_id(event: Event) -> str:
    """The id a downstream system dedupes an output on (an exception's id is its event's: OPEN ≠ RESOLVED)."""
    return _identity(event)


def net_postings(postings: list[PostingRequest], posting_type: str) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for posting in postings:
        if posting.posting_type == posting_type:
            totals[posting.time_entry_id] += posting.amount
    return {k: v for k, v in totals.items() if v != 0}


def expected_costs(events: list[Event]) -> dict[str, Decimal]:
    """The COST each entry should have posted in the end: its billed revision's cost, when it may be posted."""
    states, reference = _fold(events)
    costs = {k: evaluate(priced_view(s), reference).cost for k, s in states.items()}
    return {k: v for k, v in costs.items() if v}


def expected_open_blocks(events: list[Event]) -> dict[str, tuple[str, Decimal | None]]:
    """Entry -> (the exception kind that must be OPEN in the end, its amount at risk when estimable)."""
    states, reference = _fold(events)
    blocks = {}
    for key, state in states.items():
        valuation = evaluate(priced_view(state), reference)
        if valuation.blocked is not None:
            blocks[key] = (str(valuation.blocked), valuation.estimate.amount if valuation.estimate else None)
    return blocks


def net_per_entry(candidates: list[InvoiceCandidate]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for candidate in candidates:
        totals[candidate.time_entry_id] += candidate.amount
    return {k: v for k, v in totals.items() if v != 0}


def _fold(events: list[Event]) -> tuple[dict[str, Any], ReferenceData]:
    """Every entry's final state and the final master data after `events`."""
    reference = ReferenceData()
    states = {}
    for event in events:
        if event.event_type in ("time-entry", "approval"):
            key = event.time_entry_id  # type: ignore[attr-defined]
            states[key] = record(states.get(key) or new_entry(key), event).state  # type: ignore[arg-type]
        elif event.event_type in ("client", "project", "worker", "contract"):
            reference.apply(event)  # type: ignore[arg-type]
    return states, reference


def expected_worth(events: list[Event]) -> tuple[dict[str, Decimal], ReferenceData]:
    """What each entry is worth after all `events` (order-free, billing-rules.md), uncapped."""
    states, reference = _fold(events)
    worth = {k: evaluate(priced_view(s), reference).worth for k, s in states.items()}
    return worth, reference


def scenario(seed: int = 7, count: int = 220) -> tuple[list[Event], list[Event], str]:
    """A small firm: master data and `count` entries (first), then fixes and amendments (later).

    Raises every exception kind the topology raises about entries: P-HOLD is ON_HOLD, P-NOCON has no
    contract, P-NOTAX a contract without tax code, P-NORATE no default rate, P-CAP a 1,000 EUR cap,
    P-GHOST is never published and W-GHOST never exists; W-LATE arrives only later (resolves).
    """
    rnd = random.Random(seed)
    t0 = datetime(2026, 11, 2, tzinfo=UTC)
    clock = iter(range(10**9))

    def env(**kw: object) -> dict[str, object]:
        return {"occurred_at": t0 + timedelta(seconds=next(clock)), "source_system": "test", **kw}

    good = [f"P{n}" for n in range(1, 9)]
    first: list[Event] = [
        Client(**env(client_id="C1", name="Globex", billing_entity="ACME", currency="EUR", active=True))
    ]
    for project_id, status, billing_type in [
        *((p, "ACTIVE", "TIME_AND_MATERIALS") for p in good),
        ("P-HOLD", "ON_HOLD", "TIME_AND_MATERIALS"),
        ("P-FIXED", "ACTIVE", "FIXED_FEE"),
        ("P-NOCON", "ACTIVE", "TIME_AND_MATERIALS"),
        ("P-NOTAX", "ACTIVE", "TIME_AND_MATERIALS"),
        ("P-NORATE", "ACTIVE", "TIME_AND_MATERIALS"),
        ("P-CAP", "ACTIVE", "TIME_AND_MATERIALS"),
    ]:
        first.append(
            Project(
                **env(
                    project_id=project_id,
                    client_id="C1",
                    name=project_id,
                    status=status,
                    billing_type=billing_type,
                    currency="EUR",
                    business_unit="consulting",
                    region=rnd.choice(["EU", "US"]),
                    legal_entity="ACME",
                )
            )
        )
    workers = [f"W{n}" for n in range(1, 9)]
    for worker_id in workers:
        first.append(
            Worker(
                **env(
                    worker_id=worker_id,
                    name=worker_id,
                    role=rnd.choice(["consultant", "senior"]),
                    employment_type="EMPLOYEE",
                    cost_rate=D("55.25"),
                    cost_currency="EUR",
                    active=True,
                )
            )
        )
    card = (RateCardLine(role="senior", hourly_rate=D("210.00")), RateCardLine(worker_id="W1", hourly_rate=D("99.99")))
    for project_id in [*good, "P-HOLD", "P-FIXED", "P-NOTAX", "P-NORATE", "P-CAP"]:
        first.append(
            ContractVersion(
                **env(
                    contract_id=f"K-{project_id}",
                    version=1,
                    project_id=project_id,
                    status="ACTIVE",
                    effective_from=date(2026, 1, 1),
                    currency="EUR",
                    tax_code=None if project_id == "P-NOTAX" else "VAT20",
                    default_hourly_rate=None if project_id == "P-NORATE" else D("150.00"),
                    rate_card=() if project_id == "P-NORATE" else card,
                    not_to_exceed=D("1000") if project_id == "P-CAP" else None,
                    rounding_increment_minutes=rnd.choice([1, 6, 15]),
                    rounding_mode=rnd.choice(["NEAREST", "UP", "DOWN"]),
                )
            )
        )
    projects = good * 3 + ["P-HOLD", "P-FIXED", "P-NOCON", "P-NOTAX", "P-NORATE", "P-CAP", "P-CAP", "P-GHOST"]
    later: list[Event] = []
    for n in range(count):
        entry_id = f"E{n:04d}"
        worker_id = "W-GHOST" if n % 37 == 0 else "W-LATE" if n % 41 == 0 else rnd.choice(workers)
        base = {
            "time_entry_id": entry_id,
            "worker_id": worker_id,
            "project_id": rnd.choice(projects),
            "work_date": date(2026, rnd.choice([10, 11]), rnd.randint(1, 28)),
            "billable": rnd.random() > 0.1,
            "task_id": rnd.choice([None, "T1"]),
        }
        revision1 = TimeEntry(**env(**base, revision=1, duration_seconds=rnd.randint(60, 8 * 3600)))
        approve1 = ApprovalDecision(
            **env(time_entry_id=entry_id, revision=1, decision="APPROVED", approver_id="M1", decided_at=t0)
        )
        # approvals before entries for some: the two topics interleave arbitrarily anyway
        first += [approve1, revision1] if n % 5 == 0 else [revision1, approve1]
        roll = rnd.random()
        if roll < 0.15:  # amendment: a new revision, approved
            later += [
                TimeEntry(**env(**base, revision=2, duration_seconds=rnd.randint(60, 8 * 3600))),
                ApprovalDecision(
                    **env(time_entry_id=entry_id, revision=2, decision="APPROVED", approver_id="M1", decided_at=t0)
                ),
            ]
        elif roll < 0.22:  # correction: un-approved after billing
            later.append(
                ApprovalDecision(
                    **env(time_entry_id=entry_id, revision=1, decision="REJECTED", approver_id="M1", decided_at=t0)
                )
            )
        elif roll < 0.27:  # deleted after billing; a later approval is ignored
            later += [
                TimeEntry(**env(**base, revision=2, duration_seconds=0, deleted=True)),
                ApprovalDecision(
                    **env(time_entry_id=entry_id, revision=2, decision="APPROVED", approver_id="M1", decided_at=t0)
                ),
            ]
    later.append(
        Worker(
            **env(
                worker_id="W-LATE",
                name="Late",
                role="consultant",
                employment_type="CONTRACTOR",
                cost_rate=D("70"),
                cost_currency="EUR",
                active=True,
            )
        )
    )
    # retroactive amendment of P1 for November, and a terminated contract on P2
    later.append(
        ContractVersion(
            **env(
                contract_id="K-P1",
                version=2,
                project_id="P1",
                status="ACTIVE",
                effective_from=date(2026, 11, 1),
                currency="EUR",
                tax_code="VAT20",
                default_hourly_rate=D("175.00"),
            )
        )
    )
    later.append(
        ContractVersion(
            **env(
                contract_id="K-P2",
                version=1,
                project_id="P2",
                status="TERMINATED",
                effective_from=date(2026, 1, 1),
                currency="EUR",
                tax_code="VAT20",
                default_hourly_rate=D("150.00"),
            )
        )
    )
    return first, later, "P-CAP"


def cap_of(reference: ReferenceData, project_id: str) -> Decimal | None:
    versions = reference.contract_versions(project_id)
    return contract_cap(versions, versions[0].contract_id) if versions else None
