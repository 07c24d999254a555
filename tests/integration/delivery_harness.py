"""Helpers for the delivery tests: simulator and connector processes on loopback, and reading what they hold.

Simulators run as `backbone run billing-sim` / `backbone run erp-sim` processes on free loopback ports,
each in a PostgreSQL schema of its own (dropped afterwards); connectors as `backbone run
billing-connector` / `erp-connector` processes on a test's prefixed topics, with short retry and breaker
timings so a test takes seconds. Their logs go to the test data directory.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from backbone.settings import Settings
from tests.support import unique_name, wait_until

ROOT = Path(__file__).resolve().parents[2]
BACKBONE = str(Path(sys.executable).parent / "backbone")
ADMIN = "admin-token-for-delivery-tests"
FAST = {
    "REQUEST_TIMEOUT_S": "3",
    "MAX_ATTEMPTS": "3",
    "BACKOFF_INITIAL_S": "0.05",
    "BACKOFF_MAX_S": "0.2",
    "BACKOFF_JITTER_S": "0.05",
    "RETRY_AFTER_CAP_S": "0.5",
    "RETRY_DELAY_S": "0.3",
    "BREAKER_FAILURES": "3",
    "BREAKER_RESET_S": "1",
}
"""Connector settings that keep a test short: the same rules, smaller numbers."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Simulator:
    """One simulator process and an HTTP client of its API and admin endpoint."""

    kind: str
    url: str
    schema: str
    process: subprocess.Popen[bytes]
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def faults(self, **plan: Any) -> None:
        response = self.client.post("/admin/faults", json=plan, headers={"Authorization": f"Bearer {ADMIN}"})
        assert response.status_code == 200, response.text

    def heal(self) -> None:
        assert self.client.delete("/admin/faults", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200

    def invoice_items(self) -> list[dict[str, Any]]:
        return self.client.get("/v1/invoiceitems", params={"limit": 10_000}).json()["data"]  # type: ignore[no-any-return]

    def journal_lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        while True:
            page = self.client.get("/v1/journal-lines", params={"limit": 1000, "offset": len(lines)}).json()
            lines += page["items"]
            if not page["hasMore"]:
                return lines


@dataclass
class Connector:
    """One connector process: its command line, environment, log and metrics port."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Connector:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus series from the connector's /metrics (0 when absent)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


class Processes:
    """Every simulator and connector one test starts; all stopped (and schemas dropped) by `close`."""

    def __init__(self, settings: Settings, conninfo: str) -> None:
        self.settings = settings
        self.conninfo = conninfo
        self.simulators: list[Simulator] = []
        self.connectors: list[Connector] = []
        self.sink_schemas: list[str] = []
        self.log_dir = settings.runtime.data_dir.resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["BACKBONE_KAFKA_BOOTSTRAP_SERVERS"] = self.settings.kafka.servers
        env["BACKBONE_SCHEMA_REGISTRY_URL"] = self.settings.registry.endpoint
        env.setdefault("BACKBONE_LOG_LEVEL", "INFO")
        return env | (extra or {})

    def billing_sim(self, *flags: str) -> Simulator:
        schema = unique_name("billing_sim").replace("-", "_")
        return self._simulator("billing", ["billing-sim", "--schema", schema, *flags], schema, "BILLING")

    def erp_sim(self, *flags: str) -> Simulator:
        name = unique_name("erp").replace("-", "_")
        return self._simulator("erp", ["erp-sim", "--name", name, *flags], f"erp_sim_{name}", "ERP")

    def _simulator(self, kind: str, args: list[str], schema: str, prefix: str) -> Simulator:
        port = free_port()
        env = self._env({f"BACKBONE_{prefix}_SIM_ADMIN_TOKEN": ADMIN, f"BACKBONE_{prefix}_SIM_POOL_SIZE": "20"})
        log = open(self.log_dir / f"{schema}.log", "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(
            [BACKBONE, "run", *args, "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        simulator = Simulator(kind, f"http://127.0.0.1:{port}", schema, process)
        self.simulators.append(simulator)

        def answers() -> bool:
            assert process.poll() is None, f"the {kind} simulator exited; see {log.name}"
            try:
                return simulator.client.get("/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=60, message=f"{kind} simulator answers /healthz")
        return simulator

    def billing_connector(self, prefix: str, url: str, **settings: str) -> Connector:
        args = [
            BACKBONE,
            "run",
            "billing-connector",
            "--topic-prefix",
            prefix,
            "--app-id",
            f"{prefix}billing",
            "--url",
            url,
        ]
        return self._connector(args, "BILLING_CONNECTOR", f"{prefix}billing", settings)

    def erp_connector(self, prefix: str, target: str, url: str, **settings: str) -> Connector:
        args = [
            BACKBONE, "run", "erp-connector", "--target", target, "--url", url,
            "--topic-prefix", prefix, "--app-id", f"{prefix}erp-{target}",
        ]  # fmt: skip
        return self._connector(args, "ERP_CONNECTOR", f"{prefix}erp-{target}", settings)

    def _connector(self, args: list[str], section: str, name: str, settings: dict[str, str]) -> Connector:
        port = free_port()
        values = (FAST if section != "SINK" else {}) | {key.upper(): value for key, value in settings.items()}
        env = self._env({f"BACKBONE_{section}_{key}": value for key, value in values.items()})
        env["BACKBONE_METRICS_PORT"] = str(port)
        connector = Connector(args, env, self.log_dir / f"{name}.log", port).start()
        self.connectors.append(connector)
        return connector

    def sink(self, prefix: str, schema: str) -> Connector:
        """`backbone run sink` on the test's topics into its own schema (dropped by `close`)."""
        self.sink_schemas.append(schema)
        args = [BACKBONE, "run", "sink", "--topic-prefix", prefix, "--schema", schema, "--group-id", f"{prefix}sink"]
        return self._connector(args, "SINK", f"{prefix}sink", {})

    def check_alive(self) -> None:
        dead = [
            c.log_path.name for c in self.connectors if c.process is not None and c.process.poll() not in (None, -9)
        ]
        assert not dead, f"a connector exited on its own; see {dead} in {self.log_dir}"

    def close(self) -> None:
        for connector in self.connectors:
            connector.stop()
        for simulator in self.simulators:
            simulator.client.close()
            if simulator.process.poll() is None:
                simulator.process.terminate()
                simulator.process.wait(timeout=30)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for schema in [s.schema for s in self.simulators] + self.sink_schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def minor(amount: Decimal, places: int = 2) -> int:
    return int(amount.scaleb(places))
