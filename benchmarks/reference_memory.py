"""Master data in one topology worker: the bytes it keeps per reference event and the CPU it spends loading them.

Every topology worker follows every partition of the `ref.*` topics and keeps the latest event per key
(`topology.reference.ReferenceStore`). This benchmark encodes the replay firm's master data (the
defaults are `replay_bench.py`'s: 100,000 projects, 100,000 contract versions, 20,000 consultants) with
the catalog's serdes and an in-memory registry (confluent-kafka's mock client), then feeds the records
through the path a worker takes (`topology.reference.ReferenceFollower`: decode, then
`ReferenceStore.apply`). It reports:

  - the bytes tracemalloc sees allocated and kept per event of each type, and in all, once every
    record is applied (the records' own bytes are allocated before tracemalloc starts, so they are not
    counted; decoding's garbage is freed, so only what the store keeps is);
  - the CPU microseconds per event of decode + apply, per type, the median of `--rounds` rounds
    without tracemalloc (a fresh store each round).

    .venv/bin/python benchmarks/reference_memory.py [--projects 100000 --contracts 100000 --workers-in-firm 20000]

To compare two trees in one run, run it alternately with `PYTHONPATH=<tree>` (the script and
`workload.py` come from this directory; backbone and topology from the path).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Iterable

from confluent_kafka import Message
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from workload import Firm, reference_events

from backbone.kafka import topics as catalog
from backbone.kafka.serde import SerdeCache
from backbone.streams.partitioner import murmur2_partition
from topology.reference import ReferenceFollower, ReferenceStore

TOPICS = {t.event_type: t for t in (catalog.CLIENTS, catalog.PROJECTS, catalog.WORKERS, catalog.CONTRACTS)}


def encoded(firm: Firm, serdes: SerdeCache) -> dict[str, list[Message]]:
    """The firm's reference events as consumed records, by event type, offsets counting per partition."""
    records: dict[str, list[Message]] = {event_type: [] for event_type in TOPICS}
    offsets: dict[tuple[str, int], int] = {}
    for event in reference_events(firm):
        topic = TOPICS[event.event_type]
        key = event.key.encode()
        partition = murmur2_partition(key, topic.partitions)
        offset = offsets[(topic.name, partition)] = offsets.get((topic.name, partition), -1) + 1
        value = serdes.for_topic(topic).encode_value(event)
        records[event.event_type].append(
            Message(topic=topic.name, partition=partition, offset=offset, key=key, value=value)
        )
    return records


def follower(serdes: SerdeCache) -> ReferenceFollower:
    return ReferenceFollower(ReferenceStore(), serdes, {t.name: t for t in TOPICS.values()})


def kept_bytes(records: dict[str, list[Message]], serdes: SerdeCache) -> tuple[dict[str, int], ReferenceFollower]:
    """Bytes allocated and still held after applying each type's records (in the firm's order)."""
    gc.collect()
    tracemalloc.start()
    apply = follower(serdes)
    kept: dict[str, int] = {}
    before = tracemalloc.get_traced_memory()[0]
    for event_type, messages in records.items():
        _feed(apply, messages)
        gc.collect()
        now = tracemalloc.get_traced_memory()[0]
        kept[event_type], before = now - before, now
    tracemalloc.stop()
    return kept, apply


def cpu_per_event(records: dict[str, list[Message]], serdes: SerdeCache) -> dict[str, float]:
    """CPU seconds of decode + apply over each type's records, into a fresh store."""
    apply = follower(serdes)
    spent: dict[str, float] = {}
    for event_type, messages in records.items():
        began = time.process_time()
        _feed(apply, messages)
        spent[event_type] = time.process_time() - began
    return spent


def _feed(apply: ReferenceFollower, messages: Iterable[Message]) -> None:
    for message in messages:
        apply(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=100_000)
    parser.add_argument("--contracts", type=int, default=100_000)
    parser.add_argument("--workers-in-firm", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    firm = Firm(projects=args.projects, workers=args.workers_in_firm, contracts=args.contracts)
    serdes = SerdeCache(MockSchemaRegistryClient({"url": "mock://"}))
    records = encoded(firm, serdes)
    counts = {event_type: len(messages) for event_type, messages in records.items()}
    _feed(follower(serdes), (m[0] for m in records.values() if m))  # compile readers, fetch schemas: not counted
    rounds = []
    for _ in range(args.rounds):
        rounds.append(cpu_per_event(records, serdes))
        gc.collect()
    kept, applied = kept_bytes(records, serdes)
    assert len(applied.store.data.contracts) == args.contracts and len(applied.store.data.projects) == args.projects
    print(f"{'event':<10}{'events':>10}{'bytes/event':>13}{'MB kept':>10}{'µs CPU/event':>14}")
    for event_type, count in counts.items():
        cpu = statistics.median(r[event_type] for r in rounds)
        print(
            f"{event_type:<10}{count:>10,}{kept[event_type] / count:>13,.0f}{kept[event_type] / 1e6:>10.1f}"
            f"{cpu / count * 1e6:>14.1f}"
        )
    total, events = sum(kept.values()), sum(counts.values())
    cpu = statistics.median(sum(r.values()) for r in rounds)
    print(
        f"{'all':<10}{events:>10,}{total / events:>13,.0f}{total / 1e6:>10.1f}{cpu / events * 1e6:>14.1f}"
        f"   (load {cpu:.2f} s CPU; median of {args.rounds})"
    )


if __name__ == "__main__":
    main()
