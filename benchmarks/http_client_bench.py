"""CPU per request of the delivery connector's HTTP client against aiohttp and httpx (before), same stub.

    python benchmarks/http_client_bench.py --requests 4000 --concurrency 64 --latency-ms 5 [--port 31160] [--rounds 3]

Starts the stub billing engine of `delivery_bench.py` (a bare asyncio HTTP server in its own process
that answers every request 200 after `--latency-ms`, no database), then alternates, `--rounds` times,
the clients sending the same invoice-item body with `--concurrency` requests in flight:
- **httpx**, held the way the connector held it until the sixth session: one single-connection
  `httpx.AsyncClient` per slot (httpcore's pool re-scans every connection for each queued request);
- **aiohttp**: one `ClientSession` with a pool of `--concurrency` connections, what the connector
  used until the ninth session;
- **connector**: `consumers.delivery.http.HttpClient`, what the connector uses now (asyncio protocol
  and httptools).
Each run warms its connections first, then times `--requests` requests; CPU is this process's own
(user + system, from /proc). Prints one JSON object: per client the median rate and CPU per request,
and the ratios of CPU per request to the connector's. The stub runs in another process, so its CPU is
not counted; on a shared machine the rate depends on the stub and the load, the CPU per request much less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from consumers.delivery.http import HttpClient

BODY = {
    "customer": "C-0001",
    "amount": 15000,
    "currency": "eur",
    "tax_code": "txcd_10000000",
    "description": "TIME 150 min, W-0001, 2026-11-03",
    "metadata": {
        "candidate_id": "cand-0000000000000000000000000000000000000001",
        "kind": "TIME",
        "time_entry_id": "te-0001",
        "project_id": "P-0001",
        "work_date": "2026-11-03",
    },
}
PATH = "/v1/invoiceitems"


def cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed(send: Callable[[int], Awaitable[None]], count: int, concurrency: int) -> tuple[float, float]:
    """(requests/s, CPU s per request) of `count` sends after `concurrency` warm-up sends."""
    await asyncio.gather(*(send(i) for i in range(concurrency)))
    started, cpu = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(send(i) for i in range(count)))
    return count / (time.perf_counter() - started), (cpu_seconds() - cpu) / count


async def with_httpx(url: str, count: int, concurrency: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=url, timeout=30, limits=limits) for _ in range(concurrency)]
    idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
    for client in clients:
        idle.put_nowait(client)

    async def send(i: int) -> None:
        client = await idle.get()
        try:
            response = await client.post(PATH, json=BODY, headers={"Idempotency-Key": f"k-{i}"})
            response.json()
        finally:
            idle.put_nowait(client)

    try:
        return await timed(send, count, concurrency)
    finally:
        for client in clients:
            await client.aclose()


async def with_aiohttp(url: str, count: int, concurrency: int) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
    slots = asyncio.Semaphore(concurrency)

    async def send(i: int) -> None:
        headers = {"Idempotency-Key": f"k-{i}", "Content-Type": "application/json"}
        async with slots, session.post(url + PATH, data=orjson.dumps(BODY), headers=headers) as response:
            orjson.loads(await response.read())

    try:
        return await timed(send, count, concurrency)
    finally:
        await session.close()


async def with_connector(url: str, count: int, concurrency: int) -> tuple[float, float]:
    client = HttpClient(url, concurrency, timeout=30)

    async def send(i: int) -> None:
        async with client.slot():
            answer = await client.post_json(PATH, BODY, {"Idempotency-Key": f"k-{i}"})
        answer.json()

    try:
        return await timed(send, count, concurrency)
    finally:
        await client.aclose()


def start_stub(port: int, latency_ms: int) -> subprocess.Popen[bytes]:
    bench = Path(__file__).with_name("delivery_bench.py")
    args = [sys.executable, str(bench), "--serve-stub", "--port", str(port), "--latency-ms", str(latency_ms)]
    stub = subprocess.Popen(args)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}{PATH}", json={}, timeout=1)
            return stub
        except httpx.TransportError:
            time.sleep(0.1)  # polling a starting process
    stub.kill()
    raise SystemExit("the stub did not answer within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=31160)
    options = parser.parse_args()
    url = f"http://127.0.0.1:{options.port}"
    stub = start_stub(options.port, options.latency_ms)
    clients = {"httpx": with_httpx, "aiohttp": with_aiohttp, "connector": with_connector}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    load_before = os.getloadavg()[0]
    try:
        for _ in range(options.rounds):
            for name, run in clients.items():
                runs[name].append(asyncio.run(run(url, options.requests, options.concurrency)))
    finally:
        stub.terminate()
        stub.wait(10)
    report: dict[str, Any] = {
        "requests": options.requests,
        "concurrency": options.concurrency,
        "latency_ms": options.latency_ms,
        "load_average_before": load_before,
    }
    for name, results in runs.items():
        report[name] = {
            "per_s": round(statistics.median(rate for rate, _ in results)),
            "cpu_us_per_request": round(1e6 * statistics.median(cpu for _, cpu in results)),
        }
    for name in ("httpx", "aiohttp"):
        report[f"cpu_ratio_{name}_to_connector"] = round(
            report[name]["cpu_us_per_request"] / report["connector"]["cpu_us_per_request"], 1
        )
    report["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
