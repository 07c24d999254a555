"""Emit throughput and Avro codec cost, measured against the configured broker and registry.

    BACKBONE_KAFKA_BOOTSTRAP_SERVERS=... BACKBONE_SCHEMA_REGISTRY_URL=... \\
        python benchmarks/emit_bench.py --records 100000

Runs `backbone emit time-entry` as a user would (a subprocess, start-up included) on a throwaway
topic shaped like `psa.time-entries.v1`; in the same run, the baseline: a raw confluent-kafka producer
(the emitter's settings: idempotent, acks=all, linger 10 ms) sending the very Avro bytes `emit` would
send, already encoded, with no delivery callback. Then times encoding and decoding one time entry
through the same serde the emitter and consumers use. Prints one JSON object of figures, with the
ratio of emit to the raw producer (issue 10 asks for >= 50,000 entries/s and >= 30 %). Both also get
their CPU time per record (emit's whole process, start-up included; the raw producer's loop and
librdkafka's threads), which the machine's load moves far less than their wall clocks.

To compare two versions of emit in the same conditions, `--tree` names checkouts to run `backbone emit`
from (e.g. the base commit, extracted with `git archive <commit> | tar -x -C /tmp/base`), each once per
`--rounds`, alternating, every emit on its own topic, each round with its own raw-producer baseline;
`--digest` reads every topic back and prints a SHA-256 of its records (partition, key, value, headers,
in offset order), so equal digests show both versions published the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from backbone.domain.models import TimeEntry
from backbone.kafka import topics as catalog
from backbone.kafka import wire
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.settings import load_settings


def time_entry(index: int) -> dict[str, Any]:
    return {
        "occurred_at": "2026-11-02T09:30:00Z",
        "source_system": "bench",
        "time_entry_id": f"TE-{index}",
        "revision": 1,
        "worker_id": f"W-{index % 250}",
        "project_id": f"P-{index % 40}",
        "task_id": f"T-{index % 7}",
        "work_date": "2026-11-02",
        "duration_seconds": 900 + index % 28_800,
        "billable": index % 5 != 0,
        "notes": "Implementation work on the integration backbone",
    }


class _Message:
    """Just enough of a consumed message for `TopicSerde.decode`."""

    def __init__(self, value: bytes, topic: str) -> None:
        self._value, self._topic = value, topic

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def headers(self) -> None:
        return None


def bench_emit(records: int, topic: catalog.Topic, tree: Path | None = None) -> dict[str, Any]:
    """`backbone emit` of `records` time entries, from this checkout or from `tree`."""
    env = os.environ | ({"PYTHONPATH": str(tree)} if tree else {})
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "entries.jsonl"
        source.write_text("".join(json.dumps(time_entry(i)) + "\n" for i in range(records)))
        command = [
            sys.executable,
            "-m",
            "backbone.cli",
            "emit",
            "time-entry",
            str(source),
            "--topic",
            topic.name,
            "-q",
        ]
        cpu_before = _children_cpu()
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tree, env=env)
        wall = time.perf_counter() - started
        cpu = _children_cpu() - cpu_before
    return {
        "emit_records": records,
        "emit_wall_seconds": round(wall, 2),
        "emit_records_per_second_wall": round(records / wall),
        "emit_cpu_us_per_record": round(cpu / records * 1e6, 1),
        "emit_summary": done.stdout.strip(),
    }


def _children_cpu() -> float:
    """User + system CPU seconds of finished child processes (all their threads): what emit cost,
    which moves far less with the machine's load than its wall clock."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def topic_digest(topic: catalog.Topic) -> str:
    """SHA-256 of a topic's records (partition, key, value, headers), partition by partition in offset order."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**load_settings().kafka.client_config(), "group.id": f"digest-{uuid.uuid4().hex}"})
    digest = hashlib.sha256()
    try:
        for partition in range(topic.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=30)
            consumer.assign([TopicPartition(topic.name, partition, low)])
            position = low
            while position < high:
                for message in consumer.consume(10_000, timeout=5):
                    if message.error():
                        raise RuntimeError(message.error())
                    for part in (message.key(), message.value(), repr(message.headers()).encode()):
                        digest.update(len(part or b"").to_bytes(4, "big") + (part or b""))
                    position = message.offset() + 1
            digest.update(f"partition {partition}: {high - low}".encode())
    finally:
        consumer.close()
    return digest.hexdigest()


def bench_raw_producer(records: int, topic: catalog.Topic) -> dict[str, Any]:
    """The baseline: the same Avro bytes, pre-encoded, through a bare producer with the emitter's settings."""
    from confluent_kafka import Producer

    from producers.emitter import encode_for_spool, producer_config

    settings = load_settings()
    serde = SerdeCache(registry_client(settings.registry.client_config())).for_topic(topic)
    header = serde.header()
    encoded = [encode_for_spool(TimeEntry.model_validate(time_entry(i)), serde) for i in range(records)]
    values = [(key, header + body, headers) for key, body, headers in encoded]
    producer = Producer(producer_config(settings.kafka, delivery_timeout_s=120))
    cpu_before = time.process_time()
    started = time.perf_counter()
    for key, value, headers in values:
        while True:
            try:
                producer.produce(topic.name, value, key, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before  # this process: the produce loop and librdkafka's threads
    return {
        "raw_producer_records_per_second": round(records / seconds),
        "raw_producer_seconds": round(seconds, 2),
        "raw_producer_cpu_us_per_record": round(cpu / records * 1e6, 1),
    }


def bench_codec(topic: catalog.Topic, rounds: int = 20_000) -> dict[str, Any]:
    serde = SerdeCache(registry_client(load_settings().registry.client_config())).for_topic(topic)
    event = TimeEntry.model_validate(time_entry(1))
    value = serde.encode_value(event)  # registers once, outside the timing
    message = _Message(value, topic.name)
    schema = wire.parsed_schema(TimeEntry)

    def fastavro_only() -> None:
        fastavro.schemaless_writer(io.BytesIO(), schema, wire.to_record(event))

    # the baseline: confluent-kafka's own serializer classes on the same record and registry
    context = SerializationContext(topic.name, MessageField.VALUE)
    confluent_writer = AvroSerializer(
        serde.registry, wire.schema_str(TimeEntry), to_dict=lambda e, _: wire.to_record(e)
    )
    confluent_reader = AvroDeserializer(
        serde.registry, wire.schema_str(TimeEntry), from_dict=lambda r, _: wire.from_record(TimeEntry, r)
    )

    per_call = {
        "encode_us_serde": lambda: serde.encode_value(event),
        "encode_us_confluent_avro_serializer": lambda: confluent_writer(event, context),
        "decode_us_serde": lambda: serde.decode(message),  # type: ignore[arg-type]
        "decode_us_confluent_avro_deserializer": lambda: confluent_reader(value, context),
        "to_record_us": lambda: wire.to_record(event),
        "encode_us_wire_plus_fastavro": fastavro_only,
    }
    figures = {name: round(timeit.timeit(call, number=rounds) / rounds * 1e6, 1) for name, call in per_call.items()}
    return {**figures, "record_bytes": len(value)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--tree", type=Path, action="append", help="run emit from this checkout (repeatable)")
    parser.add_argument("--rounds", type=int, default=1, help="emit runs per tree, alternating")
    parser.add_argument("--digest", action="store_true", help="hash what each emit published")
    parser.add_argument("--no-codec", action="store_true", help="skip the per-call codec timings")
    args = parser.parse_args()

    settings = load_settings()
    admin = AdminClient(settings.kafka.client_config())
    made: list[str] = []

    def fresh_topic() -> catalog.Topic:
        topic = dataclasses.replace(catalog.TIME_ENTRIES, name=f"bench-time-entries-{uuid.uuid4().hex[:8]}")
        for future in admin.create_topics([NewTopic(topic.name, topic.partitions, 1)]).values():
            future.result(timeout=30)
        made.append(topic.name)
        return topic

    try:
        if args.tree:
            figures = compare_trees(args, fresh_topic)
        else:
            topic = fresh_topic()
            load_before = os.getloadavg()[0]
            figures = bench_emit(args.records, topic)
            if args.digest:  # before the raw producer writes the same records to the topic again
                figures["emit_digest"] = topic_digest(topic)
            figures.update(bench_raw_producer(args.records, topic))
            figures["emit_to_raw_ratio"] = round(
                figures["emit_records_per_second_wall"] / figures["raw_producer_records_per_second"], 3
            )
            if not args.no_codec:
                figures.update(bench_codec(topic))
            figures["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        figures["command"] = " ".join(sys.argv)
    finally:
        for future in admin.delete_topics(made).values():
            future.result(timeout=30)
    print(json.dumps(figures, indent=2))


def compare_trees(args: argparse.Namespace, fresh_topic: Callable[[], catalog.Topic]) -> dict[str, Any]:
    """Each tree's emit once per round, alternating, with a raw-producer baseline per round."""
    runs: list[dict[str, Any]] = []
    for round_number in range(1, args.rounds + 1):
        raw_topic = fresh_topic()
        for tree in args.tree:
            topic = fresh_topic()
            load = os.getloadavg()[0]
            run = {"round": round_number, "tree": str(tree), "load_average": round(load, 2)}
            run.update(bench_emit(args.records, topic, tree))
            if args.digest:
                run["digest"] = topic_digest(topic)
            runs.append(run)
        raw = bench_raw_producer(args.records, raw_topic)
        for run in runs[-len(args.tree) :]:
            run.update(raw)
            run["emit_to_raw_ratio"] = round(
                run["emit_records_per_second_wall"] / raw["raw_producer_records_per_second"], 3
            )
        for run in runs[-len(args.tree) :]:
            print(json.dumps(run), file=sys.stderr)
    return {"runs": runs}


if __name__ == "__main__":
    main()
