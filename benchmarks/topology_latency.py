"""Approval → invoice-candidate latency of the topology under a steady load below its capacity.

Publishes master data, starts one `python -m topology` worker, warms it up with one entry, then publishes
time entries and their approvals at `--rate` entries/s for `--seconds`. Latency per entry is the invoice
candidate's record timestamp minus its approval's record timestamp (both CreateTime, stamped by clients on
this machine), reported as p50 / p95 / p99 / max. Usage (against a running `backbone up`):

    .venv/bin/python benchmarks/topology_latency.py --rate 50 --seconds 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from topology_bench import ROOT, firm, produce, publish

from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.kafka.topics import Topic
from backbone.settings import Settings, load_settings
from producers.emitter import with_envelope_defaults
from topology.app import TopologyTopics

DEADLINE_S = 180.0


def read_all(settings: Settings, topic: Topic, expected: int) -> list[Any]:
    """Every record on `topic` (until `expected` are read or the deadline passes)."""
    consumer = Consumer(
        settings.kafka.client_config()
        | {"group.id": f"bench-latency-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic.name])
    records: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(records) < expected and time.monotonic() < deadline:
        records += [m for m in consumer.consume(1000, timeout=1.0) if m.error() is None]
    consumer.close()
    return records


def timestamps_by_entry(settings: Settings, topic: Topic, expected: int) -> dict[str, int]:
    serde = SerdeCache(registry_client(settings.registry.client_config())).for_topic(topic)
    stamps: dict[str, int] = {}
    for message in read_all(settings, topic, expected):
        stamps.setdefault(serde.decode(message).time_entry_id, message.timestamp()[1])  # type: ignore[attr-defined]
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="entries (each with its approval) per second")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--projects", type=int, default=100)
    args = parser.parse_args()
    settings = load_settings()
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    topics = TopologyTopics.prefixed(prefix)
    apply_topics(AdminClient(settings.kafka.client_config()), topics.all())
    count = args.rate * args.seconds
    reference, entries, approvals = firm(count + 1, args.projects, 200)
    publish(settings, topics, reference + entries[:1] + approvals[:1])  # master data and a warm-up entry

    env = dict(
        os.environ,
        BACKBONE_KAFKA_BOOTSTRAP_SERVERS=settings.kafka.servers,
        BACKBONE_SCHEMA_REGISTRY_URL=settings.registry.endpoint,
        BACKBONE_LOG_LEVEL="WARNING",
    )
    command = [sys.executable, "-m", "topology", "--app-id", f"{prefix}app", "--topic-prefix", prefix]
    worker = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        if len(read_all(settings, topics.invoice_candidates, 1)) < 1:
            raise SystemExit("the topology priced no warm-up entry; see its output above")
        serdes = SerdeCache(registry_client(settings.registry.client_config()))
        producer = Producer(
            settings.kafka.client_config() | {"enable.idempotence": True, "partitioner": "murmur2_random"}
        )
        began = time.perf_counter()
        for n, (entry, approval) in enumerate(zip(entries[1:], approvals[1:], strict=True)):
            for event, topic in ((entry, topics.time_entries), (approval, topics.approvals)):
                event = with_envelope_defaults(event)
                value = serdes.for_topic(topic).encode_value(event)
                produce(producer, topic.name, event.key.encode(), value, [("event_type", event.event_type.encode())])
            producer.poll(0)
            pause = began + (n + 1) / args.rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # pacing the load generator, not waiting on a result
        producer.flush(60)
        offered = count / (time.perf_counter() - began)
        approved = timestamps_by_entry(settings, topics.approvals, count + 1)
        priced = timestamps_by_entry(settings, topics.invoice_candidates, count + 1)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    latencies = sorted(priced[e] - approved[e] for e in priced if e in approved and e != entries[0].time_entry_id)
    if len(latencies) < count:
        print(f"only {len(latencies):,} of {count:,} entries were priced within {DEADLINE_S:.0f}s")
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"offered {offered:,.0f} entries/s for {args.seconds}s; approval → candidate latency over "
        f"{len(latencies):,} entries: p50 {cuts[49]:,.0f} ms, p95 {cuts[94]:,.0f} ms, p99 {cuts[98]:,.0f} ms, "
        f"max {latencies[-1]:,} ms"
    )


if __name__ == "__main__":
    main()
