"""Connector figures: gateway accepted signed webhooks/s and p99 under wrk, and import rows/s.

    bash benchmarks/setup_bench.sh            # installs Debian's wrk (apt) among the baselines
    BACKBONE_KAFKA_PORT=... BACKBONE_SCHEMA_REGISTRY_PORT=... \
        .venv/bin/python benchmarks/gateway_bench.py --seconds 20 --port 27150 --rows 20000

The gateway runs as `backbone run gateway` (its own process, access logs on, to a file) against the
configured broker and registry, publishing to the catalog topics. The load comes from wrk with a Lua
script (`benchmarks/wrk/signed_webhooks.lua`) over distinct Toggl deliveries pre-signed with
HMAC-SHA256: no delivery is sent twice, so every 202 is an event the broker acknowledged. Two runs:
saturation (`--connections`, no pacing) gives accepted requests/s; a paced run offering `--rate`
requests/s (a schedule of send slots over rate/8 connections) gives the latency percentiles that
matter. The CPU seconds of wrk and of the gateway are measured (wait4 / /proc), so a load generator
that is itself the bottleneck shows.
Imports are measured in process, the validation pass (parse, map, encode into a spool; no Kafka) on
synthetic files shaped like the fixtures, then with the spool published to throwaway topics unless
--no-publish; `benchmarks/import_bench.py` runs the whole `backbone import` command.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient, NewTopic

from backbone.kafka import topics as catalog
from backbone.settings import load_settings
from producers.clockify import read_clockify
from producers.emitter import Emitter
from producers.gateway.security import toggl_signature
from producers.harvest import read_harvest
from producers.identity import EntryMapper
from producers.importing import validate
from producers.parsing import ReadOptions
from producers.spool import Spool
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


WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "signed_webhooks.lua"


def write_deliveries(path: Path, count: int, offset: int) -> None:
    """`count` distinct Toggl deliveries, one a line: signature, tab, body."""
    with path.open("w") as out:
        for i in range(offset, offset + count):
            body = toggl_body(i)
            out.write(f"{toggl_signature(SECRET, body)}\t{body.decode()}\n")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BACKBONE_GATEWAY_PORT": str(port),
        "BACKBONE_GATEWAY_WEBHOOK_SECRETS": json.dumps({"toggl": SECRET}),
        "BACKBONE_GATEWAY_RATE_PER_S": "1000000",
        "BACKBONE_GATEWAY_RATE_BURST": "1000000",
    }
    command = [sys.executable, "-m", "backbone.cli", "run", "gateway"]
    gateway = subprocess.Popen(command, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return gateway
        except httpx.TransportError:
            time.sleep(0.2)
    gateway.kill()
    raise SystemExit(f"the gateway did not start; see {log_path}")


def run_wrk(url: str, deliveries: Path, *, threads: int, connections: int, seconds: int, rate: int) -> dict[str, Any]:
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
    ]
    command += [url, "--", str(deliveries), str(threads), str(rate)]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output = wrk.stdout.read().decode() if wrk.stdout else ""
    _, status, usage = os.wait4(wrk.pid, 0)
    wrk.returncode = os.waitstatus_to_exitcode(status)
    result_line = next((line for line in output.splitlines() if line.startswith("RESULT ")), None)
    if result_line is None:
        raise SystemExit(f"wrk printed no RESULT line:\n{output}")
    figures = {k: int(v) for k, v in (pair.split("=") for pair in result_line.split()[1:])}
    duration = figures["duration_us"] / 1e6
    return {
        **figures,
        "wrk_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "wrk_cpu_share_of_a_core": round((usage.ru_utime + usage.ru_stime) / duration, 2),
        "seconds": round(duration, 2),
    }


def bench_gateway(seconds: int, connections: int, rate: int, port: int) -> dict[str, Any]:
    """Saturation and paced runs of wrk against `backbone run gateway`."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run bash benchmarks/setup_bench.sh")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        log_path = Path(directory) / "gateway.log"
        gateway = start_gateway(port, log_path)
        url = f"http://127.0.0.1:{port}"
        try:
            # distinct deliveries for every run, generous for a fast machine; warm-up first
            # the paced run offers `rate` requests/s on enough connections to keep it up while each waits
            # up to ~100 ms for its answer (Little's law: rate x 0.1 s in flight, with room to spare)
            paced_connections = max(16, rate // 8)
            runs = {
                "warm_up": dict(threads=1, connections=4, seconds=3, rate=0),
                "saturation": dict(threads=1, connections=connections, seconds=seconds, rate=0),
                "paced": dict(threads=1, connections=paced_connections, seconds=seconds, rate=rate),
            }
            for offset, (name, options) in enumerate(runs.items()):
                deliveries = Path(directory) / f"{name}.tsv"
                write_deliveries(deliveries, 4000 * seconds, offset * 10_000_000)
                cpu_before = cpu_seconds(gateway.pid)
                figures = run_wrk(url, deliveries, **options)  # type: ignore[arg-type]
                gateway_cpu = cpu_seconds(gateway.pid) - cpu_before
                figures["gateway_cpu_share_of_a_core"] = round(gateway_cpu / figures["seconds"], 2)
                # the most stable figure on a shared machine: the whole process, librdkafka's threads included
                figures["gateway_cpu_ms_per_accepted"] = round(gateway_cpu / max(figures["accepted"], 1) * 1000, 3)
                figures["accepted_per_s"] = round(figures["accepted"] / figures["seconds"], 1)
                figures["offered_per_s"] = round(figures["requests"] / figures["seconds"], 1)
                figures["p99_ms"] = round(figures["p99_us"] / 1000, 1)
                figures["p50_ms"] = round(figures["p50_us"] / 1000, 1)
                results[name] = {**options, **figures}
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=60)
    del results["warm_up"]
    return results


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
    """Per tracker: the validation pass as `backbone import` runs it (read, map, encode into a spool), then
    the spool produced by a bulk emitter; start-up and the inspection pass are not included
    (`benchmarks/import_bench.py` times the whole command)."""
    readers = {"harvest": read_harvest, "toggl": read_toggl, "clockify": read_clockify}
    # Clockify writes dates in the workspace's format (here MM/DD/YYYY). `backbone import` detects the order
    # from the file before reading it; the readers called directly here are told it (ISO dates ignore it).
    options = ReadOptions(exported_at=datetime(2024, 11, 1, tzinfo=UTC), date_order="MDY")
    results: dict[str, Any] = {}
    settings = load_settings() if publish else None
    topics = make_topics(settings.kafka.servers) if settings else None
    with tempfile.TemporaryDirectory() as directory:
        files = write_inputs(Path(directory), rows)
        for name, reader in readers.items():
            mapper = EntryMapper()
            with Spool() as spool:
                mapper.encode_with(spool.encoder)
                started = time.perf_counter()
                checked = validate(reader(files[name], options, mapper), spool=spool)
                parse_s = time.perf_counter() - started
                result: dict[str, Any] = {
                    "rows": checked.records,
                    "events": checked.events,
                    "rejected": checked.rejected,
                    "parse_rows_per_s": round(checked.records / parse_s),
                }
                if settings and topics:
                    with Emitter(settings, topics=topics, bulk=True) as emitter:  # as `backbone import` publishes
                        started = time.perf_counter()
                        for event_type in spool.event_types:
                            emitter.publish_encoded(topics[event_type], spool.records(event_type))
                        seconds = parse_s + time.perf_counter() - started
                        result["end_to_end_rows_per_s"] = round(checked.records / seconds)
            results[name] = result
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections of the saturation run")
    parser.add_argument("--rate", type=int, default=500, help="requests/s the paced run offers")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BACKBONE_GATEWAY_PORT", "8088")))
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--no-publish", action="store_true", help="imports: parse + map only")
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument("--skip-imports", action="store_true")
    args = parser.parse_args()
    figures: dict[str, Any] = {"command": " ".join(sys.argv), "load_average_start": os.getloadavg()[0]}
    if not args.skip_imports:
        figures["imports"] = bench_imports(args.rows, not args.no_publish)
    if not args.skip_gateway:
        figures["gateway_signed_webhooks"] = bench_gateway(args.seconds, args.connections, args.rate, args.port)
    figures["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
