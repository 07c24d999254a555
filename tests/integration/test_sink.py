"""The PostgreSQL sink on the real broker, registry and database: every stream materialised, replays and
duplicates written once, a SIGKILL right after a database commit repeats and loses nothing, poison
records become dead-letter rows while everything else is written, records of older writer schemas land
as the model reads them.

Each test has its own topics (a unique prefix on every catalog name), consumer group and schema.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema
from psycopg import sql

from backbone.domain.ids import derive_event_id
from backbone.domain.models import (
    BillingResponse,
    BusinessException,
    Event,
    InvoiceCandidate,
    PostingAck,
    PostingRequest,
)
from backbone.kafka import wire
from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.kafka.topics import Topic
from backbone.settings import Settings
from backbone.streams.loop import dead_letter_headers
from backbone.streams.sink import CRASH_EXIT_STATUS
from consumers.postgres.sink import PostgresSink, SinkSettings, SinkTopics, apply_sink_migrations
from tests.support import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
D = Decimal
AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


# --- events -------------------------------------------------------------------------------------------------


def candidate(n: int, *, client: str = "C-1", project: str = "P-1", work_date: date = date(2026, 11, 3),
              amount: str = "150.00", **overrides: Any) -> InvoiceCandidate:  # fmt: skip
    fields: dict[str, Any] = {
        "event_id": f"ev-cand-{n}",
        "occurred_at": AT,
        "source_system": "backbone",
        "correlation_id": f"TE-{n}",
        "candidate_id": f"cand-{n}",
        "kind": "TIME",
        "time_entry_id": f"TE-{n}",
        "revision": 1,
        "project_id": project,
        "client_id": client,
        "worker_id": "W-1",
        "role": "consultant",
        "work_date": work_date,
        "contract_id": "K-1",
        "contract_version": 1,
        "billable_minutes": 60,
        "hourly_rate": D("150.0000"),
        "discount_percent": D("0"),
        "amount": D(amount),
        "currency": "EUR",
        "tax_code": "VAT20",
        "billing_entity": "ACME-FR",
    }
    return InvoiceCandidate(**(fields | overrides))


def posting(n: int, posting_type: str, amount: str, project: str = "P-1") -> PostingRequest:
    return PostingRequest(
        event_id=f"ev-post-{posting_type}-{n}",
        occurred_at=AT,
        source_system="backbone",
        correlation_id=f"TE-{n}",
        posting_id=f"post-{posting_type}-{n}",
        posting_type=posting_type,
        time_entry_id=f"TE-{n}",
        revision=1,
        project_id=project,
        worker_id="W-1",
        work_date=date(2026, 11, 3),
        amount=D(amount),
        currency="EUR",
        erp_target="legacy-erp",
    )


def ack(posting_id: str, status: str, n: int, document: str | None = None) -> PostingAck:
    return PostingAck(
        event_id=f"ev-ack-{posting_id}-{n}",
        occurred_at=AT,
        source_system="erp-sim",
        correlation_id=posting_id,
        posting_id=posting_id,
        erp_target="legacy-erp",
        status=status,
        erp_document_id=document,
        error_code=None if status == "POSTED" else "PERIOD_CLOSED",
    )


def response(candidate_id: str, status: str, n: int) -> BillingResponse:
    return BillingResponse(
        event_id=f"ev-resp-{candidate_id}-{n}",
        occurred_at=AT,
        source_system="billing-sim",
        correlation_id=candidate_id,
        candidate_id=candidate_id,
        status=status,
        invoice_id="in_1" if status == "ACCEPTED" else None,
        reason_code=None if status == "ACCEPTED" else "tax_code_missing",
    )


def exception(entry: str, status: str, amount: str | None = "300.00") -> BusinessException:
    return BusinessException(
        occurred_at=AT,  # no event_id: the sink derives the history id from the payload
        source_system="backbone",
        correlation_id=entry,
        exception_id=f"exc-{entry}",
        kind="NO_RATE",
        status=status,
        subject_type="TIME_ENTRY",
        subject_id=entry,
        project_id="P-1",
        owner="FINANCE_OPS",
        amount_at_risk=D(amount) if amount else None,
        currency="EUR" if amount else None,
        details="no rate for the worker's role",
        opened_at=AT,
        resolved_at=AT if status == "RESOLVED" else None,
    )


# --- the harness ------------------------------------------------------------------------------------------


@dataclass
class SinkHarness:
    """One test's topics, schema, group, producer and sinks (in this process or as `backbone run sink`)."""

    settings: Settings
    conninfo: str
    prefix: str

    def __post_init__(self) -> None:
        self.schema = f"sink_{self.prefix.rstrip('-').replace('-', '_')}"
        self.group = f"{self.prefix}sink"
        self.topics = SinkTopics.prefixed(self.prefix)
        apply_topics(AdminClient(self.settings.kafka.client_config()), self.topics.all())
        self.serdes = SerdeCache(registry_client(self.settings.registry.client_config()))
        config = self.settings.kafka.client_config() | {"enable.idempotence": True, "linger.ms": 5}
        self.producer = Producer(config | {"partitioner": "murmur2_random"})
        self.sinks: list[tuple[PostgresSink, threading.Thread]] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def topic_of(self, event: Event) -> Topic:
        return {
            "invoice-candidate": self.topics.invoice_candidates,
            "posting-request": self.topics.posting_requests,
            "posting-ack": self.topics.posting_acks,
            "billing-response": self.topics.billing_responses,
            "exception": self.topics.exceptions,
        }[event.event_type]

    def publish(self, events: list[Event]) -> None:
        for event in events:
            topic = self.topic_of(event)
            headers = [
                ("event_type", event.event_type.encode()),
                ("correlation_id", (event.correlation_id or "").encode()),
            ]
            value = self.serdes.for_topic(topic).encode_value(event)
            self.producer.produce(topic.name, key=event.key.encode(), value=value, headers=headers)
            self.producer.poll(0)
        assert self.producer.flush(30) == 0

    def publish_raw(self, topic: Topic, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.producer.produce(topic.name, key=key, value=value, headers=headers)
        assert self.producer.flush(30) == 0

    # sinks

    def sink_settings(self, **overrides: Any) -> SinkSettings:
        return SinkSettings(db_schema=self.schema, group_id=self.group, topic_prefix=self.prefix, **overrides)

    def start(self, **overrides: Any) -> PostgresSink:
        sink = PostgresSink(self.settings, self.sink_settings(**overrides))
        thread = threading.Thread(target=sink.run, kwargs={"handle_signals": False}, daemon=True)
        thread.start()
        self.sinks.append((sink, thread))
        return sink

    def stop(self, sink: PostgresSink) -> None:
        sink.stop()
        thread = next(t for s, t in self.sinks if s is sink)
        thread.join(timeout=60)
        assert not thread.is_alive(), "the sink did not stop"

    def start_process(self, log_name: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
        log_dir = self.settings.runtime.data_dir.resolve()
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{self.prefix}{log_name}.log"
        command = [sys.executable, "-m", "backbone.cli", "run", "sink", "--schema", self.schema,
                   "--group-id", self.group, "--topic-prefix", self.prefix]  # fmt: skip
        full_env = os.environ | {
            "BACKBONE_KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka.servers,
            "BACKBONE_SCHEMA_REGISTRY_URL": self.settings.registry.endpoint,
            "BACKBONE_POSTGRES_PORT": str(self.settings.postgres.port),
            "BACKBONE_STREAMS_SESSION_TIMEOUT_MS": "6000",
            "BACKBONE_LOG_LEVEL": "INFO",
            "BACKBONE_LOG_FORMAT": "json",
        }
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=full_env | env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process, log_path

    def close(self) -> None:
        for sink, thread in self.sinks:
            sink.stop()
            thread.join(timeout=60)
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)

    # the database

    def query(self, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            return conn.execute(text.encode(), params).fetchall()  # type: ignore[arg-type]

    def count(self, table: str) -> int:
        """Rows in `table` (0 while the sink has not migrated its schema yet)."""
        try:
            return int(self.query(f"SELECT count(*) FROM {table}")[0][0])
        except psycopg.errors.UndefinedTable:
            return 0

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        rows = self.query("SELECT topic, partition, next_offset FROM sink_offsets WHERE group_id = %s", (self.group,))
        return {(t, p): o for t, p, o in rows}

    def ends(self) -> dict[tuple[str, int], int]:
        """The end offset of every partition of the sink's topics that holds records."""
        consumer = Consumer(self.settings.kafka.client_config() | {"group.id": f"{self.prefix}ends"})
        try:
            ends = {}
            for topic in self.topics.all():
                for p in range(topic.partitions):
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic.name, p), timeout=10)
                    if high > 0:
                        ends[(topic.name, p)] = high
            return ends
        finally:
            consumer.close()

    def caught_up(self) -> bool:
        """The sink's stored offsets reach the end of every partition (committed records only)."""
        try:
            return self.stored_offsets() == self.ends()
        except psycopg.errors.UndefinedTable:  # the sink has not migrated its schema yet
            return False
        except KafkaException:  # a partition of a just-created topic is not served yet
            return False


@pytest.fixture
def harness(settings: Settings, postgres_conninfo: str) -> Iterator[SinkHarness]:
    harness = SinkHarness(settings, postgres_conninfo, f"t{uuid.uuid4().hex[:10]}-")
    yield harness
    harness.close()


def _wait_caught_up(harness: SinkHarness, timeout: float = 60) -> None:
    wait_until(harness.caught_up, timeout=timeout, message="the sink's stored offsets reach every partition's end")


# --- tests --------------------------------------------------------------------------------------------------


def test_sink_materialises_every_stream_dead_letter_and_view(harness: SinkHarness) -> None:
    candidates = [
        candidate(1, client="C-1", work_date=date(2026, 11, 3), amount="150.00"),
        candidate(2, client="C-1", work_date=date(2026, 11, 28), amount="0.10"),
        candidate(3, client="C-1", work_date=date(2026, 12, 1), amount="0.20"),
        candidate(4, client="C-2", project="P-2", amount="99.99"),
        candidate(5, client="C-1", kind="ADJUSTMENT", amount="-50.00", replaces_candidate_id="cand-1"),
    ]
    postings = [posting(1, "REVENUE", "150.00"), posting(1, "COST", "80.00"), posting(2, "REVENUE", "0.10"),
                posting(4, "REVENUE", "99.99", project="P-2")]  # fmt: skip
    acks = [
        ack("post-REVENUE-1", "REJECTED", 1),
        ack("post-REVENUE-1", "POSTED", 2, "doc-9"),  # a retry that worked: the latest state is POSTED
        ack("post-COST-1", "POSTED", 1, "doc-10"),
        ack("post-REVENUE-2", "REJECTED", 1),
        ack("post-REVENUE-4", "POSTED", 1, "doc-11"),
    ]
    responses = [
        response("cand-1", "ACCEPTED", 1),
        response("cand-4", "REJECTED", 1),
        response("cand-5", "ACCEPTED", 1),
    ]
    exceptions = [exception("TE-7", "OPEN"), exception("TE-8", "OPEN", None), exception("TE-7", "RESOLVED")]
    harness.publish([*candidates, *postings, *acks, *responses, *exceptions])
    poison_source = Message(topic=harness.topics.event_topics[4].name, partition=2, offset=41, key=b"TE-9",
                            value=b"\x00garbage", headers=[("correlation_id", b"TE-9")])  # fmt: skip
    dlq_headers = dead_letter_headers(poison_source, ValueError("not Avro"), "topology.entries", "DecodeError")
    entries_dlq = harness.topics.event_topics[4].dlq
    assert entries_dlq is not None
    harness.publish_raw(entries_dlq, b"TE-9", b"\x00garbage", dlq_headers)

    harness.start()
    _wait_caught_up(harness)

    assert harness.count("invoice_candidates") == 5
    adjustment = (
        "SELECT amount, kind, replaces_candidate_id, correlation_id FROM invoice_candidates WHERE candidate_id = %s"
    )
    assert harness.query(adjustment, ("cand-5",)) == [(D("-50.00"), "ADJUSTMENT", "cand-1", "TE-5")]
    assert harness.count("posting_requests") == 4
    assert harness.query("SELECT status, erp_document_id FROM posting_acks WHERE posting_id = 'post-REVENUE-1'") == [
        ("POSTED", "doc-9")
    ]
    assert harness.count("posting_ack_history") == 5
    assert harness.count("billing_responses") == 3 and harness.count("billing_response_history") == 3
    assert harness.query("SELECT exception_id, status, resolved_at IS NOT NULL FROM exceptions ORDER BY 1") == [
        ("exc-TE-7", "RESOLVED", True),
        ("exc-TE-8", "OPEN", False),
    ]
    assert harness.count("exception_history") == 3

    [letter] = harness.query(
        "SELECT source_topic, record_key, record_value, error_topic, error_partition, error_offset, error_class, "
        "error_message, error_processor, error_at IS NOT NULL, correlation_id FROM dead_letters"
    )
    assert letter == (entries_dlq.name, b"TE-9", b"\x00garbage", poison_source.topic(), 2, 41, "DecodeError",
                      "not Avro", "topology.entries", True, "TE-9")  # fmt: skip

    assert harness.query(
        "SELECT client_id, period, currency, lines, billable_minutes, amount FROM invoice_ready_by_client_period "
        "ORDER BY client_id, period"
    ) == [
        ("C-1", date(2026, 11, 1), "EUR", 3, 180, D("100.10")),
        ("C-1", date(2026, 12, 1), "EUR", 1, 60, D("0.20")),
    ], "C-2's only line (cand-4) was refused by the billing engine: nothing of C-2 is ready to invoice"
    # posted: REVENUE acknowledged POSTED (P-1: 150.00; P-2: 99.99); billed: ACCEPTED candidates (150.00 - 50.00)
    assert harness.query(
        "SELECT project_id, currency, posted_revenue, billed, difference FROM posted_vs_billed_by_project ORDER BY 1"
    ) == [("P-1", "EUR", D("150.00"), D("100.00"), D("50.00")), ("P-2", "EUR", D("99.99"), D("0"), D("99.99"))]
    assert harness.query("SELECT time_entry_id, kinds, amount_at_risk FROM blocked_entries") == [
        ("TE-8", ["NO_RATE"], None)
    ]


def test_replayed_and_duplicated_records_write_each_id_once(harness: SinkHarness) -> None:
    events: list[Event] = [candidate(n) for n in range(40)]
    events += [ack("post-REVENUE-1", "REJECTED", 1), ack("post-REVENUE-1", "POSTED", 2, "doc-1")]
    events += [exception("TE-7", "OPEN"), exception("TE-7", "RESOLVED")]
    harness.publish(events)
    sink = harness.start(batch_size=7)
    _wait_caught_up(harness)
    harness.stop(sink)
    first = harness.query("SELECT candidate_id, recorded_at FROM invoice_candidates ORDER BY 1")

    harness.publish(events)  # the same events again (same ids), at later offsets
    harness.query("DELETE FROM sink_offsets RETURNING 1")  # and a replay of everything from the beginning
    harness.start(batch_size=7)
    _wait_caught_up(harness)

    assert harness.query("SELECT candidate_id, recorded_at FROM invoice_candidates ORDER BY 1") == first
    assert harness.query("SELECT count(*), count(DISTINCT candidate_id) FROM invoice_candidates") == [(40, 40)]
    assert harness.count("posting_ack_history") == 2
    assert harness.query("SELECT status, erp_document_id FROM posting_acks") == [("POSTED", "doc-1")]
    assert harness.count("exception_history") == 2
    assert harness.query("SELECT status FROM exceptions") == [("RESOLVED",)]


def test_a_batch_of_stored_and_new_ids_writes_the_new_ones_and_keeps_the_stored(harness: SinkHarness) -> None:
    """Rows go straight into their table while their ids are new; a batch that meets a stored id is
    written again through ON CONFLICT, and a later batch of new ids goes straight in again."""
    harness.publish([candidate(n) for n in range(10)])
    sink = harness.start()
    _wait_caught_up(harness)
    harness.stop(sink)
    first = harness.query("SELECT candidate_id, recorded_at, source_offset FROM invoice_candidates ORDER BY 1")

    harness.publish([candidate(n, amount="999.00") for n in range(5, 15)])  # 5 stored ids, then 5 new ones
    sink = harness.start()
    _wait_caught_up(harness)
    harness.publish([candidate(n) for n in range(15, 20)])  # new ids only, in a batch of their own
    _wait_caught_up(harness)

    rows = harness.query("SELECT candidate_id, recorded_at, source_offset FROM invoice_candidates ORDER BY 1")
    assert [row for row in rows if row[0] in {r[0] for r in first}] == first, "a stored row is never replaced"
    assert harness.query("SELECT count(*), count(DISTINCT candidate_id) FROM invoice_candidates") == [(20, 20)]
    assert harness.query("SELECT amount FROM invoice_candidates WHERE candidate_id = 'cand-12'") == [(D("999.00"),)]
    assert sink.worker.records == 15 and harness.count("dead_letters") == 0
    assert "invoice_candidates" in sink.worker.direct_tables, "back to COPY straight into the table"


def test_a_value_a_column_cannot_hold_becomes_a_dead_letter_not_a_wrapped_number(harness: SinkHarness) -> None:
    """billable_minutes is a long in the contract and an integer in the read model: 2**31 minutes must be
    refused by PostgreSQL (binary COPY would silently store -2**31), and the rest of the batch written."""
    harness.publish([candidate(0), candidate(1, billable_minutes=2**31), candidate(2, billable_minutes=-(2**31))])
    harness.start()
    _wait_caught_up(harness)

    assert harness.query("SELECT candidate_id, billable_minutes FROM invoice_candidates ORDER BY 1") == [
        ("cand-0", 60), ("cand-2", -(2**31)),
    ]  # fmt: skip
    assert harness.query("SELECT error_class, position('out of range' in error_message) > 0 FROM dead_letters") == [
        ("NumericValueOutOfRange", True)
    ]


def test_replaying_old_records_never_rolls_a_latest_state_back(harness: SinkHarness) -> None:
    harness.publish([exception("TE-7", "OPEN"), exception("TE-7", "RESOLVED")])
    sink = harness.start()
    _wait_caught_up(harness)
    harness.stop(sink)
    assert harness.query("SELECT status, source_offset FROM exceptions") == [("RESOLVED", 1)]

    # replay from the beginning, one record per commit, and stop after the first: the OPEN record
    harness.query("UPDATE sink_offsets SET next_offset = 0 RETURNING 1")
    replay, _ = harness.start_process("replay", BACKBONE_SINK_CRASH_AFTER_COMMIT="1", BACKBONE_SINK_BATCH_SIZE="1")
    assert replay.wait(timeout=120) == CRASH_EXIT_STATUS
    assert list(harness.stored_offsets().values()) == [1]
    assert harness.query("SELECT status, source_offset FROM exceptions") == [("RESOLVED", 1)]
    assert harness.count("exception_history") == 2


def test_sigkill_right_after_a_commit_loses_and_repeats_nothing(harness: SinkHarness) -> None:
    total = 600
    harness.publish([candidate(n, client=f"C-{n % 3}", project=f"P-{n % 24}") for n in range(total)])
    crashing, _ = harness.start_process("crashing", BACKBONE_SINK_CRASH_AFTER_COMMIT="3", BACKBONE_SINK_BATCH_SIZE="40")
    assert crashing.wait(timeout=120) == CRASH_EXIT_STATUS

    after_crash = harness.stored_offsets()
    written = harness.count("invoice_candidates")
    assert 0 < written < total, "the crash should come mid-stream"
    assert sum(after_crash.values()) == written, "rows and offsets committed together"

    restarted, log_path = harness.start_process("restarted", BACKBONE_SINK_BATCH_SIZE="40")
    _wait_caught_up(harness, timeout=90)

    assert harness.query("SELECT count(*), count(DISTINCT candidate_id) FROM invoice_candidates") == [(total, total)]
    topic = harness.topics.invoice_candidates
    assigned = {
        k: v for k, v in _log_line(log_path, "partitions assigned")["offsets"].items() if k.startswith(topic.name)
    }
    assert assigned == {f"{t}[{p}]": offset for (t, p), offset in after_crash.items()}, "resumed at the stored offsets"
    restarted.terminate()
    assert restarted.wait(timeout=60) == 0
    assert _log_line(log_path, "sink stopped")["records"] == total - written, "read nothing twice"


def test_a_second_sink_takes_over_the_partitions_of_one_that_died(harness: SinkHarness) -> None:
    total = 1200
    survivor, survivor_log = harness.start_process("survivor", BACKBONE_SINK_BATCH_SIZE="20")
    _log_line(survivor_log, "partitions assigned")
    doomed, doomed_log = harness.start_process(
        "doomed", BACKBONE_SINK_CRASH_AFTER_COMMIT="5", BACKBONE_SINK_BATCH_SIZE="20"
    )
    _log_line(doomed_log, "partitions assigned", timeout=60)  # the group now has two members
    harness.publish([candidate(n, project=f"P-{n % 24}") for n in range(total)])  # keyed by project: every partition
    assert doomed.wait(timeout=120) == CRASH_EXIT_STATUS
    _wait_caught_up(harness, timeout=90)

    assert harness.query("SELECT count(*), count(DISTINCT candidate_id) FROM invoice_candidates") == [(total, total)]
    survivor.terminate()
    assert survivor.wait(timeout=60) == 0
    doomed_records = _log_line(doomed_log, "crashing on purpose after a commit (test hook)")["records"]
    survivor_records = _log_line(survivor_log, "sink stopped")["records"]
    assert doomed_records > 0, "both sinks should have written"
    assert doomed_records + survivor_records == total, "no record read twice, none skipped"


def test_a_lost_database_connection_rolls_back_and_rereads_from_the_stored_offsets(harness: SinkHarness) -> None:
    harness.publish([candidate(n) for n in range(1500)])
    sink = harness.start(batch_size=25)
    wait_until(lambda: harness.count("invoice_candidates") > 0, message="the sink writes its first batches")
    terminated = harness.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (f"backbone-{sink.worker.name}",),
    )
    assert terminated and all(ok for (ok,) in terminated)
    harness.publish([candidate(n) for n in range(1500, 2000)])  # so the sink must write again after the loss
    _wait_caught_up(harness)

    assert sink.worker.recoveries >= 1
    assert harness.query("SELECT count(*), count(DISTINCT candidate_id) FROM invoice_candidates") == [(2000, 2000)]
    assert sum(harness.stored_offsets().values()) == 2000


def _log_line(log_path: Path, event: str, timeout: float = 30) -> dict[str, Any]:
    """The first JSON log line of `event` the process wrote."""

    def found() -> dict[str, Any] | None:
        for line in log_path.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == event:
                return dict(json.loads(line))
        return None

    return wait_until(found, timeout=timeout, message=f"a {event!r} line in {log_path}")


def test_poison_records_become_dead_letter_rows_and_the_rest_is_written(harness: SinkHarness) -> None:
    topic = harness.topics.invoice_candidates
    serde = harness.serdes.for_topic(topic)
    harness.publish([candidate(n) for n in range(10)])
    garbage = [
        (b"P-1", b"not avro at all"),
        (b"P-1", b"\x00\x00\x0f\x42\x3f" + b"\x02"),  # Confluent framing, a schema id the registry never gave
        (b"P-1", serde.encode_value(candidate(99).model_copy(update={"currency": "euro"}))),  # valid Avro, bad value
        (b"P-1", serde.encode_value(candidate(98, role="night\x00shift"))),  # valid, but PostgreSQL refuses NUL
    ]
    for key, value in garbage:  # a NUL in a header too: PostgreSQL's text and jsonb refuse it
        harness.publish_raw(topic, key, value, [("correlation_id", b"poison"), ("note", b"nul\x00byte")])
    harness.publish([candidate(n) for n in range(10, 20)])

    harness.start()
    _wait_caught_up(harness)

    assert harness.query("SELECT count(*) FROM invoice_candidates") == [(20,)]
    letters = harness.query(
        "SELECT record_value, error_topic, error_class, error_message, error_processor, correlation_id "
        "FROM dead_letters ORDER BY source_offset"
    )
    assert [row[0] for row in letters] == [value for _, value in garbage]
    assert {row[1] for row in letters} == {topic.name}
    assert all(row[3] and row[4] == "postgres-sink" and row[5] == "poison" for row in letters)
    assert letters[3][2] == "DataError" and "NUL" in letters[3][3]


def test_records_of_older_writer_schemas_land_like_current_ones(harness: SinkHarness) -> None:
    """Acks, billing responses and exceptions published before project_id, amount and currency were added
    (tests/fixtures/schemas/*.v1.avsc) are read by the sink's compiled readers, resolved to the current
    schema: their rows, and the history ids derived from their payloads, are the model's."""
    registry = harness.serdes.registry
    olds = [
        (harness.topics.posting_acks, "posting-ack.v1.avsc", ack("post-REVENUE-1", "REJECTED", 1)),
        (harness.topics.billing_responses, "billing-response.v1.avsc", response("cand-1", "REJECTED", 1)),
        (harness.topics.exceptions, "exception.v1.avsc", exception("TE-7", "OPEN")),
    ]
    published: list[tuple[Topic, Message]] = []
    for topic, fixture, event in olds:
        old = json.loads((ROOT / "tests" / "fixtures" / "schemas" / fixture).read_text())
        schema_id = registry.register_schema(topic.value_subject, Schema(json.dumps(old), "AVRO"))
        names = {f["name"] for f in old["fields"]}
        record = {k: v for k, v in wire.to_record(event.model_copy(update={"event_id": None})).items() if k in names}
        body = io.BytesIO()
        fastavro.schemaless_writer(body, fastavro.parse_schema(old, named_schemas={}), record)
        value = b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()
        harness.publish_raw(topic, event.key.encode(), value, [])
        published.append((topic, Message(topic=topic.name, value=value)))
    harness.publish([ack("post-REVENUE-1", "POSTED", 2, "doc-9")])  # the current schema, registered over v1

    harness.start()
    _wait_caught_up(harness)

    derived = [derive_event_id(harness.serdes.for_topic(topic).decode(message)) for topic, message in published]
    assert harness.query("SELECT ack_id, status FROM posting_ack_history ORDER BY source_offset") == [
        (derived[0], "REJECTED"), ("ev-ack-post-REVENUE-1-2", "POSTED"),
    ]  # fmt: skip
    assert harness.query("SELECT status, erp_document_id FROM posting_acks") == [("POSTED", "doc-9")]
    assert harness.query("SELECT response_id, status, reason_code FROM billing_response_history") == [
        (derived[1], "REJECTED", "tax_code_missing")
    ]
    assert harness.query("SELECT event_id, kind, amount_at_risk, currency, opened_at FROM exception_history") == [
        (derived[2], "NO_RATE", D("300.0000"), "EUR", AT)
    ]
    assert harness.count("dead_letters") == 0


# --- indexes ------------------------------------------------------------------------------------------------

OPERATIONS_QUESTIONS = {
    "invoice_candidates_project": "SELECT * FROM invoice_candidates WHERE project_id = 'P' AND work_date > '2026-11-1'",
    "invoice_candidates_client": "SELECT * FROM invoice_candidates WHERE client_id = 'C' AND work_date < '2026-12-01'",
    "invoice_candidates_entry": "SELECT * FROM invoice_candidates WHERE time_entry_id = 'TE-1'",
    "invoice_candidates_correlation": "SELECT * FROM invoice_candidates WHERE correlation_id = 'req-1'",
    "invoice_candidates_occurred": "SELECT * FROM invoice_candidates WHERE occurred_at >= now() - interval '1 hour'",
    "posting_requests_project": "SELECT * FROM posting_requests WHERE project_id = 'P-1'",
    "posting_requests_entry": "SELECT * FROM posting_requests WHERE time_entry_id = 'TE-1'",
    "posting_requests_correlation": "SELECT * FROM posting_requests WHERE correlation_id = 'req-1'",
    "posting_requests_target": "SELECT * FROM posting_requests WHERE erp_target = 'cloud-erp'",
    "posting_ack_history_occurred": "SELECT * FROM posting_ack_history WHERE occurred_at < '2026-11-02'",
    "posting_acks_status": "SELECT * FROM posting_acks WHERE status = 'REJECTED'",
    "posting_acks_correlation": "SELECT * FROM posting_acks WHERE correlation_id = 'req-1'",
    "billing_response_history_occurred": "SELECT * FROM billing_response_history WHERE occurred_at > '2026-11-02'",
    "billing_responses_status": "SELECT * FROM billing_responses WHERE status = 'REJECTED'",
    "billing_responses_invoice": "SELECT * FROM billing_responses WHERE invoice_id = 'in_1'",
    "billing_responses_correlation": "SELECT * FROM billing_responses WHERE correlation_id = 'req-1'",
    "exception_history_occurred": "SELECT * FROM exception_history WHERE occurred_at > '2026-11-02'",
    "exceptions_status": "SELECT * FROM exceptions WHERE status = 'OPEN' AND owner = 'billing-ops'",
    "exceptions_project": "SELECT * FROM exceptions WHERE project_id = 'P-1'",
    "exceptions_subject": "SELECT * FROM exceptions WHERE subject_type = 'TIME_ENTRY' AND subject_id = 'TE-1'",
    "exceptions_correlation": "SELECT * FROM exceptions WHERE correlation_id = 'req-1'",
    "exceptions_opened": "SELECT * FROM exceptions WHERE opened_at > '2026-11-02'",
    "dead_letters_error_topic": "SELECT * FROM dead_letters WHERE error_topic = 't' AND error_at > '2026-11-02'",
    "dead_letters_correlation": "SELECT * FROM dead_letters WHERE correlation_id = 'req-1'",
}


@pytest.mark.parametrize("index", list(OPERATIONS_QUESTIONS))
def test_every_operations_question_is_answered_by_its_index(postgres_conninfo: str, index: str) -> None:
    """The read model's indexes (B-tree, hash or BRIN, consumers/postgres/migrations/) each serve the
    operations question they are for; with sequential scans priced out, a question no index can answer
    would still plan one."""
    schema = f"sink_indexes_{uuid.uuid4().hex[:8]}"
    apply_sink_migrations(postgres_conninfo, schema)
    try:
        with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            conn.execute("SET enable_seqscan = off")
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + OPERATIONS_QUESTIONS[index]).fetchall())
        assert f" on {index}" in plan or f" using {index}" in plan, plan
    finally:
        with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
