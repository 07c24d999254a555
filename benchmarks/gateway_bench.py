"""Connector figures: gateway accepted requests/s and p99 with signed webhooks, and import rows/s.

    BACKBONE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 BACKBONE_SCHEMA_REGISTRY_URL=http://127.0.0.1:38281 \
        python benchmarks/gateway_bench.py --requests 3000 --concurrency 32 --rows 20000

The gateway runs in this process with the real Emitter on throwaway topics (loopback only); every
request is a Toggl webhook signed with HMAC-SHA256 and counted only when it got its 202 (i.e. after the
Kafka delivery report). Imports are measured parse + map (no Kafka) on synthetic files shaped like the
fixtures, then end to end (publish to throwaway topics) unless --no-publish.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from confluent_kafka.admin import AdminClient, NewTopic

from backbone.kafka import topics as catalog
from backbone.observability import configure_logging
from backbone.settings import load_settings
from producers.clockify import read_clockify
from producers.emitter import Emitter
from producers.gateway import GatewaySettings, create_app
from producers.gateway.security import toggl_signature
from producers.harvest import read_harvest
from producers.identity import EntryMapper
from producers.parsing import ImportReport, ReadOptions
from producers.toggl import read_toggl

SECRET = "bench-secret"


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_topics(servers: str) -> dict[str, catalog.Topic]:
    admin = AdminClient({"bootstrap.servers": servers})
    made = {
        t.event_type: dataclasses.replace(t, name=unique_name(f"bench-{t.event_type}"))
        for t in (catalog.TIME_ENTRIES, catalog.APPROVALS)
        if t.event_type
    }
    for future in admin.create_topics([NewTopic(t.name, t.partitions, 1) for t in made.values()]).values():
        future.result(timeout=30)
    return made


def toggl_body(i: int) -> bytes:
    return json.dumps(
        {
            "event_id": i,
            "metadata": {"action": "updated"},
            "payload": {
                "id": 10_000_000 + i,
                "project_id": 7,
                "user_id": 9,
                "billable": True,
                "start": "2024-03-04T09:00:00Z",
                "duration": 1800,
                "description": f"bench {i}",
                "at": "2024-03-04T09:30:00Z",
            },
        }
    ).encode()


async def flood(url: str, total: int, concurrency: int) -> tuple[list[float], dict[int, int], float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            body = toggl_body(i)
            started = time.perf_counter()
            response = await client.post(
                "/v1/webhooks/toggl", content=body, headers={"X-Webhook-Signature-256": toggl_signature(SECRET, body)}
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 202:
                latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, statuses, time.perf_counter() - started


def _client_process(url: str, total: int, concurrency: int, results: Any) -> None:
    asyncio.run(flood(url, min(200, total), concurrency))  # warm-up: schema registration, connections
    results.put(asyncio.run(flood(url, total, concurrency)))


def run_client(url: str, total: int, concurrency: int) -> tuple[list[float], dict[int, int], float]:
    """The load generator in its own process, so it does not share the gateway's GIL."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_client_process, args=(url, total, concurrency, results))
    process.start()
    outcome = results.get(timeout=600)
    process.join()
    return outcome  # type: ignore[no-any-return]


def bench_gateway(total: int, concurrency: int) -> dict[str, Any]:
    settings = load_settings()
    topics = make_topics(settings.kafka.servers)
    # Access logs stay on (JSON, as `backbone run gateway` logs); run with 2>/dev/null to discard them.
    configure_logging("gateway", level="INFO", fmt="json")
    with Emitter(settings, topics=topics) as emitter:
        gateway = GatewaySettings(webhook_secrets={"toggl": SECRET}, rate_per_s=1e6, rate_burst=1_000_000)
        app = create_app(gateway, emitter)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        latencies, statuses, seconds = run_client(url, total, concurrency)
        server.should_exit = True
        thread.join()
    latencies.sort()
    return {
        "requests": total,
        "concurrency": concurrency,
        "statuses": statuses,
        "accepted_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
    }


def write_inputs(directory: Path, rows: int) -> dict[str, Path]:
    harvest, toggl, clockify = directory / "harvest.csv", directory / "toggl.csv", directory / "clockify.csv"
    with open(harvest, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(
            [
                "Date",
                "Client",
                "Project",
                "Project Code",
                "Task",
                "Notes",
                "Hours",
                "Billable?",
                "Invoiced?",
                "Approved?",
                "First Name",
                "Last Name",
                "Employee Id",
                "Currency",
            ]
        )
        for i in range(rows):
            out.writerow(
                [
                    f"2024-03-{i % 28 + 1:02d}",
                    "Acme",
                    "Relaunch",
                    "WR-01",
                    "Design",
                    f"note {i}",
                    f"{i % 8},5",
                    "Yes",
                    "No",
                    "Yes" if i % 2 else "No",
                    "Ann",
                    "Lee",
                    f"E-{i % 50}",
                    "Euro - EUR",
                ]
            )
    with open(toggl, "w", newline="", encoding="utf-8-sig") as handle:
        out = csv.writer(handle)
        out.writerow(
            [
                "User",
                "Email",
                "Client",
                "Project",
                "Task",
                "Description",
                "Billable",
                "Start date",
                "Start time",
                "End date",
                "End time",
                "Duration",
                "Tags",
            ]
        )
        for i in range(rows):
            clock = f"{i % 12 + 1:02d}:{i % 60:02d}:{(i // 60) % 60:02d} AM"
            out.writerow(
                [
                    "Ann",
                    f"ann{i % 50}@example.com",
                    "Acme",
                    "Relaunch",
                    "",
                    f"d {i}",
                    "Yes",
                    f"2024-03-{i % 28 + 1:02d}",
                    clock,
                    "2024-03-01",
                    clock,
                    "12:20:00 AM",
                    "",
                ]
            )
    with open(clockify, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, quoting=csv.QUOTE_ALL)
        out.writerow(
            [
                "Project",
                "Client",
                "Description",
                "Task",
                "User",
                "Email",
                "Billable",
                "Start Date",
                "Start Time",
                "End Date",
                "End Time",
                "Duration (h)",
                "Billable Rate (USD)",
            ]
        )
        for i in range(rows):
            clock = f"{i % 12 + 1:02d}:{i % 60:02d}:{(i // 60) % 60:02d} PM"
            out.writerow(
                [
                    "Relaunch",
                    "Acme",
                    f"d {i}",
                    "Design",
                    "Ann",
                    f"ann{i % 50}@example.com",
                    "Yes",
                    f"03/{i % 28 + 1:02d}/2024",
                    clock,
                    f"03/{i % 28 + 1:02d}/2024",
                    clock,
                    "01:30:00",
                    "100.00",
                ]
            )
    return {"harvest": harvest, "toggl": toggl, "clockify": clockify}


def bench_imports(rows: int, publish: bool) -> dict[str, Any]:
    readers = {"harvest": read_harvest, "toggl": read_toggl, "clockify": read_clockify}
    options = ReadOptions(exported_at=datetime(2024, 11, 1, tzinfo=UTC))
    results: dict[str, Any] = {}
    settings = load_settings() if publish else None
    topics = make_topics(settings.kafka.servers) if settings else None
    with tempfile.TemporaryDirectory() as directory:
        files = write_inputs(Path(directory), rows)
        for name, reader in readers.items():
            report = ImportReport()
            started = time.perf_counter()
            count = sum(1 for _ in report.events_of(reader(files[name], options, EntryMapper())))
            parse_s = time.perf_counter() - started
            result: dict[str, Any] = {
                "rows": report.records,
                "events": count,
                "rejected": len(report.rejections),
                "parse_rows_per_s": round(report.records / parse_s),
            }
            if settings and topics:
                with Emitter(settings, topics=topics) as emitter:
                    report = ImportReport()
                    started = time.perf_counter()
                    emitter.publish(report.events_of(reader(files[name], options, EntryMapper())))
                    result["end_to_end_rows_per_s"] = round(report.records / (time.perf_counter() - started))
            results[name] = result
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--no-publish", action="store_true", help="imports: parse + map only")
    parser.add_argument("--skip-gateway", action="store_true")
    args = parser.parse_args()
    figures = {"imports": bench_imports(args.rows, not args.no_publish)}
    if not args.skip_gateway:
        figures["gateway_signed_webhooks"] = bench_gateway(args.requests, args.concurrency)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
