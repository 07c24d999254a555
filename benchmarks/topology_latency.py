"""Approval → invoice-candidate latency of the topology at a steady offered rate.

Publishes master data and one warm-up entry, starts `--topology-workers` `python -m topology` worker
processes (one by default) and waits for the warm-up entry's candidate, then offers time entries, each
followed by its approval, at `--rate` entries/s for `--warmup-seconds` (not counted) plus `--seconds`.
The pacing is a token bucket on the monotonic clock, refilled every `--batch-ms` and published in
those small batches; all records are encoded before the clock starts, so encoding cannot slow it. A
read_committed consumer in this process notes each candidate's arrival time. An entry's latency is its
candidate's arrival at that consumer minus the moment its approval was handed to the producer (both on
this machine's wall clock), reported as p50 / p95 / p99 / max with the rate actually offered. The target
(docs/benchmarks.md): p99 ≤ 250 ms at 1,000 entries/s.

    .venv/bin/python benchmarks/topology_latency.py --rate 1000 --seconds 30
    .venv/bin/python benchmarks/topology_latency.py --rate 200 --seconds 10    # a quick check
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient
from workload import (
    ROOT,
    Firm,
    Publisher,
    RecordCounter,
    clean_up,
    committed_reader,
    current_ends,
    entry_events,
    load,
    peak_rss_mib,
    process_env,
    produce,
    reference_events,
    stamp,
    stop,
    throughput_producer,
    topology_command,
)

from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.settings import Settings, load_settings
from topology.app import TopologyTopics

WARM_UP_DEADLINE_S = 180.0
DRAIN_DEADLINE_S = 60.0


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class TokenBucket:
    """`rate` tokens a second on the monotonic clock, at most `capacity` saved up."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = 0.0
        self.updated = time.monotonic()

    def take(self) -> int:
        """The whole tokens available now (removed from the bucket)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        whole = int(self.tokens)
        self.tokens -= whole
        return whole


class Arrivals(threading.Thread):
    """Notes the wall-clock arrival of every committed record on a topic from its current end."""

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = committed_reader(settings, "latency")
        self.consumer.assign(current_ends(self.consumer, topic))
        self.arrived: list[tuple[float, Message]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            # the first record as soon as it is there, then what is already fetched: consume(1000, 0.05)
            # would hold the records it has until 1,000 arrive or 50 ms pass, adding up to 50 ms to each
            first = self.consumer.poll(0.05)
            if first is None:
                continue
            messages = [first, *self.consumer.consume(999, 0)]
            now = time.time()
            self.arrived += [(now, m) for m in messages if m.error() is None]
        self.consumer.close()


def encoded(settings: Settings, topics: TopologyTopics, firm: Firm, count: int) -> list[tuple[str, Record, Record]]:
    """(entry id, time entry record, approval record) for entries 1..count, encoded up front."""
    publisher = Publisher(settings, topics, Producer(settings.kafka.client_config()))
    out = []
    for entry, approval in entry_events(firm, 1, count + 1):
        pair = []
        for event in (entry, approval):
            topic = publisher.by_type[event.event_type]
            value = publisher.serdes.for_topic(topic).encode_value(event)
            pair.append(Record(topic.name, event.key.encode(), value, [("event_type", event.event_type.encode())]))
        out.append((entry.key, pair[0], pair[1]))
    return out


def offer(producer: Producer, records: list[tuple[str, Record, Record]], rate: float, batch_ms: float) -> dict:
    """Publish at `rate` entries/s; {entry id: wall time its approval was handed to the producer}."""
    # 50 ms of tokens may be saved up: a late wake-up on a busy machine catches up instead of losing them
    bucket = TokenBucket(rate, capacity=max(2.0, rate * 0.05))
    approved: dict[str, float] = {}
    sent = 0
    while sent < len(records):
        for entry_id, entry, approval in records[sent : sent + bucket.take()]:
            produce(producer, entry.topic, entry.key, entry.value, entry.headers)
            approved[entry_id] = time.time()
            produce(producer, approval.topic, approval.key, approval.value, approval.headers)
            sent += 1
        producer.poll(0)
        time.sleep(batch_ms / 1000)  # the pacing of the load generator, not a wait on a result
    return approved


def print_breakdown(
    approved: dict[str, float],
    counted: set[str],
    candidates: list[tuple[float, Message]],
    commands: list[tuple[float, Message]],
    serde: Any,
) -> None:
    """Each entry's latency in parts, from the records' create times (set when the worker produced them)
    and their arrival at a read_committed reader (once their transaction committed).

    An entry priced in place (its worker held its book) crossed one transaction: approval handed →
    candidate produced (fetch, queue and processing); → candidate visible (the transaction and this
    reader's fetch). One whose change went through the book-commands topic crossed two: approval handed →
    book command produced (the entry stage's fetch and queue); → command visible (the first
    transaction); → candidate produced (the books stage's fetch and queue); → candidate visible (the
    second transaction and this reader's fetch)."""
    command_at: dict[str, tuple[float, float]] = {}
    for at, message in commands:
        command = orjson.loads(message.value() or b"null")
        if isinstance(command, list):  # an entry change (reference commands are JSON objects)
            command_at.setdefault(command[1], (message.timestamp()[1] / 1000, at))
    candidate_at: dict[str, tuple[float, float]] = {}
    for at, message in candidates:
        entry_id = serde.decode(message).time_entry_id
        candidate_at.setdefault(entry_id, (message.timestamp()[1] / 1000, at))
    in_place: list[list[float]] = [[], []]
    through_topic: list[list[float]] = [[], [], [], []]
    for entry_id in counted:
        if entry_id not in candidate_at:
            continue
        command = command_at.get(entry_id)
        marks = (approved[entry_id], *(command or ()), *candidate_at[entry_id])
        parts = in_place if command is None else through_topic
        for part, (start, end) in zip(parts, itertools.pairwise(marks), strict=True):
            part.append((end - start) * 1000)
    _print_parts(
        "priced in place (one transaction)",
        in_place,
        ("approval → candidate produced", "candidate produced → visible"),
    )
    _print_parts(
        "through the book-commands topic (two transactions)",
        through_topic,
        (
            "approval → command produced",
            "command produced → visible",
            "visible → candidate produced",
            "candidate produced → visible",
        ),
    )


def _print_parts(path: str, parts: list[list[float]], names: tuple[str, ...]) -> None:
    if not parts[0]:
        return
    print(f"breakdown of the {len(parts[0]):,} entries {path} (ms):")
    for name, part in zip(names, parts, strict=True):
        part.sort()
        cuts = ", ".join(f"p{round(q * 100)} {percentile(part, q):,.0f}" for q in (0.5, 0.95, 0.99))
        print(f"  {name:<30} {cuts}, max {part[-1]:,.0f}")


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000, help="entries (each with its approval) offered per second")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds")
    parser.add_argument("--warmup-seconds", type=float, default=3, help="offered at the rate first, not counted")
    parser.add_argument("--batch-ms", type=float, default=5, help="publish the due entries every this often")
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--workers-in-firm", type=int, default=200)
    parser.add_argument("--topology-workers", type=int, default=1)
    parser.add_argument("--linger-ms", type=int, default=1, help="of the load generator's producer")
    parser.add_argument("--keep-topics", action="store_true", help="leave this run's topics on the broker")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also follow the internal book commands and split each latency into the hops it crossed",
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows in a log file
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"started {stamp()}, load average {load()}")
    settings = load_settings()
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    topics = TopologyTopics.prefixed(prefix)
    apply_topics(AdminClient(settings.kafka.client_config()), topics.all())
    firm = Firm(projects=args.projects, workers=args.workers_in_firm)
    warm_up = int(args.rate * args.warmup_seconds)
    measured = int(args.rate * args.seconds)
    publisher = Publisher(settings, topics, throughput_producer(settings, "none"))
    publisher.send_all(reference_events(firm))
    publisher.send_all(iter(next(entry_events(firm, 0, 1))))
    publisher.flush()
    records = encoded(settings, topics, firm, warm_up + measured)

    counter = RecordCounter(settings, topics.invoice_candidates.name)
    command = topology_command(f"{prefix}app", prefix)
    workers = [subprocess.Popen(command, cwd=ROOT, env=process_env(settings)) for _ in range(args.topology_workers)]
    try:
        deadline = time.monotonic() + WARM_UP_DEADLINE_S
        while counter.poll() < 1:
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise SystemExit("the topology priced no warm-up entry; see its output above")
        counter.close()
        arrivals = Arrivals(settings, topics.invoice_candidates.name)
        arrivals.start()
        commands = Arrivals(settings, f"{prefix}app-book-commands") if args.breakdown else None
        if commands is not None:
            commands.start()
        producer = Producer(
            settings.kafka.client_config()
            | {"enable.idempotence": True, "linger.ms": args.linger_ms, "partitioner": "murmur2_random"}
        )
        began = time.monotonic()
        approved = offer(producer, records, args.rate, args.batch_ms)
        offered_s = time.monotonic() - began
        producer.flush(60)
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        while len(arrivals.arrived) < len(records) and time.monotonic() < deadline:
            time.sleep(0.2)  # waiting for the last candidates, bounded by the deadline
        for thread in (arrivals, commands):
            if thread is not None:
                thread.done.set()
                thread.join()
        rss = [peak_rss_mib(w.pid) for w in workers]
    finally:
        stop(workers)
    serde = SerdeCache(registry_client(settings.registry.client_config())).for_topic(topics.invoice_candidates)
    counted = {entry_id for entry_id, _, _ in records[warm_up:]}
    arrived: dict[str, float] = {}
    for at, message in arrivals.arrived:
        entry_id = serde.decode(message).time_entry_id  # type: ignore[attr-defined]
        arrived.setdefault(entry_id, at)
    latencies = sorted((arrived[e] - approved[e]) * 1000 for e in counted if e in arrived)
    achieved = len(records) / offered_s
    print(
        f"offered {args.rate:,.0f} entries/s for {args.warmup_seconds:g}+{args.seconds:g}s: achieved "
        f"{achieved:,.0f} entries/s ({len(records):,} entries, {2 * len(records):,} records)"
    )
    if len(latencies) < len(counted):
        print(f"only {len(latencies):,} of {len(counted):,} entries were priced within {DRAIN_DEADLINE_S:.0f}s")
    if latencies:
        cuts = ", ".join(f"p{round(q * 100)} {percentile(latencies, q):,.0f} ms" for q in (0.5, 0.95, 0.99))
        print(f"approval → candidate latency over {len(latencies):,} entries: {cuts}, max {latencies[-1]:,.0f} ms")
    if commands is not None:
        print_breakdown(approved, counted, arrivals.arrived, commands.arrived, serde)
    print(f"peak RSS per worker (MiB): {', '.join(f'{mib:,.0f}' for mib in rss)}")
    print(f"finished {stamp()}, load average {load()}")
    clean_up(settings, prefix, args.keep_topics)


if __name__ == "__main__":
    main()
