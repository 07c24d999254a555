"""The topology's handlers alone: what one worker spends per entry besides Kafka itself, in one process.

Runs `topology.stages.BillingStages` exactly as a worker does (`entry` on every time entry and approval,
which prices each change in its book at once, as a worker holding every partition does; with
`--through-topic`, `book` on every book command the entry stage produced instead), with the worker's
garbage-collector settings, over records encoded by the catalog's
serdes, with an in-memory registry (confluent-kafka's mock client) and a context that keeps what the
handlers produce instead of sending it. Every `--commit-every` records the stores are flushed, as the
worker's commit does, so changelog encoding is included. What it leaves out is what the transactional
pass-through of `topology_bench.py` measures: consuming, producing and committing.

It reports CPU microseconds per entry for each stage and the entries/s the handlers alone allow, the
median of `--rounds` rounds; `--profile` prints where the time goes; `--digest` prints a SHA-256 of
every record the handlers produced (outputs with their keys and headers, changelog records), so a
change meant to be invisible can be shown to leave every byte as it was (internal book commands are
left out of it, as they are the stages' private format: what they carry shows in the outputs).

    .venv/bin/python benchmarks/stages_bench.py --entries 20000 --projects 200 [--profile] [--digest]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from confluent_kafka import Message
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from workload import Firm, entry_events, reference_events

from backbone.domain.models import Event
from backbone.domain.routing import parse_routing
from backbone.kafka import topics as catalog
from backbone.kafka.serde import SerdeCache
from backbone.streams.loop import GC_THRESHOLDS, keep_for_good
from backbone.streams.memory import MemoryContext, Produced
from backbone.streams.partitioner import murmur2_partition
from backbone.streams.state import StateStores
from topology.app import INTERNAL_PARTITIONS
from topology.messages import Position
from topology.reference import ReferenceStore
from topology.stages import BillingStages, TopologyTopics, event_headers

ROUTING = Path(__file__).resolve().parents[1] / "topology" / "routing.toml"
APP = "stages-bench"


def build(
    projects: int, workers: int, disk: Path | None = None
) -> tuple[BillingStages, MemoryContext, SerdeCache, TopologyTopics]:
    """The stages over a reference store holding the firm; entries and ledgers on `disk` as in a worker
    (None: in memory)."""
    topics = TopologyTopics()
    internal = catalog.internal_topics(APP, INTERNAL_PARTITIONS)
    serdes = SerdeCache(MockSchemaRegistryClient({"url": "mock://"}))
    reference = ReferenceStore()
    routing = parse_routing(ROUTING.read_text())
    stages = BillingStages(topics, internal, serdes, reference, lambda: routing)
    for offset, event in enumerate(reference_events(Firm(projects=projects, workers=workers))):
        reference.apply(event, Position(topic=f"ref.{event.event_type}", partition=0, offset=offset))  # type: ignore[arg-type]
    stores = StateStores((stages.entry_store, stages.ledger_store, stages.rejection_store), disk)
    return stages, MemoryContext(stores, INTERNAL_PARTITIONS), serdes, topics


def input_messages(serdes: SerdeCache, topics: TopologyTopics, firm: Firm, entries: int) -> list[Message]:
    """Each entry's time entry and approval as consumed records, on their key's murmur2 partition."""
    messages = []
    for offset, (entry, approval) in enumerate(entry_events(firm, 0, entries)):
        for topic, event in ((topics.time_entries, entry), (topics.approvals, approval)):
            messages.append(_message(topic.name, serdes.for_topic(topic).encode_value(event), event, offset))
    return messages


def _message(topic: str, value: bytes, event: Event, offset: int) -> Message:
    key = event.key.encode()
    return Message(
        topic=topic,
        partition=murmur2_partition(key, INTERNAL_PARTITIONS),
        offset=offset,
        key=key,
        value=value,
        headers=event_headers(event),
        timestamp=(1, int(time.time() * 1000)),
    )


def consumed(record: Produced, offset: int) -> Message:
    return Message(
        topic=record.topic,
        partition=record.partition,
        offset=offset,
        key=record.key,
        value=record.value,
        headers=record.headers,
        timestamp=(1, int(time.time() * 1000)),
    )


def run(
    projects: int, workers: int, entries: int, commit_every: int, on_disk: bool = True, in_place: bool = True
) -> tuple[dict[str, float], list[Produced]]:
    """CPU seconds of each stage over `entries` entries, and every record produced (changelogs included).

    `in_place`: the entry stage prices each change in its book at once, as a worker holding every partition
    does; otherwise every change goes through the book commands, as to a book another worker holds."""
    with tempfile.TemporaryDirectory(prefix="stages-bench-") as state:
        disk = Path(state) / "state" if on_disk else None
        return _run(projects, workers, entries, commit_every, disk, in_place)


def _run(
    projects: int, workers: int, entries: int, commit_every: int, disk: Path | None, in_place: bool
) -> tuple[dict[str, float], list[Produced]]:
    stages, context, serdes, topics = build(projects, workers, disk)
    messages = input_messages(serdes, topics, Firm(projects=projects, workers=workers), entries)
    gc.set_threshold(*GC_THRESHOLDS)  # the garbage collector as in a worker: master data (and here the
    keep_for_good()  # input, which a worker would be fetching) out of its sight, young collections rare
    context.holding = in_place
    changelog: list[Produced] = []
    cpu: dict[str, float] = {}
    began = time.process_time()
    for n, message in enumerate(messages, 1):
        stages.entry(message, context)
        if n % commit_every == 0:
            changelog += context.flush()
    changelog += context.flush()
    cpu["entries"] = time.process_time() - began
    commands = [consumed(r, n) for n, r in enumerate(context.take_produced([stages.internal.book_commands.name]))]
    began = time.process_time()
    for n, message in enumerate(commands, 1):
        stages.book(message, context)
        if n % commit_every == 0:
            changelog += context.flush()
    changelog += context.flush()
    cpu["books"] = time.process_time() - began
    assert sum(r.topic == topics.invoice_candidates.name for r in context.produced) == entries
    # a flush writes a store's dirty keys in set order, which changes with the interpreter's hash seed
    changelog.sort(key=lambda r: (r.topic, r.partition or 0, r.key or b""))
    context.stores.close()
    return cpu, context.produced + changelog


def digest(records: list[Produced]) -> str:
    sha = hashlib.sha256()
    for record in records:
        sha.update(f"{record.topic}\x00{record.partition}\x00".encode())
        sha.update(record.key or b"")
        sha.update(b"\x00")
        sha.update(repr(record.headers).encode())
        sha.update(b"\x00")
        sha.update(record.value or b"")
        sha.update(b"\x01")
    return sha.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--workers-in-firm", type=int, default=200)
    parser.add_argument("--commit-every", type=int, default=1_000, help="records between store flushes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--digest", action="store_true")
    parser.add_argument("--memory", action="store_true", help="entries and ledgers in memory, not on disk")
    parser.add_argument(
        "--through-topic",
        action="store_true",
        help="send every entry change through the book commands, as to a book another worker holds",
    )
    args = parser.parse_args()
    shape = (
        args.projects,
        args.workers_in_firm,
        args.entries,
        args.commit_every,
        not args.memory,
        not args.through_topic,
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, *shape)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(45)
        return
    rounds = [run(*shape) for _ in range(args.rounds)]
    per_entry = {
        stage: statistics.median(r[0][stage] for r in rounds) / args.entries * 1e6 for stage in ("entries", "books")
    }
    total = sum(per_entry.values())
    print(
        f"topology handlers: entries stage {per_entry['entries']:.1f} µs + books stage {per_entry['books']:.1f} µs "
        f"= {total:.1f} µs CPU per entry, {1e6 / total:,.0f} entries/s without Kafka "
        f"(median of {args.rounds}; {args.entries:,} entries, {args.projects:,} projects)"
    )
    if args.digest:
        outputs = [r for r in rounds[0][1] if not r.topic.endswith("-book-commands")]
        print(f"digest of {len(outputs):,} produced records: {digest(outputs)}")


if __name__ == "__main__":
    main()
