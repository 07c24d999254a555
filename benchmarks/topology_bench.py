"""Topology throughput next to four pass-through baselines, in one run, on one broker, on the same input.

Preloads master data (projects, workers, contract versions) and N Avro time entries and N approvals on
fresh topics, then measures, each on the same 2N input records:
  a. plain pass-through: confluent-kafka consuming both input topics in batches and producing the
     same bytes to a sink (no decoding, no state, no transactions): the machine's physical limit;
  b. transactional pass-through: the same bytes through backbone's own client factory
     (`backbone.streams.clients`: read_committed group consumer, transactional producer), one
     transaction with the consumed offsets every commit interval (100 ms): the ceiling of
     `backbone.streams`, which does this plus decoding, the billing core and state;
  b'. (--fan-out) b producing three copies of each record: as many records out as the topology produces
     (six per entry), so what Kafka alone costs the topology's traffic, without any Python work on it;
  c. Quix Streams 3.28.1, exactly-once, one State get/set per record (`quix_passthrough.py`, in the
     separate `.venv-bench-quix`; skip with --no-quix);
  d. faust-streaming pass-through with the settings the topology had on faust (`faust_passthrough.py`,
     the `bench` extra; skip with --no-faust);
  e. the topology, `python -m topology` worker processes, once per entry of --workers-list (fresh app
     ids over the same input topics), timed from the first to the N-th invoice candidate a
     read_committed reader sees (every approved entry yields exactly one), and from process start.
a, b and b' are timed inside this process (first batch consumed → last record delivered / committed,
with the process CPU over the same span;
the median of --baseline-runs runs, each on a fresh group and sink);
c, d and e are processes timed by a read_committed reader of their output. A missing
`.venv-bench-quix` (or faust in .venv) is made by `benchmarks/setup_bench.sh` first.

    .venv/bin/python benchmarks/topology_bench.py --entries 100000 --projects 1000 --workers-list 1,2
    .venv/bin/python benchmarks/topology_bench.py --entries 5000 --no-faust   # a quick check

docs/benchmarks.md has every benchmark's command and what its figures mean.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from workload import (
    ROOT,
    Firm,
    clean_up,
    entry_events,
    load,
    produce,
    publish_firm,
    reference_events,
    run_until,
    stamp,
    topology_command,
)

from backbone.domain.models import Event
from backbone.kafka.admin import apply_topics
from backbone.settings import Settings, load_settings
from backbone.streams import clients
from topology.app import TopologyTopics

QUIX_VENV = ROOT / ".venv-bench-quix"
SETUP = ROOT / "benchmarks" / "setup_bench.sh"
SINK_PARTITIONS = 6
TOPOLOGY_FAN_OUT = 3
"""Records an approved entry's two input records make the topology produce, per input record: a candidate,
a REVENUE and a COST posting, and three changelog records (the entry's state after each, its ledger)."""


def firm(entries: int, projects: int, workers: int) -> tuple[list[Event], list[Event], list[Event]]:
    """Master data, time entries and approvals as lists, without ids (what `core_bench.py` feeds the core)."""
    shape = Firm(projects=projects, workers=workers)
    pairs = list(entry_events(shape, 0, entries, with_ids=False))
    return list(reference_events(shape, with_ids=False)), [e for e, _ in pairs], [a for _, a in pairs]


@dataclass
class Row:
    what: str
    entries_per_s: float
    seconds: float
    load_after: str
    notes: list[str] = field(default_factory=list)
    cpu_us: float | None = None
    """Process CPU per entry (all its threads), first record to the last: steadier than entries/s on a
    shared machine, and comparable between the pass-through and the topology's workers."""


def create_sink(settings: Settings, name: str) -> str:
    admin = AdminClient(settings.kafka.client_config())  # kept alive until the future resolves
    admin.create_topics([NewTopic(name, SINK_PARTITIONS, settings.kafka.replication_factor)])[name].result()
    return name


@dataclass
class Timed:
    """A pass-through's wall seconds and this process's CPU seconds, from its first consumed batch."""

    seconds: float = 0.0
    cpu_s: float = 0.0
    began: float | None = None
    began_cpu: float = 0.0

    def start(self) -> None:
        if self.began is None:
            self.began, self.began_cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Timed:
        began = self.began if self.began is not None else time.perf_counter()
        self.seconds, self.cpu_s = time.perf_counter() - began, time.process_time() - self.began_cpu
        return self


def _consume_batches(consumer: Consumer, records: int, handle: Callable[[list], None], timed: Timed) -> None:
    """Consume until `records` records were handed to `handle`; `timed` starts at the first batch."""
    seen = 0
    while seen < records:
        batch = [m for m in consumer.consume(num_messages=2_000, timeout=1.0) if m.error() is None]
        if batch:
            timed.start()
        handle(batch)
        seen += len(batch)


def plain_pass_through(settings: Settings, sources: list[str], sink: str, records: int) -> Timed:
    """Seconds for a consume-batch → produce-same-bytes loop (offsets committed asynchronously)."""
    config = settings.kafka.client_config()
    consumer = Consumer(
        config
        | {
            "group.id": f"bench-plain-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 50_000_000,
        }
    )
    producer = Producer(
        config | {"enable.idempotence": True, "linger.ms": 5, "batch.size": 1_000_000, "compression.type": "lz4"}
    )
    consumer.subscribe(sources)

    def forward(batch: list) -> None:
        for message in batch:
            produce(producer, sink, message.key(), message.value(), message.headers())
        producer.poll(0)
        if batch:
            consumer.commit(asynchronous=True)

    timed = Timed()
    _consume_batches(consumer, records, forward, timed)
    assert producer.flush(120) == 0
    timed.stop()
    consumer.close()
    return timed


def transactional_pass_through(
    settings: Settings, sources: list[str], sink: str, records: int, copies: int = 1
) -> Timed:
    """Seconds for the runtime's loop without handlers: consume a batch, produce the same bytes (`copies`
    times) in the open transaction, and every commit interval send the consumed offsets and commit."""
    streams = settings.streams
    app = f"bench-tx-{uuid.uuid4().hex[:8]}"
    consumer = clients.group_consumer(settings.kafka, streams, app)
    producer = clients.transactional_producer(settings.kafka, streams, f"{app}-0")
    producer.init_transactions(30)
    consumer.subscribe(sources)
    positions: dict[tuple[str, int], int] = {}
    state = {"open": False, "began": 0.0}

    def commit() -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        positions.clear()
        state["open"] = False

    def forward(batch: list) -> None:
        for message in batch:
            if not state["open"]:
                producer.begin_transaction()
                state.update(open=True, began=time.monotonic())
            for _ in range(copies):
                produce(producer, sink, message.key(), message.value(), message.headers())
            positions[(message.topic(), message.partition())] = message.offset() + 1
        if state["open"] and (time.monotonic() - state["began"]) * 1000 >= streams.commit_interval_ms:
            commit()

    timed = Timed()
    _consume_batches(consumer, records, forward, timed)
    if state["open"]:
        commit()
    timed.stop()
    consumer.close()
    return timed


def ensure_baseline_environments(quix: bool, faust: bool) -> None:
    """Run `setup_bench.sh` when a baseline's environment is missing."""
    missing_quix = quix and not (QUIX_VENV / "bin" / "python").exists()
    missing_faust = faust and subprocess.run([sys.executable, "-c", "import faust"], capture_output=True).returncode
    if missing_quix or missing_faust:
        print("setting up the baselines' environments (benchmarks/setup_bench.sh)", file=sys.stderr)
        subprocess.run(["bash", str(SETUP)], check=True)


def quix_pass_through(settings: Settings, prefix: str, sources: list[str], records: int, interval: float) -> float:
    sink = create_sink(settings, f"{prefix}quix-sink")
    with tempfile.TemporaryDirectory(prefix="bench-quix-") as state_dir:
        command = [
            str(QUIX_VENV / "bin" / "python"),
            "-W",
            "ignore",
            str(ROOT / "benchmarks" / "quix_passthrough.py"),
            *("--broker", settings.kafka.servers, "--app-id", f"{prefix}quix", "--sink", sink),
            *("--state-dir", state_dir, "--commit-interval", str(interval)),
            *sources,
        ]
        return run_until(settings, [command], sink, records).steady_s


def faust_pass_through(settings: Settings, prefix: str, sources: list[str], records: int) -> float:
    sink = create_sink(settings, f"{prefix}faust-sink")
    command = [sys.executable, str(ROOT / "benchmarks" / "faust_passthrough.py"), "--app-id", f"{prefix}faust"]
    return run_until(settings, [[*command, "--sink", sink, *sources]], sink, records).steady_s


def topology_rows(settings: Settings, prefix: str, topics: TopologyTopics, entries: int, workers: int) -> list[Row]:
    app_id = f"{prefix}app-w{workers}"
    run = run_until(settings, [topology_command(app_id, prefix)] * workers, topics.invoice_candidates.name, entries)
    rss = ", ".join(f"{mib:,.0f}" for mib in run.peak_rss_mib)
    cpu = sum(run.steady_cpu_s) / entries * 1e6
    whole_cpu = sum(run.total_cpu_s) / entries * 1e6
    after = load()
    return [
        Row(
            f"e. topology, {workers} worker(s)",
            run.rate(entries),
            run.steady_s,
            after,
            [f"peak RSS per worker (MiB): {rss}", f"workers' CPU per entry, first to last candidate: {cpu:,.0f} µs"],
            cpu,
        ),
        Row(
            f"e. topology, {workers} worker(s), incl. startup",
            entries / run.total_s,
            run.total_s,
            after,
            [f"workers' CPU per entry, start to last candidate: {whole_cpu:,.0f} µs"],
        ),
    ]


def report(rows: list[Row], entries: int) -> None:
    tx_row = next((r for r in rows if r.what.startswith("b.")), None)
    tx = tx_row.entries_per_s if tx_row else None
    tx_cpu = tx_row.cpu_us if tx_row else None
    plain = next((r.entries_per_s for r in rows if r.what.startswith("a.")), None)

    def ratio(rate: float, base: float | None) -> str:
        return f"{rate / base:.1%}" if base else "-"

    def cpu(row: Row) -> str:
        if row.cpu_us is None:
            return "- | -"
        return f"{row.cpu_us:,.1f} | {row.cpu_us / tx_cpu:.1f}×" if tx_cpu else f"{row.cpu_us:,.1f} | -"

    header = (
        "entries/s | seconds | vs transactional pass-through | vs plain pass-through | "
        "CPU µs per entry | CPU vs transactional | load after"
    )
    print(f"\n| what ({entries:,} entries + {entries:,} approvals) | {header} |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row.what} | {row.entries_per_s:,.0f} | {row.seconds:.1f} | {ratio(row.entries_per_s, tx)} | "
            f"{ratio(row.entries_per_s, plain)} | {cpu(row)} | {row.load_after} |"
        )
    for row in rows:
        for note in row.notes:
            print(f"- {row.what}: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="time entries, each with its approval")
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--workers-in-firm", type=int, default=200, help="consultants in the simulated firm")
    parser.add_argument("--workers-list", default="1,2", help="topology worker counts to measure, e.g. 1,2")
    parser.add_argument("--publishers", type=int, default=2, help="processes publishing the input")
    parser.add_argument(
        "--compression", default="none", help="of the input, as the connectors publish (faust cannot read lz4)"
    )
    parser.add_argument("--no-plain", action="store_true", help="skip the plain pass-through (a)")
    parser.add_argument("--no-transactional", action="store_true", help="skip the transactional pass-through (b)")
    parser.add_argument(
        "--fan-out",
        action="store_true",
        help=f"also b': b with {TOPOLOGY_FAN_OUT} copies out per record in, the topology's record count",
    )
    parser.add_argument("--no-quix", action="store_true", help="skip the Quix Streams pass-through (c)")
    parser.add_argument("--no-faust", action="store_true", help="skip the faust pass-through (d)")
    parser.add_argument(
        "--baseline-runs", type=int, default=3, help="runs of a and b (seconds each at 100k entries); the median"
    )
    parser.add_argument("--quix-commit-interval", type=float, default=0.1, help="seconds (Quix's default: 5)")
    parser.add_argument("--keep-topics", action="store_true", help="leave this run's topics on the broker")
    args = parser.parse_args()
    workers_list = [int(w) for w in args.workers_list.split(",") if w.strip()]
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows in a log file
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"started {stamp()}, load average {load()}")
    ensure_baseline_environments(not args.no_quix, not args.no_faust)

    settings = load_settings()
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    topics = TopologyTopics.prefixed(prefix)
    apply_topics(AdminClient(settings.kafka.client_config()), topics.all())
    shape = Firm(projects=args.projects, workers=args.workers_in_firm)
    records, seconds = publish_firm(
        settings, topics, shape, args.entries, processes=args.publishers, compression=args.compression
    )
    print(f"preloaded {records:,} records in {seconds:.1f}s ({records / seconds:,.0f} records/s), load {load()}")

    sources = [topics.time_entries.name, topics.approvals.name]
    inputs = 2 * args.entries
    rows: list[Row] = []

    def measure(what: str, seconds: float, runs: list[Timed] | None = None) -> None:
        notes, cpu_us = [], None
        if runs:
            cpu_us = statistics.median(r.cpu_s for r in runs) / args.entries * 1e6
            notes.append(f"median of {len(runs)} runs: {', '.join(f'{r.seconds:.2f}' for r in runs)} s")
            notes.append(f"process CPU per entry, median: {cpu_us:,.1f} µs")
        rows.append(Row(what, args.entries / seconds, seconds, load(), notes, cpu_us))
        print(f"{what}: {args.entries / seconds:,.0f} entries/s ({seconds:.1f}s), load {rows[-1].load_after}")

    if not args.no_plain:
        runs = [
            plain_pass_through(settings, sources, create_sink(settings, f"{prefix}plain-sink-{i}"), inputs)
            for i in range(args.baseline_runs)
        ]
        measure("a. plain pass-through (confluent-kafka)", statistics.median(r.seconds for r in runs), runs)
    if not args.no_transactional:
        runs = [
            transactional_pass_through(settings, sources, create_sink(settings, f"{prefix}tx-sink-{i}"), inputs)
            for i in range(args.baseline_runs)
        ]
        interval = settings.streams.commit_interval_ms
        measure(
            f"b. transactional pass-through ({interval} ms commits)", statistics.median(r.seconds for r in runs), runs
        )
    if args.fan_out:
        runs = [
            transactional_pass_through(
                settings, sources, create_sink(settings, f"{prefix}fan-sink-{i}"), inputs, copies=TOPOLOGY_FAN_OUT
            )
            for i in range(args.baseline_runs)
        ]
        measure(
            f"b'. transactional pass-through, {TOPOLOGY_FAN_OUT} records out per record in",
            statistics.median(r.seconds for r in runs),
            runs,
        )
    if not args.no_quix:
        seconds = quix_pass_through(settings, prefix, sources, inputs, args.quix_commit_interval)
        measure(f"c. Quix Streams 3.28.1 exactly-once stateful ({args.quix_commit_interval:g} s commits)", seconds)
    if not args.no_faust:
        seconds = faust_pass_through(settings, prefix, sources, inputs)
        measure("d. faust pass-through (the topology's old faust settings)", seconds)
    for workers in workers_list:
        for row in topology_rows(settings, prefix, topics, args.entries, workers):
            rows.append(row)
            print(f"{row.what}: {row.entries_per_s:,.0f} entries/s ({row.seconds:.1f}s) {'; '.join(row.notes)}")
    report(rows, args.entries)
    print(f"\nfinished {stamp()}, load average {load()}")
    clean_up(settings, prefix, args.keep_topics)


if __name__ == "__main__":
    main()
