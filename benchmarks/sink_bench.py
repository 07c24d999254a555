"""PostgreSQL sink throughput next to a plain COPY of the same rows, against the configured services.

    backbone up   # or BACKBONE_KAFKA_BOOTSTRAP_SERVERS=... BACKBONE_SCHEMA_REGISTRY_URL=... BACKBONE_POSTGRES_DSN=...
    python benchmarks/sink_bench.py --records 20000 [--batch-size 5000]

Publishes N invoice candidates to a throwaway prefixed copy of `billing.invoice-candidates.v1`, runs
the sink (`consumers.postgres.sink.PostgresSink`, in this process) into a throwaway schema and times it
from its first committed batch to its last (decode; a binary COPY straight into the table while the
ids are new, through staging and INSERT ... ON CONFLICT otherwise; offsets; commit); the start-up
(migrations, joining the group) is reported apart. The baseline is a plain text COPY of the same rows
into a table of the same definition (same key and indexes), no Kafka, no conflict handling: the
physical floor of this database on this machine. Prints one JSON object of figures; the
target is 20,000 rows/s.

Wall-clock rates on a shared machine swing with its load, so CPU time is reported too: the Python
process's (`*_python_cpu_us_per_row`: the sink's consumer, decode, rows and writer thread; for the
baseline, formatting the rows) and the PostgreSQL backend's of the connection that wrote them
(`*_postgres_cpu_us_per_row`, from /proc: the database runs on this machine). Those ratios are what
the load changes least.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from backbone.domain.models import InvoiceCandidate
from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.settings import load_settings
from consumers.postgres.sink import (
    INVOICE_CANDIDATES,
    PostgresSink,
    SinkSettings,
    SinkTopics,
    candidate_rows,
    freeze_startup_objects,
)

AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
IDS = uuid.UUID("6f1c2a52-3d0e-4c1b-9a57-0b6c1d2e3f40")


def candidate(index: int) -> InvoiceCandidate:
    """The index-th candidate. Ids are uuid texts in no order, as the topology derives candidate ids and the
    gateway makes correlation ids, and event times rise: what the read model's indexes meet in production
    (sequential ids put every B-tree insert on the same few pages, which understated their cost)."""
    return InvoiceCandidate(
        event_id=str(uuid.uuid5(IDS, f"event {index}")),
        occurred_at=AT + timedelta(milliseconds=index),
        source_system="bench",
        correlation_id=str(uuid.uuid5(IDS, f"request {index // 2}")),
        candidate_id=str(uuid.uuid5(IDS, f"candidate {index}")),
        kind="TIME",
        time_entry_id=f"TE-{index}",
        revision=1,
        project_id=f"P-{index % 200}",
        client_id=f"C-{index % 40}",
        worker_id=f"W-{index % 250}",
        role="consultant",
        work_date=date(2026, 11, 1 + index % 28),
        contract_id=f"K-{index % 200}",
        contract_version=1,
        billable_minutes=15 + index % 480,
        hourly_rate=Decimal("150.00"),
        discount_percent=Decimal("0"),
        amount=Decimal(15 + index % 480) * Decimal("2.50"),
        currency="EUR",
        tax_code="VAT20",
        billing_entity="ACME-FR",
    )


def publish(settings: Any, topics: SinkTopics, events: Iterable[InvoiceCandidate]) -> float:
    serde = SerdeCache(registry_client(settings.registry.client_config())).for_topic(topics.invoice_candidates)
    producer = Producer(
        settings.kafka.client_config() | {"enable.idempotence": True, "linger.ms": 5, "partitioner": "murmur2_random"}
    )
    started = time.monotonic()
    for event in events:
        value = serde.encode_value(event)
        while True:
            try:
                producer.produce(topics.invoice_candidates.name, key=event.key.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    return time.monotonic() - started


def run_sink(settings: Any, prefix: str, schema: str, records: int, batch_size: int) -> dict[str, Any]:
    sink = PostgresSink(
        settings,
        SinkSettings(db_schema=schema, group_id=f"{prefix}sink", topic_prefix=prefix, batch_size=batch_size),
    )
    thread = threading.Thread(target=sink.run, kwargs={"handle_signals": False}, daemon=True)
    freeze_startup_objects()  # as `backbone run sink` does before it runs the sink
    started = time.monotonic()
    cpu_started = time.process_time()
    thread.start()
    first: CpuSnapshot | None = None
    committed = 0
    # The sink's own count of committed records (a SELECT count(*) every 10 ms would load the database
    # the sink is writing to, which the COPY baseline does not have to share).
    while committed < records:
        time.sleep(0.01)  # polling interval of the measurement
        committed = sink.worker.records
        if committed and first is None:
            first = CpuSnapshot.take(settings.postgres.conninfo(), sink, thread, committed)
        if not thread.is_alive():
            raise RuntimeError("the sink stopped before writing every record; see its log above")
    last = CpuSnapshot.take(settings.postgres.conninfo(), sink, thread, committed)
    python_cpu = time.process_time() - cpu_started
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "invoice_candidates"))
        rows = conn.execute(count).fetchone()[0]  # type: ignore[index]
    sink.stop()
    thread.join(timeout=60)
    assert first is not None
    steady_seconds = max(last.at - first.at, 1e-9)
    steady_rows = max(last.records - first.records, 1)
    return {
        "sink_rows": rows,
        "sink_startup_seconds": round(first.at - started, 3),
        "sink_seconds": round(steady_seconds, 3),
        "sink_rows_per_s": round(steady_rows / steady_seconds),
        "sink_rows_per_s_with_startup": round(records / (last.at - started)),
        "sink_commits": sink.worker.commits,
        "sink_python_cpu_us_per_row": round(python_cpu / records * 1e6, 1),
        "sink_postgres_cpu_us_per_row": round(last.postgres / records * 1e6, 1),
        # first committed batch -> last, per thread: where the CPU of a row goes once the sink runs
        "steady_cpu_us_per_row": {
            name: round((getattr(last, name) - getattr(first, name)) / steady_rows * 1e6, 1)
            for name in ("consumer_thread", "writer_thread", "other_threads", "postgres")
        },
    }


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by the sink's threads, the rest of this process (librdkafka's threads,
    this loop) and the sink's PostgreSQL backend, at a moment when `records` records were committed."""

    at: float
    records: int
    consumer_thread: float
    writer_thread: float
    other_threads: float
    postgres: float

    @classmethod
    def take(cls, conninfo: str, sink: PostgresSink, thread: threading.Thread, records: int) -> CpuSnapshot:
        at, process = time.monotonic(), time.process_time()
        consumer = thread_cpu_seconds(thread.native_id)
        writer = sum(
            thread_cpu_seconds(tid) for tid in python_threads() - {thread.native_id, threading.get_native_id()}
        )
        with psycopg.connect(conninfo, autocommit=True) as conn:
            backend = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (f"backbone-{sink.worker.name}",)
            ).fetchone()
        postgres = backend_cpu_seconds(backend[0]) if backend else float("nan")
        return cls(at, records, consumer, writer, process - consumer - writer, postgres)


def python_threads() -> set[int]:
    """Ids of this process's threads that Python started (librdkafka names its own threads `rdk:...`):
    the main thread, the sink's thread and its writer thread."""
    own = Path("/proc/self/comm").read_text()
    return {int(task.name) for task in Path("/proc/self/task").iterdir() if (task / "comm").read_text() == own}


def thread_cpu_seconds(native_id: int | None) -> float:
    """User + system CPU of one thread of this process, from /proc/self/task/<id>/stat."""
    return _stat_cpu_seconds(Path(f"/proc/self/task/{native_id}/stat")) if native_id else 0.0


def backend_cpu_seconds(pid: int) -> float:
    """User + system CPU of a PostgreSQL backend on this machine, from /proc/<pid>/stat."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def _stat_cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def copy_baseline(conninfo: str, schema: str, events: Iterable[InvoiceCandidate], topic: str) -> dict[str, Any]:
    """A plain COPY of the rows the sink writes into a table of the same definition."""
    fake = Message(topic=topic, partition=0, offset=0, key=None, value=None, headers=[])
    rows = [candidate_rows(event, fake)[0][1] for event in events]
    rows = [(*row[:-1], index) for index, row in enumerate(rows)]  # distinct source offsets, like real records
    target = sql.Identifier(schema, "copy_baseline")
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in INVOICE_CANDIDATES.columns)
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                target, sql.Identifier(schema, "invoice_candidates")
            )
        )
        conn.commit()
        backend = conn.info.backend_pid
        postgres_started = backend_cpu_seconds(backend)
        started, cpu_started = time.monotonic(), time.process_time()
        with conn.cursor() as cursor, cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, columns)) as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        seconds, python_cpu = time.monotonic() - started, time.process_time() - cpu_started
        postgres_cpu = backend_cpu_seconds(backend) - postgres_started
    return {
        "copy_seconds": round(seconds, 3),
        "copy_rows_per_s": round(len(rows) / seconds),
        "copy_python_cpu_us_per_row": round(python_cpu / len(rows) * 1e6, 1),
        "copy_postgres_cpu_us_per_row": round(postgres_cpu / len(rows) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--keep", action="store_true", help="keep the throwaway schema and topics")
    args = parser.parse_args()

    settings = load_settings()
    prefix = f"bench{uuid.uuid4().hex[:8]}-"
    schema = f"sink_bench_{prefix[5:13]}"
    topics = SinkTopics.prefixed(prefix)
    admin = AdminClient(settings.kafka.client_config())
    apply_topics(admin, topics.all(), replication_factor=settings.kafka.replication_factor)
    # The events are made as they are needed, never held all at once: the sink runs in this process, and
    # N live models would make each of its garbage collections scan them (a sink process holds none).
    events = (candidate(i) for i in range(args.records))
    figures: dict[str, Any] = {"records": args.records, "batch_size": args.batch_size}
    figures["publish_seconds"] = round(publish(settings, topics, events), 3)
    try:
        figures |= run_sink(settings, prefix, schema, args.records, args.batch_size)
        events = (candidate(i) for i in range(args.records))
        figures |= copy_baseline(settings.postgres.conninfo(), schema, events, topics.invoice_candidates.name)
        figures["sink_share_of_copy"] = round(figures["sink_rows_per_s"] / figures["copy_rows_per_s"], 3)
        figures["load_average"] = round(os.getloadavg()[0], 2)
        figures["target_rows_per_s"] = 20_000
    finally:
        if not args.keep:
            with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            admin.delete_topics([t.name for t in topics.all()])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
