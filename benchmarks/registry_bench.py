"""What authentication and followers cost the schema registry, against a baseline measured in the same run.

    BACKBONE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python benchmarks/registry_bench.py --requests 500

Starts three registry processes on the broker: a leader and a follower on one throwaway topic with
authentication on, and a single instance on another with `BACKBONE_SCHEMA_REGISTRY_AUTH=none` (the
baseline). Times, one keep-alive client each, the cases taking turns request by request: reads
(`GET /schemas/ids/{id}`) without credentials at the baseline and with them at the leader (after the
first request the hash is cached) and at the follower; writes (registering new subjects) at the
baseline, at the leader, and through the follower (forwarded to the leader, answered once the
follower has read the write back). Prints one JSON object: mean latency per case and each case's ratio to its baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient

from backbone.registry.users import USERS_FILE, ensure_local_users, local_credentials
from backbone.settings import load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(bootstrap: str, topic: str, port: int, home: Path, *, auth: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BACKBONE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BACKBONE_SCHEMA_REGISTRY_PORT": str(port),
        "BACKBONE_SCHEMA_REGISTRY_TOPIC": topic,
        "BACKBONE_SCHEMA_REGISTRY_USERS_FILE": str(home / USERS_FILE),
        "BACKBONE_SCHEMA_REGISTRY_AUDIT_FILE": str(home / f"audit-{port}.log"),
        "BACKBONE_SCHEMA_REGISTRY_AUTH": "basic" if auth else "none",
        "BACKBONE_LOG_LEVEL": "WARNING",
    }
    log = (home / f"registry-{port}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "backbone.registry"], env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_leader(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/leader", timeout=2).json().get("leader"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"registry at {url} did not elect a leader within {timeout:.0f}s")


def schema(name: str) -> dict[str, str]:
    fields = [{"name": "id", "type": "string"}]
    return {"schema": json.dumps({"type": "record", "name": name, "fields": fields})}


def timed(count: int, calls: dict[str, Callable[[int], httpx.Response]]) -> dict[str, float]:
    """Mean seconds per call of each case; the cases take turns, so a busy moment hits them all alike."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(count):
        for name, call in calls.items():
            began = time.perf_counter()
            answer = call(i)
            samples[name].append(time.perf_counter() - began)
            if answer.status_code != 200:
                raise SystemExit(f"{name}: unexpected answer {answer.status_code}: {answer.text}")
    return {name: statistics.fmean(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per case")
    parser.add_argument("--ports", type=int, nargs=3, default=None, help="leader, follower, baseline ports")
    arguments = parser.parse_args()
    bootstrap = load_settings().kafka.servers
    leader_port, follower_port, baseline_port = arguments.ports or (free_port(), free_port(), free_port())
    run = uuid.uuid4().hex[:8]
    topics = [f"_schemas-bench-{run}", f"_schemas-bench-open-{run}"]
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        credentials = local_credentials(ensure_local_users(home, [])[0])
        processes = [start(bootstrap, topics[0], leader_port, home, auth=True)]
        wait_for_leader(f"http://127.0.0.1:{leader_port}")  # the first instance leads
        processes.append(start(bootstrap, topics[0], follower_port, home, auth=True))
        processes.append(start(bootstrap, topics[1], baseline_port, home, auth=False))
        try:
            for port in (follower_port, baseline_port):
                wait_for_leader(f"http://127.0.0.1:{port}")
            figures = measure(arguments.requests, leader_port, follower_port, baseline_port, credentials["writer"])
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            AdminClient({"bootstrap.servers": bootstrap}).delete_topics(topics)
    print(json.dumps(figures, indent=2))


def measure(count: int, leader_port: int, follower_port: int, baseline_port: int, writer: str) -> dict[str, object]:
    user, _, password = writer.partition(":")
    leader = httpx.Client(base_url=f"http://127.0.0.1:{leader_port}", auth=(user, password), timeout=60)
    follower = httpx.Client(base_url=f"http://127.0.0.1:{follower_port}", auth=(user, password), timeout=60)
    baseline = httpx.Client(base_url=f"http://127.0.0.1:{baseline_port}", timeout=60)
    for client in (leader, baseline):
        client.post("/subjects/seed/versions", json=schema("Seed")).raise_for_status()
    follower.get("/schemas/ids/1").raise_for_status()  # the follower has read the seed

    def read(client: httpx.Client) -> Callable[[int], httpx.Response]:
        return lambda _i: client.get("/schemas/ids/1")

    def write(client: httpx.Client, tag: str) -> Callable[[int], httpx.Response]:
        return lambda i: client.post(f"/subjects/{tag}-{i}/versions", json=schema(f"{tag}_{i}".replace("-", "_")))

    cases = {"baseline": baseline, "leader": leader, "follower": follower}
    reads = timed(count, {name: read(client) for name, client in cases.items()})
    writes = timed(count, {name: write(client, name) for name, client in cases.items()})
    return {
        "command": f"python benchmarks/registry_bench.py --requests {count}",
        "read_ms": {k: round(v * 1000, 3) for k, v in reads.items()},
        "write_ms": {k: round(v * 1000, 3) for k, v in writes.items()},
        "read_ratio_to_unauthenticated": {k: round(v / reads["baseline"], 2) for k, v in reads.items()},
        "write_ratio_to_unauthenticated": {k: round(v / writes["baseline"], 2) for k, v in writes.items()},
    }


if __name__ == "__main__":
    main()
