"""Delivery throughput: one billing connector against the billing simulator, next to the simulator alone.

    backbone up   # or BACKBONE_KAFKA_BOOTSTRAP_SERVERS=... BACKBONE_SCHEMA_REGISTRY_URL=... BACKBONE_POSTGRES_DSN=...
    python benchmarks/delivery_bench.py --candidates 10000 --latency-ms 5 --concurrency 64 [--port 31150]

Starts `backbone run billing-sim` with `--latency-ms` of simulated latency in a throwaway schema, then:
1. **baseline**: the simulator alone: the same invoice-item requests (JSON, a unique Idempotency-Key
   each) sent straight to it by the connector's HTTP client with `--concurrency` requests in flight;
2. **connector**: N invoice candidates published to a throwaway prefixed copy of
   `billing.invoice-candidates.v1` and delivered by one `backbone run billing-connector` process
   (`--max-in-flight` = the same concurrency), timed from the start of publishing to the N-th response
   visible to a read_committed reader; the connector has first answered 64 warm-up candidates (its
   start-up, joining the group, is reported apart). CPU per record is the connector process's; the
   engine's own CPU per request is reported for both runs (PostgreSQL's is not: measure it apart).
3. the same two runs against a **stub** engine (`--serve-stub`: a bare asyncio HTTP server in its own
   process that answers every item after the same latency, no database), which shows what the
   connector itself can carry when the system on the other end is not the bottleneck.
Prints one JSON object with the rates and the ratios; the target is 2,000 candidates/s.

`--connector-tree DIR` runs the connector process from another source tree (`git archive <base> | tar
-x -C DIR`), everything else (engine, client, topics) from this one, so old and new connectors are
timed against the same engine and the same baseline in alternation (docs/delivery.md, "Throughput");
`--engine-tree DIR` does the same for the billing simulator. The CPU of the simulator's PostgreSQL
backends (found by the simulator's connections to the server's port) is reported per item too, and so
is the local broker's (`backbone up`'s, found by its pid file) over the connector's run, with its idle
CPU per second measured before the run and subtracted (it serves this benchmark's publisher and reader too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from sink_bench import candidate  # the same synthetic candidates the sink benchmark publishes

from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.kafka.topics import BILLING_RESPONSES, INVOICE_CANDIDATES
from backbone.settings import Settings, load_settings
from consumers.delivery.app import prefixed
from consumers.delivery.http import CannotReach, HttpClient
from consumers.delivery.systems import BillingEngine

ROOT = Path(__file__).resolve().parents[1]
"""The source tree the child processes run from (given to them as PYTHONPATH: the console script alone
would import the checkout the virtualenv was installed from)."""
BACKBONE = str(Path(sys.executable).parent / "backbone")


STUB_ANSWER = b'{"id": "ii_stub", "object": "invoiceitem", "invoice": "in_stub"}'
STUB_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(STUB_ANSWER)).encode()
    + b"\r\n\r\n"
    + STUB_ANSWER
)


async def serve_stub(port: int, latency_ms: int) -> None:
    """A billing engine that stores nothing: every request is answered 200 after `latency_ms`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"), 0
                )
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(latency_ms / 1000)
                writer.write(STUB_RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def start_simulator(
    settings: Settings, port: int, schema: str, latency_ms: int, tree: str | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ) | {"BACKBONE_BILLING_SIM_POOL_SIZE": "40", "BACKBONE_LOG_LEVEL": "WARNING"}
    if schema == "stub":
        tree = None  # the stub is this file's
    env["PYTHONPATH"] = tree or str(ROOT)  # explicit: a relative PYTHONPATH would be read from another cwd
    args = [BACKBONE, "run", "billing-sim", "--port", str(port), "--schema", schema, "--latency-ms", str(latency_ms)]
    if schema == "stub":
        args = [sys.executable, __file__, "--serve-stub", "--port", str(port), "--latency-ms", str(latency_ms)]
    return healthy(subprocess.Popen(args, env=env, cwd=tree or ROOT), port, "the billing simulator")


def healthy(process: subprocess.Popen[bytes], port: int, what: str) -> subprocess.Popen[bytes]:
    """`process` once it answers /healthz on `port` (a minute at most); SystemExit naming `what` if not."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        time.sleep(0.1)  # polling a starting process
    raise SystemExit(f"{what} did not answer /healthz within 60 s")


def broker_pid(settings: Settings) -> int | None:
    """The pid of the broker `backbone up` started from this data directory, when there is one alive."""
    try:
        pid = int((settings.runtime.data_dir / "kafka" / "kafka.pid").read_text().split()[0])
        cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def idle_cpu_per_s(pid: int | None, seconds: float = 2.0) -> float:
    """CPU seconds per second `pid` uses while this benchmark sends it nothing (0 without a pid)."""
    if pid is None:
        return 0.0
    cpu = cpu_seconds(pid)
    time.sleep(seconds)  # measuring an idle interval
    return (cpu_seconds(pid) - cpu) / seconds


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far (this one when None), from /proc."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BackendCpu:
    """CPU seconds of the PostgreSQL backends serving one process: its TCP connections to the server's
    port, matched to backends by client port in `pg_stat_activity`; backends opened meanwhile count whole."""

    def __init__(self, settings: Settings, pid: int) -> None:
        self.settings, self.pid = settings, pid
        self.start = self._now()

    def seconds(self) -> float:
        """CPU seconds the backends used since this was made."""
        return sum(cpu - self.start.get(backend, 0.0) for backend, cpu in self._now().items())

    def _now(self) -> dict[int, float]:
        ports = _client_ports(self.pid, self.settings.postgres.port)
        if not ports:
            return {}
        with psycopg.connect(self.settings.postgres.conninfo(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) AND pid <> pg_backend_pid()",
                (sorted(ports),),
            ).fetchall()
        found = {}
        for (backend,) in rows:
            try:
                found[backend] = cpu_seconds(backend)
            except OSError:  # gone meanwhile
                continue
        return found


def _client_ports(pid: int, server_port: int) -> set[int]:
    """The local ports of `pid`'s TCP connections to `server_port` (from /proc: its socket inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def direct_load(url: str, count: int, concurrency: int) -> tuple[float, float]:
    """The engine alone: `count` invoice items at `concurrency` in flight; (requests/s, client CPU s per request)."""
    engine = BillingEngine()
    calls = [
        engine.call(candidate(10_000_000 + i).model_copy(update={"candidate_id": f"direct-{uuid.uuid4()}"}))
        for i in range(count)
    ]
    client = HttpClient(url, concurrency, timeout=30)  # the connector's own client

    async def send(call: Any) -> None:
        for _ in range(5):  # a connection the server dropped is tried again, as the connector does
            try:
                async with client.slot():
                    answer = await client.post_json(call.path, call.body, call.headers)
            except CannotReach:
                continue
            if answer.status != 200:
                raise SystemExit(f"the engine answered {answer.status}: {answer.body[:300]!r}")
            return
        raise SystemExit("the engine dropped one request's connection five times")

    try:
        started, cpu = time.perf_counter(), cpu_seconds()
        await asyncio.gather(*(send(call) for call in calls))
        return count / (time.perf_counter() - started), (cpu_seconds() - cpu) / count
    finally:
        await client.aclose()


WARM_UP = 64
"""Candidates delivered before the clock starts: the connector has joined its group and opened its connections."""


def publish(settings: Settings, prefix: str, first: int, count: int) -> None:
    topic = prefixed(INVOICE_CANDIDATES, prefix)
    apply_topics(AdminClient(settings.kafka.client_config()), (topic, prefixed(BILLING_RESPONSES, prefix)))
    serde = SerdeCache(registry_client(settings.registry.client_config())).for_topic(topic)
    producer = Producer(settings.kafka.client_config() | {"linger.ms": 5, "partitioner": "murmur2_random"})
    for index in range(first, first + count):
        event = candidate(index)
        while True:
            try:
                producer.produce(topic.name, key=event.key.encode(), value=serde.encode_value(event))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def time_connector(
    settings: Settings, prefix: str, url: str, count: int, concurrency: int, tree: str | None = None
) -> dict[str, float]:
    """Start a connector, let it answer `WARM_UP` candidates, then time `count` more from publish to last answer
    (with the connector's CPU and the local broker's, its idle share subtracted)."""
    broker = broker_pid(settings)
    responses = prefixed(BILLING_RESPONSES, prefix).name
    publish(settings, prefix, 0, WARM_UP)
    reader = Consumer(
        settings.kafka.client_config()
        | {"group.id": f"{prefix}count", "auto.offset.reset": "earliest", "isolation.level": "read_committed"}
    )
    reader.subscribe([responses])
    env = dict(os.environ) | {"BACKBONE_LOG_LEVEL": "WARNING", "BACKBONE_BILLING_CONNECTOR_URL": url}
    env["PYTHONPATH"] = tree or str(ROOT)  # explicit: a relative PYTHONPATH would be read from another cwd
    args = [BACKBONE, "run", "billing-connector", "--topic-prefix", prefix, "--app-id", f"{prefix}connector"]
    args += ["--max-in-flight", str(concurrency)]
    launched = time.perf_counter()
    connector = subprocess.Popen(args, env=env, cwd=tree or ROOT)
    try:
        warm = _await_answers(reader, connector, WARM_UP)
        broker_idle = idle_cpu_per_s(broker)
        started, cpu = time.perf_counter(), cpu_seconds(connector.pid)
        broker_cpu = cpu_seconds(broker) if broker else 0.0
        publish(settings, prefix, WARM_UP, count)
        _await_answers(reader, connector, count)
        done, cpu = time.perf_counter(), cpu_seconds(connector.pid) - cpu
        broker_cpu = (cpu_seconds(broker) - broker_cpu - broker_idle * (done - started)) if broker else 0.0
    finally:
        connector.terminate()
        connector.wait(30)
        reader.close()
    return {
        "start_up_s": round(warm - launched, 2),
        "seconds": round(done - started, 2),
        "rate": count / (done - started),
        "cpu_ms_per_record": 1000 * cpu / count,
        "broker_cpu_ms_per_record": 1000 * broker_cpu / count,
        "broker_idle_cpu_ms_per_s": 1000 * broker_idle,
    }


def _await_answers(reader: Consumer, connector: subprocess.Popen[bytes], count: int) -> float:
    seen, deadline = 0, time.monotonic() + 900
    while seen < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {seen} of {count} responses within 900 s")
        if connector.poll() is not None:
            raise SystemExit(f"the connector exited with {connector.returncode}")
        seen += sum(1 for m in reader.consume(10_000, 0.2) if m.error() is None)
    return time.perf_counter()


def measure(settings: Settings, options: argparse.Namespace, port: int, schema: str) -> dict[str, Any]:
    """The engine alone, then one connector against it (fresh topics), at the same concurrency."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    url = f"http://127.0.0.1:{port}"
    engine = start_simulator(settings, port, schema, options.latency_ms, options.engine_tree)
    try:
        engine_cpu, database = cpu_seconds(engine.pid), BackendCpu(settings, engine.pid)
        load_alone = os.getloadavg()[0]
        alone, client_cpu = asyncio.run(direct_load(url, options.candidates, options.concurrency))
        engine_cpu_alone, engine_cpu = cpu_seconds(engine.pid) - engine_cpu, cpu_seconds(engine.pid)
        database_cpu_alone, database = database.seconds(), BackendCpu(settings, engine.pid)
        load_connector = os.getloadavg()[0]
        connector = time_connector(
            settings, prefix, url, options.candidates, options.concurrency, options.connector_tree
        )
        engine_cpu_connector = cpu_seconds(engine.pid) - engine_cpu
        database_cpu_connector = database.seconds()
    finally:
        engine.terminate()
        engine.wait(30)
    return {
        "load_average": [load_alone, load_connector, os.getloadavg()[0]],
        "alone_per_s": round(alone),
        "connector_per_s": round(connector["rate"]),
        "ratio": round(connector["rate"] / alone, 3),
        "client_cpu_ms_per_request": round(1000 * client_cpu, 3),
        "connector_cpu_ms_per_record": round(connector["cpu_ms_per_record"], 3),
        # the local broker over the connector's run (publishing, the connector, the reader), idle CPU subtracted
        "broker_cpu_ms_per_record_connector": round(connector["broker_cpu_ms_per_record"], 3),
        "broker_idle_cpu_ms_per_s": round(connector["broker_idle_cpu_ms_per_s"], 1),
        "engine_cpu_ms_per_request_alone": round(1000 * engine_cpu_alone / options.candidates, 3),
        "postgres_cpu_ms_per_request_alone": round(1000 * database_cpu_alone / options.candidates, 3),
        # includes the warm-up candidates and the connector's start-up: an upper bound
        "engine_cpu_ms_per_record_connector": round(1000 * engine_cpu_connector / (options.candidates + WARM_UP), 3),
        "postgres_cpu_ms_per_record_connector": round(
            1000 * database_cpu_connector / (options.candidates + WARM_UP), 3
        ),
        "connector_start_up_s": connector["start_up_s"],
        "connector_seconds": connector["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--simulator-candidates", type=int, default=None, help="fewer for the (slow) simulator")
    parser.add_argument("--latency-ms", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--port", type=int, default=31150)
    parser.add_argument("--connector-tree", default=None, help="run the connector from this source tree")
    parser.add_argument("--engine-tree", default=None, help="run the billing simulator from this source tree")
    parser.add_argument("--serve-stub", action="store_true", help="(internal) run the stub engine")
    options = parser.parse_args()
    if options.serve_stub:
        asyncio.run(serve_stub(options.port, options.latency_ms))
        return
    settings = load_settings()
    schema = f"bench_billing_{uuid.uuid4().hex[:8]}"
    report: dict[str, Any] = {
        "latency_ms": options.latency_ms,
        "concurrency": options.concurrency,
        "load_average_before": os.getloadavg()[0],
        "connector_tree": options.connector_tree or str(ROOT),
        "engine_tree": options.engine_tree or str(ROOT),
    }
    try:
        simulator_options = argparse.Namespace(**vars(options))
        simulator_options.candidates = options.simulator_candidates or options.candidates
        report["simulator"] = {"candidates": simulator_options.candidates} | measure(
            settings, simulator_options, options.port, schema
        )
    finally:
        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    report["stub"] = {"candidates": options.candidates} | measure(settings, options, options.port + 1, "stub")
    report["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
