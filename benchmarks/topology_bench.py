"""Topology throughput next to a raw confluent-kafka pass-through, measured in one run on one broker.

Preloads master data (projects, workers, one contract per project), N time entries and N approvals
on fresh topics, then measures
  1. the baseline: one confluent-kafka process consuming both input topics in batches and producing
     the same bytes to another topic (no decoding, no state) — the physical limit of this machine;
  2. the framework's ceiling: a faust app with the topology's settings forwarding the same records
     unchanged (`faust_passthrough.py`; skip it with --no-faust-baseline);
  3. the topology: `python -m topology` worker processes on the same input, timed from the first to
     the N-th invoice candidate on the output topic (and from process start, which includes startup).
Every approved entry yields exactly one TIME candidate, so "N candidates on the topic" means done.
Usage (against a running `backbone up`, or BACKBONE_KAFKA_BOOTSTRAP_SERVERS/BACKBONE_SCHEMA_REGISTRY_URL):

    .venv/bin/python benchmarks/topology_bench.py --entries 100000 --projects 1000 --workers 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

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
from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.settings import Settings, load_settings
from producers.emitter import with_envelope_defaults
from topology.app import TopologyTopics

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 2, tzinfo=UTC)
STALL_S = 120.0
"""A run whose output has not grown for this long is reported as stalled, not waited on forever."""


def firm(entries: int, projects: int, workers: int) -> tuple[list[Event], list[Event], list[Event]]:
    """Master data, time entries and their approvals of a firm whose every entry bills."""
    env = {"occurred_at": T0, "source_system": "bench"}
    reference: list[Event] = [
        Client(**env, client_id="C1", name="Globex", billing_entity="ACME", currency="EUR", active=True)
    ]
    reference += [
        Worker(
            **env,
            worker_id=f"W{w}",
            name=f"W{w}",
            role=("senior", "consultant")[w % 2],
            employment_type="EMPLOYEE",
            cost_rate=Decimal("55.25"),
            cost_currency="EUR",
            active=True,
        )
        for w in range(workers)
    ]
    for p in range(projects):
        reference.append(
            Project(
                **env,
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
        )
        reference.append(
            ContractVersion(
                **env,
                contract_id=f"K{p}",
                version=1,
                project_id=f"P{p}",
                status="ACTIVE",
                effective_from=date(2026, 1, 1),
                currency="EUR",
                tax_code="VAT20",
                default_hourly_rate=Decimal("150.00"),
                rounding_increment_minutes=6,
                rate_card=(RateCardLine(role="senior", hourly_rate=Decimal("210.00")),),
            )
        )
    time_entries, approvals = [], []
    for n in range(entries):
        entry_id = f"E{n}"
        time_entries.append(
            TimeEntry(
                occurred_at=T0 + timedelta(seconds=n),
                source_system="bench",
                time_entry_id=entry_id,
                revision=1,
                worker_id=f"W{n % workers}",
                project_id=f"P{n % projects}",
                work_date=date(2026, 11, 1 + n % 28),
                duration_seconds=900 + (n * 37) % 28_000,
                billable=True,
            )
        )
        approvals.append(
            ApprovalDecision(
                occurred_at=T0 + timedelta(seconds=n),
                source_system="bench",
                time_entry_id=entry_id,
                revision=1,
                decision="APPROVED",
                approver_id="M1",
                decided_at=T0 + timedelta(seconds=n),
            )
        )
    return reference, time_entries, approvals


def produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
    """Queue one record, serving delivery reports while librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)


def publish(settings: Settings, topics: TopologyTopics, events: list[Event]) -> float:
    serdes = SerdeCache(registry_client(settings.registry.client_config()))
    by_type = {
        "client": topics.clients,
        "project": topics.projects,
        "worker": topics.workers,
        "contract": topics.contracts,
        "time-entry": topics.time_entries,
        "approval": topics.approvals,
    }
    producer = Producer(
        settings.kafka.client_config()
        | {"enable.idempotence": True, "linger.ms": 20, "batch.size": 1_000_000, "partitioner": "murmur2_random"}
    )
    began = time.perf_counter()
    for event in map(with_envelope_defaults, events):  # event and correlation ids, as connectors publish
        topic = by_type[event.event_type]
        value = serdes.for_topic(topic).encode_value(event)
        produce(producer, topic.name, event.key.encode(), value, [("event_type", event.event_type.encode())])
        producer.poll(0)
    assert producer.flush(120) == 0
    return time.perf_counter() - began


def pass_through(settings: Settings, sources: list[str], records: int) -> float:
    """Seconds for a raw consume-batch → produce-same-bytes loop over `records` input records."""
    config = settings.kafka.client_config()
    sink = f"{sources[0]}.passthrough"
    admin = AdminClient(config)  # kept alive until the future resolves
    admin.create_topics([NewTopic(sink, 6, 1)])[sink].result()
    consumer = Consumer(
        config
        | {
            "group.id": f"bench-pass-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 50_000_000,
        }
    )
    producer = Producer(config | {"enable.idempotence": True, "linger.ms": 5, "batch.size": 1_000_000})
    consumer.subscribe(sources)
    seen, began = 0, None
    while seen < records:
        batch = consumer.consume(num_messages=10_000, timeout=1.0)
        if batch and began is None:
            began = time.perf_counter()
        for message in batch:
            if message.error() is not None:
                continue
            produce(producer, sink, message.key(), message.value(), message.headers())
            seen += 1
        producer.poll(0)
        consumer.commit(asynchronous=True)
    assert producer.flush(120) == 0
    elapsed = time.perf_counter() - (began or time.perf_counter())
    consumer.close()
    return elapsed


def faust_pass_through(settings: Settings, prefix: str, sources: list[str], records: int) -> float:
    """Seconds from the first to the last of `records` records a faust pass-through app forwarded."""
    sink = f"{prefix}faust-passthrough"
    admin = AdminClient(settings.kafka.client_config())
    admin.create_topics([NewTopic(sink, 6, 1)])[sink].result()
    command = [sys.executable, str(ROOT / "benchmarks" / "faust_passthrough.py"), "--app-id", f"{prefix}faust"]
    return time_until(settings, [[*command, "--sink", sink, *sources]], sink, 6, records)[0]


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_until(
    settings: Settings, commands: list[list[str]], topic: str, partitions: int, records: int
) -> tuple[float, float, list[float]]:
    """Start `commands`; seconds from the first to the `records`-th record on `topic` and from start to it,
    and each process's peak RSS in MiB."""
    env = dict(
        os.environ,
        BACKBONE_KAFKA_BOOTSTRAP_SERVERS=settings.kafka.servers,
        BACKBONE_SCHEMA_REGISTRY_URL=settings.registry.endpoint,
        BACKBONE_LOG_LEVEL="WARNING",
    )
    reader = Consumer(settings.kafka.client_config() | {"group.id": f"bench-read-{uuid.uuid4().hex[:8]}"})
    started = time.perf_counter()
    processes = [subprocess.Popen(command, cwd=ROOT, env=env) for command in commands]
    first, progress = None, (0, started)
    try:
        while True:
            done = records_on(settings, topic, partitions, reader)
            now = time.perf_counter()
            if done and first is None:
                first = now
            if done >= records:
                return now - (first or now), now - started, [peak_rss_mib(p.pid) for p in processes]
            if done != progress[0]:
                progress = (done, now)
            elif now - progress[1] > STALL_S:
                raise SystemExit(f"{topic} stalled at {done:,}/{records:,} for {STALL_S:.0f}s; see the output above")
            if any(p.poll() is not None for p in processes):
                raise SystemExit(f"{commands[0][1]} exited; see its output above")
            print(f"\r  {topic}: {done:,}/{records:,}", end="", file=sys.stderr, flush=True)
            time.sleep(0.2)  # a progress poll of a benchmark, not a test
    finally:
        print(file=sys.stderr)
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        reader.close()


def records_on(settings: Settings, topic: str, partitions: int, reader: Consumer) -> int:
    """Records on `topic` so far (0 while a topic just created has no leader yet)."""
    try:
        return sum(
            reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in range(partitions)
        )
    except KafkaException as error:
        if error.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
            raise
        return 0


def run_topology(
    settings: Settings, prefix: str, topics: TopologyTopics, entries: int, workers: int
) -> tuple[float, float, list[float]]:
    """(seconds from first to last candidate, from process start to last candidate, peak RSS MiB each)."""
    command = [sys.executable, "-m", "topology", "--app-id", f"{prefix}app", "--topic-prefix", prefix]
    candidates = topics.invoice_candidates
    return time_until(settings, [command] * workers, candidates.name, candidates.partitions, entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--workers-in-firm", type=int, default=200, help="consultants in the simulated firm")
    parser.add_argument("--workers", type=int, default=1, help="topology worker processes")
    parser.add_argument("--no-faust-baseline", action="store_true", help="skip the faust pass-through")
    args = parser.parse_args()
    settings = load_settings()
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    topics = TopologyTopics.prefixed(prefix)
    apply_topics(AdminClient(settings.kafka.client_config()), topics.all())
    reference, time_entries, approvals = firm(args.entries, args.projects, args.workers_in_firm)
    seconds = publish(settings, topics, reference + time_entries + approvals)
    print(f"preloaded {len(reference):,} reference events, {args.entries:,} entries and approvals in {seconds:.1f}s")

    sources = [topics.time_entries.name, topics.approvals.name]
    baseline = pass_through(settings, sources, 2 * args.entries)
    baseline_rate = args.entries / baseline
    print(
        f"pass-through (confluent-kafka, same bytes): {2 * args.entries / baseline:,.0f} records/s "
        f"= {baseline_rate:,.0f} entries/s (entry + approval per entry)"
    )

    faust_rate = None
    if not args.no_faust_baseline:
        faust_rate = args.entries / faust_pass_through(settings, prefix, sources, 2 * args.entries)
        print(
            f"faust pass-through (same bytes, topology settings): {2 * faust_rate:,.0f} records/s = "
            f"{faust_rate:,.0f} entries/s"
        )

    steady, total, rss = run_topology(settings, prefix, topics, args.entries, args.workers)
    rate = args.entries / steady if steady else float("inf")
    print(
        f"topology ({args.workers} worker(s)): {rate:,.0f} entries/s first→last candidate "
        f"({steady:.1f}s); {args.entries / total:,.0f} entries/s including startup ({total:.1f}s)"
    )
    print(f"peak RSS per worker: {', '.join(f'{mib:,.0f} MiB' for mib in rss)}")
    print(f"ratio topology / pass-through: {rate / baseline_rate:.1%}")
    if faust_rate:
        print(
            f"ratio topology / faust pass-through: {rate / faust_rate:.1%}; "
            f"faust pass-through / pass-through: {faust_rate / baseline_rate:.1%}"
        )


if __name__ == "__main__":
    main()
