"""The ERP simulator alone: journal lines per second and CPU per line, of the simulator and of its PostgreSQL.

    backbone up   # or BACKBONE_POSTGRES_* of another cluster
    python benchmarks/erp_sim_bench.py --lines 4000 --latency-ms 5 --concurrency 64 [--engine-tree DIR]

Starts `backbone run erp-sim` (a throwaway instance name, so a throwaway schema) with `--latency-ms` of
simulated latency, warms it with 200 lines, then posts `--lines` journal lines with unique external ids
through the delivery connector's own HTTP client with `--concurrency` requests in flight. `--engine-tree
DIR` runs the simulator from another source tree (`git archive <base> | tar -x -C DIR`), so old and new
simulators are timed against the same client in alternation (docs/delivery.md, "Tenth session"). Prints
one JSON object.
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
from typing import Any

import psycopg
from delivery_bench import BACKBONE, ROOT, BackendCpu, cpu_seconds, healthy

from backbone.settings import load_settings
from consumers.delivery.http import CannotReach, HttpClient


def journal_line(index: int) -> dict[str, Any]:
    """The index-th line: a unique external id, projects, workers and days cycling like sink_bench's candidates."""
    return {
        "externalId": f"post-{uuid.uuid4()}",
        "type": "REVENUE" if index % 2 else "COST",
        "project": f"P-{index % 200}",
        "worker": f"W-{index % 250}",
        "tranDate": f"2026-11-{1 + index % 28:02d}",
        "amount": f"{(15 + index % 480) * 2.5:.2f}",
        "currency": "EUR",
        "memo": "bench",
    }


async def post_lines(url: str, count: int, concurrency: int) -> None:
    client = HttpClient(url, concurrency, timeout=30)

    async def send(index: int) -> None:
        for _ in range(5):  # a connection the server dropped is tried again, as the connector does
            try:
                async with client.slot():
                    answer = await client.post_json("/v1/journal-lines", journal_line(index), {})
            except CannotReach:
                continue
            if answer.status != 201:
                raise SystemExit(f"the ERP answered {answer.status}: {answer.body[:300]!r}")
            return
        raise SystemExit("the ERP dropped one request's connection five times")

    try:
        await asyncio.gather(*(send(index) for index in range(count)))
    finally:
        await client.aclose()


def start_erp(port: int, name: str, latency_ms: int, tree: str | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ) | {"BACKBONE_ERP_SIM_POOL_SIZE": "40", "BACKBONE_LOG_LEVEL": "WARNING"}
    env["PYTHONPATH"] = tree or str(ROOT)  # explicit: a relative PYTHONPATH would be read from another cwd
    args = [BACKBONE, "run", "erp-sim", "--name", name, "--port", str(port), "--latency-ms", str(latency_ms)]
    return healthy(subprocess.Popen(args, env=env, cwd=tree or ROOT), port, "the ERP simulator")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=4000)
    parser.add_argument("--latency-ms", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--port", type=int, default=31170)
    parser.add_argument("--engine-tree", default=None, help="run the ERP simulator from this source tree")
    options = parser.parse_args()
    settings = load_settings()
    name = f"bench{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:{options.port}"
    engine = start_erp(options.port, name, options.latency_ms, options.engine_tree)
    try:
        asyncio.run(post_lines(url, 200, options.concurrency))  # connections opened, schema warm
        load_before, cpu, database = os.getloadavg()[0], cpu_seconds(engine.pid), BackendCpu(settings, engine.pid)
        started = time.perf_counter()
        asyncio.run(post_lines(url, options.lines, options.concurrency))
        elapsed = time.perf_counter() - started
        report = {
            "engine_tree": options.engine_tree or str(ROOT),
            "lines": options.lines,
            "lines_per_s": round(options.lines / elapsed),
            "engine_cpu_ms_per_line": round(1000 * (cpu_seconds(engine.pid) - cpu) / options.lines, 3),
            "postgres_cpu_ms_per_line": round(1000 * database.seconds() / options.lines, 3),
            "load_average": [load_before, os.getloadavg()[0]],
        }
    finally:
        engine.terminate()
        engine.wait(30)
        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "erp_sim_{name}" CASCADE')
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
