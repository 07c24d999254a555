"""Physical-limit baseline: raw confluent-kafka produce and consume throughput on this machine.

Later benchmarks report their figures as ratios against numbers like these, measured in the same
run on the same broker. Usage (against a running `backbone up`, or BACKBONE_KAFKA_BOOTSTRAP_SERVERS):

    .venv/bin/python benchmarks/kafka_baseline.py --records 100000 --size 400
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from backbone.settings import load_settings


def produce(config: dict[str, str], topic: str, records: int, size: int) -> float:
    producer = Producer(
        {
            **config,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
        }
    )
    payload = os.urandom(size // 2).hex().encode()[:size]
    began = time.perf_counter()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=payload)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0
    return time.perf_counter() - began


def consume(config: dict[str, str], topic: str, records: int) -> float:
    consumer = Consumer(
        {
            **config,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 50_000_000,
        }
    )
    consumer.subscribe([topic])
    seen, began = 0, None
    while seen < records:
        batch = consumer.consume(num_messages=10_000, timeout=1.0)
        if batch and began is None:
            began = time.perf_counter()
        seen += sum(1 for m in batch if m.error() is None)
    elapsed = time.perf_counter() - (began or time.perf_counter())
    consumer.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=400)
    args = parser.parse_args()
    config = load_settings().kafka.client_config()
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(config)
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result()
    produced = produce(config, topic, args.records, args.size)
    consumed = consume(config, topic, args.records)
    mb = args.records * args.size / 1e6
    print(f"produce: {args.records / produced:,.0f} records/s ({mb / produced:.1f} MB/s)")
    print(f"consume: {args.records / consumed:,.0f} records/s ({mb / consumed:.1f} MB/s)")
    admin.delete_topics([topic])[topic].result()


if __name__ == "__main__":
    main()
