"""The benchmark firm and the harness the topology benchmarks share (docs/benchmarks.md).

The firm: one client, `workers` consultants, `projects` time-and-materials projects and `contracts`
contract versions over them, and time entries each with its approval, so every entry yields exactly
one TIME invoice candidate ("N candidates on the topic" means done). Events are generated lazily and
carry their event and correlation ids, as connectors publish them, so a million entries never sit in
memory and the worker does not derive ids the connectors would have sent.

The harness: publishing with a producer tuned for throughput (several publisher processes), a
read_committed counter of a topic's records, topology worker processes with their peak RSS, and the
machine's load average for the report (the benchmark machine is shared).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from backbone.domain.models import (
    ApprovalDecision,
    Client,
    ContractVersion,
    Event,
    Project,
    RateCardLine,
    TimeEntry,
    Worker,
)
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.settings import Settings
from topology.stages import TopologyTopics

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 2, tzinfo=UTC)
IDS = uuid.UUID("6f1d3c1e-5b0a-4c1e-9a39-0c9b2f0e6a01")
"""Namespace of the benchmark's event ids (UUIDv5, the length connectors' derived ids have)."""
STALL_S = 120.0
"""A run whose output has not grown for this long is reported as stalled, not waited on forever."""


@dataclass(frozen=True)
class Firm:
    """The shape of the simulated firm."""

    projects: int = 1000
    workers: int = 200
    contracts: int | None = None
    """Contract versions (default: one per project); beyond `projects`, later versions of the same contracts."""

    @property
    def contract_versions(self) -> int:
        return self.projects if self.contracts is None else self.contracts


def _ids(kind: str, n: int, with_ids: bool) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid5(IDS, f"{kind}/{n}"))} if with_ids else {}


def reference_count(firm: Firm) -> int:
    return 1 + firm.workers + firm.projects + firm.contract_versions


def reference_events(firm: Firm, start: int = 0, stop: int | None = None, *, with_ids: bool = True) -> Iterator[Event]:
    """Master data in this order: the client, the workers, the projects, their contract versions
    (`start` ≤ index < `stop` of that sequence, so publishers can share it)."""
    for i in range(start, reference_count(firm) if stop is None else stop):
        yield _reference_event(firm, i, with_ids)


def _reference_event(firm: Firm, i: int, with_ids: bool) -> Event:
    env = {"occurred_at": T0, "source_system": "bench"}
    if i == 0:
        client = {"client_id": "C1", "name": "Globex", "billing_entity": "ACME", "currency": "EUR", "active": True}
        return Client(**env, **_ids("client", 1, with_ids), **client)
    w = i - 1
    if w < firm.workers:
        return Worker(
            **env,
            **_ids("worker", w, with_ids),
            worker_id=f"W{w}",
            name=f"W{w}",
            role=("senior", "consultant")[w % 2],
            employment_type="EMPLOYEE",
            cost_rate=Decimal("55.25"),
            cost_currency="EUR",
            active=True,
        )
    p = w - firm.workers
    if p < firm.projects:
        return Project(
            **env,
            **_ids("project", p, with_ids),
            project_id=f"P{p}",
            client_id="C1",
            name=f"P{p}",
            status="ACTIVE",
            billing_type="TIME_AND_MATERIALS",
            currency="EUR",
            business_unit="consulting",
            region=("EU", "US")[p % 2],
            legal_entity="ACME",
        )
    c = p - firm.projects
    p, version = c % firm.projects, c // firm.projects + 1
    return ContractVersion(
        **env,
        **_ids("contract", c, with_ids),
        contract_id=f"K{p}",
        version=version,
        project_id=f"P{p}",
        status="ACTIVE",
        effective_from=date(2026, 1, 1) - timedelta(days=30 * (version - 1)),
        currency="EUR",
        tax_code="VAT20",
        default_hourly_rate=Decimal("150.00"),
        rounding_increment_minutes=6,
        rate_card=(RateCardLine(role="senior", hourly_rate=Decimal("210.00")),),
    )


def entry_events(firm: Firm, start: int, stop: int, *, with_ids: bool = True) -> Iterator[tuple[Event, Event]]:
    """(time entry, its approval) for entries `start` ≤ n < `stop`; every one of them bills."""
    for n in range(start, stop):
        entry_id = f"E{n}"
        correlated = {"correlation_id": entry_id} if with_ids else {}
        at = T0 + timedelta(seconds=n)
        entry = TimeEntry(
            occurred_at=at,
            source_system="bench",
            **_ids("time-entry", n, with_ids),
            **correlated,
            time_entry_id=entry_id,
            revision=1,
            worker_id=f"W{n % firm.workers}",
            project_id=f"P{n % firm.projects}",
            work_date=date(2026, 11, 1 + n % 28),
            duration_seconds=900 + (n * 37) % 28_000,
            billable=True,
        )
        approval = ApprovalDecision(
            occurred_at=at,
            source_system="bench",
            **_ids("approval", n, with_ids),
            **correlated,
            time_entry_id=entry_id,
            revision=1,
            decision="APPROVED",
            approver_id="M1",
            decided_at=at,
        )
        yield entry, approval


# --- publishing --------------------------------------------------------------------------------------------


def throughput_producer(settings: Settings, compression: str = "lz4") -> Producer:
    """A producer tuned for bulk loading (murmur2 like the connectors, so no entry is forwarded).

    The connectors publish uncompressed; faust's aiokafka cannot read lz4 without the `lz4` package,
    so benchmarks with a faust baseline publish with `compression="none"`."""
    return Producer(
        settings.kafka.client_config()
        | {
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": compression,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
    """Queue one record, serving delivery reports while librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)


class Publisher:
    """Encodes events with the catalog's serdes (`TopicSerde.encode_value`) and queues them."""

    def __init__(self, settings: Settings, topics: TopologyTopics, producer: Producer) -> None:
        self.serdes = SerdeCache(registry_client(settings.registry.client_config()))
        self.producer = producer
        self.by_type = {
            "client": topics.clients,
            "project": topics.projects,
            "worker": topics.workers,
            "contract": topics.contracts,
            "time-entry": topics.time_entries,
            "approval": topics.approvals,
        }

    def send(self, event: Event) -> None:
        topic = self.by_type[event.event_type]
        value = self.serdes.for_topic(topic).encode_value(event)
        produce(self.producer, topic.name, event.key.encode(), value, [("event_type", event.event_type.encode())])

    def send_all(self, events: Iterator[Event]) -> int:
        sent = 0
        for event in events:
            self.send(event)
            sent += 1
            if sent % 1000 == 0:
                self.producer.poll(0)
        return sent

    def flush(self) -> None:
        if self.producer.flush(300) != 0:
            raise SystemExit("records left undelivered after 300 s; is the broker up?")


def _publish_share(
    settings: Settings, topics: TopologyTopics, firm: Firm, share: list[tuple[str, int, int]], compression: str
) -> None:
    """One publisher process's share: ("reference" | "entries", start, stop) ranges."""
    publisher = Publisher(settings, topics, throughput_producer(settings, compression))
    for kind, start, stop in share:
        if kind == "reference":
            publisher.send_all(reference_events(firm, start, stop))
        else:
            publisher.send_all(event for pair in entry_events(firm, start, stop) for event in pair)
    publisher.flush()


def publish_firm(
    settings: Settings,
    topics: TopologyTopics,
    firm: Firm,
    entries: int,
    *,
    processes: int = 2,
    compression: str = "lz4",
) -> tuple[int, float]:
    """Master data and `entries` entries with their approvals, split evenly over `processes` publisher
    processes; (records, seconds). Every record is on the broker when it returns."""
    began = time.perf_counter()
    references = reference_count(firm)
    shares: list[list[tuple[str, int, int]]] = []
    for i in range(processes):
        share = [
            ("reference", references * i // processes, references * (i + 1) // processes),
            ("entries", entries * i // processes, entries * (i + 1) // processes),
        ]
        shares.append([(kind, lo, hi) for kind, lo, hi in share if hi > lo])
    spawn = multiprocessing.get_context("spawn")  # no librdkafka state is inherited by a fork
    children = [
        spawn.Process(target=_publish_share, args=(settings, topics, firm, share, compression)) for share in shares
    ]
    for child in children:
        child.start()
    for child in children:
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"a publisher process failed (exit {child.exitcode})")
    return references + 2 * entries, time.perf_counter() - began


# --- observing ---------------------------------------------------------------------------------------------


def committed_reader(settings: Settings, purpose: str) -> Consumer:
    """A group-less read_committed consumer from the beginning (what a downstream system sees)."""
    return Consumer(
        settings.kafka.client_config()
        | {
            "group.id": f"bench-{purpose}-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
        }
    )


def current_ends(consumer: Consumer, topic: str, timeout: float = 30.0) -> list[TopicPartition]:
    """Each partition of `topic` at its current end (waiting out a topic just created without leaders)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions]
            return [TopicPartition(topic, p, end) for p, end in zip(partitions, ends, strict=True)]
        except KafkaException as error:
            retriable = error.args[0].code() in (
                KafkaError.NOT_LEADER_FOR_PARTITION,
                KafkaError.LEADER_NOT_AVAILABLE,
                KafkaError.UNKNOWN_TOPIC_OR_PART,
            )
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the new topic's leaders are being elected


class RecordCounter:
    """Counts the committed records arriving on a topic from now on (from its current end, so runs can
    share an output topic). It reads them: transaction markers take offsets, so the high watermark of a
    transactionally written topic overstates what it holds."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = committed_reader(settings, "count")
        self.consumer.assign(current_ends(self.consumer, topic))
        self.count = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def poll(self, timeout: float = 0.2) -> int:
        """Read what has arrived; the count so far."""
        for message in self.consumer.consume(10_000, timeout):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    print(f"  reader: {error}", file=sys.stderr)
                continue
            self.count += 1
            self.last_at = time.perf_counter()
            if self.first_at is None:
                self.first_at = self.last_at
        return self.count

    def close(self) -> None:
        self.consumer.close()


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident memory (VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """A live process's user + system CPU seconds so far (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_env(settings: Settings, log_level: str = "WARNING") -> dict[str, str]:
    return dict(
        os.environ,
        BACKBONE_KAFKA_BOOTSTRAP_SERVERS=settings.kafka.servers,
        **settings.registry.client_environment(),  # URL and credentials
        BACKBONE_LOG_LEVEL=log_level,
        BACKBONE_LOG_FORMAT="json",
    )


def topology_command(app_id: str, prefix: str) -> list[str]:
    return [sys.executable, "-m", "topology", "--app-id", app_id, "--topic-prefix", prefix]


@dataclass
class Run:
    """A timed run: seconds from start and from the first output to the last, peak RSS per process, and
    the CPU seconds each process spent from the first output to the last (what a loaded machine changes
    least: the rate depends on how much of a core the process got, its CPU per record much less), and
    from its start to the last output.

    The first output is not where the work starts: a processor that emits late (one whose first stage
    runs far ahead of its last) does part of its work before it, so its CPU from the first output to the
    last understates its cost. `total_cpu_s` has no such bias; it includes start-up."""

    records: int
    total_s: float
    steady_s: float
    peak_rss_mib: list[float]
    steady_cpu_s: list[float]
    total_cpu_s: list[float]

    def rate(self, units: int) -> float:
        return units / self.steady_s if self.steady_s > 0 else float("inf")


def run_until(
    settings: Settings,
    commands: Sequence[list[str]],
    topic: str,
    records: int,
    *,
    log_level: str = "WARNING",
    stderr: IO[Any] | None = None,
    stall_s: float = STALL_S,
) -> Run:
    """Start `commands`, wait for `records` committed records on `topic`, stop them (SIGTERM)."""
    counter = RecordCounter(settings, topic)
    started = time.perf_counter()
    env = process_env(settings, log_level)
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr) for command in commands]
    progress, shown = (0, started), 0.0
    cpu_at_first: list[float] | None = None
    try:
        while counter.poll() < records:
            if cpu_at_first is None and counter.count:
                cpu_at_first = [cpu_seconds(p.pid) for p in processes]
            now = time.perf_counter()
            if counter.count != progress[0]:
                progress = (counter.count, now)
            elif now - progress[1] > stall_s:
                raise SystemExit(f"{topic} stalled at {counter.count:,}/{records:,} for {stall_s:.0f}s")
            if any(p.poll() is not None for p in processes):
                raise SystemExit(f"{' '.join(commands[0][1:3])} exited before {records:,} records on {topic}")
            if now - shown >= 2.0:
                shown = now
                print(f"\r  {topic}: {counter.count:,}/{records:,}", end="", file=sys.stderr, flush=True)
        rss = [peak_rss_mib(p.pid) for p in processes]
        firsts = cpu_at_first or [0.0] * len(processes)
        total_cpu = [cpu_seconds(p.pid) for p in processes]
        cpu = [total - first for total, first in zip(total_cpu, firsts, strict=True)]
        done = counter.last_at or time.perf_counter()
        return Run(counter.count, done - started, done - (counter.first_at or done), rss, cpu, total_cpu)
    finally:
        print(file=sys.stderr)
        stop(processes)
        counter.close()


def stop(processes: Sequence[subprocess.Popen[Any]], timeout: float = 60.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def delete_topics(settings: Settings, prefix: str) -> int:
    """Delete every topic whose name contains `prefix` (a run's `bench-<hex>.`, also inside the names of
    the topics Quix and faust made for it), so runs do not pile up on a shared broker; how many."""
    admin = AdminClient(settings.kafka.client_config())
    names = [name for name in admin.list_topics(timeout=10).topics if prefix in name]
    for future in admin.delete_topics(names, operation_timeout=60).values() if names else ():
        future.result()
    return len(names)


def load() -> str:
    """The 1/5/15-minute load averages, for every figure a shared machine reports."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clean_up(settings: Settings, prefix: str, keep_topics: bool) -> None:
    """Delete a run's topics unless asked to keep them, and say which it was."""
    if keep_topics:
        print(f"topics kept: {prefix}*")
    else:
        print(f"deleted this run's {delete_topics(settings, prefix)} topics ({prefix}*; --keep-topics keeps them)")
