"""`backbone up`, `down` and `status`: the local runtime as one object.

`LocalRuntime.up` starts, in order, the Kafka broker, the schema registry and PostgreSQL (each only
when it is not configured as external and not already running), then applies the topic catalog.
Each step reports one line through `say`, so the CLI shows progress and an operator sees which
service failed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient

from backbone.errors import ServiceUnavailableError
from backbone.runtime.kafka import LocalKafka, broker_answers
from backbone.runtime.postgres import LocalPostgres, answers, find_bin_dir
from backbone.runtime.processes import ServiceProcess, require_free_port
from backbone.settings import LOCAL_REGISTRY_FILE as CREDENTIALS_FILE
from backbone.settings import Settings, with_local_registry

USERS_FILE = "users.json"

Say = Callable[[str], None]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | stopped | external | unavailable
    address: str
    pid: int | None = None

    def line(self) -> str:
        pid = f" (pid {self.pid})" if self.pid else ""
        return f"{self.name:<9} {self.state:<11} {self.address}{pid}"


class LocalRegistry:
    """The schema registry (`python -m backbone.registry`) as background processes: one per replica.

    Instance 1 listens on `port`, the others on `replica_ports` (default port+1, ...); they share the
    store topic and elect a leader among themselves. On first start the users (one per role) are created
    in the registry's data directory (`backbone.registry.users`); the registry reads their hashes, the
    local clients the passwords (`backbone.settings.with_local_registry`).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.runtime.data_dir.resolve() / "registry"
        self.processes = [
            ServiceProcess(_instance_name(i), self.home, marker="backbone.registry")
            for i in range(len(settings.registry.ports))
        ]
        self.created_users = False

    @property
    def process(self) -> ServiceProcess:
        """The first instance (the one a single-instance setup runs)."""
        return self.processes[0]

    @property
    def address(self) -> str:
        return self.settings.registry.endpoint

    @property
    def credentials_file(self) -> Path:
        return self.home / CREDENTIALS_FILE

    def start(self) -> bool:
        """Start every instance that does not run yet; True when one was started."""
        from backbone.registry.users import ensure_local_users

        registry = self.settings.registry
        _path, self.created_users = ensure_local_users(self.home, registry.ports)
        started = False
        for process, port in zip(self.processes, registry.ports, strict=True):
            if process.pid() is None:
                require_free_port(port, "the schema registry", "BACKBONE_SCHEMA_REGISTRY_PORT / _REPLICA_PORTS")
                process.start([sys.executable, "-m", "backbone.registry"], env=self._environment(port))
                started = True
        self.wait_ready(timeout=60)
        return started

    def _environment(self, port: int) -> dict[str, str]:
        registry = self.settings.registry
        return {
            "BACKBONE_KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka.servers,
            "BACKBONE_SCHEMA_REGISTRY_PORT": str(port),
            "BACKBONE_SCHEMA_REGISTRY_TOPIC": registry.topic,
            "BACKBONE_SCHEMA_REGISTRY_USERS_FILE": str(self.home / USERS_FILE),
            "BACKBONE_SCHEMA_REGISTRY_AUDIT_FILE": str(self.home / "audit.log"),
            "BACKBONE_SCHEMA_REGISTRY_ADVERTISED_URL": f"http://127.0.0.1:{port}",
        }

    def wait_ready(self, *, timeout: float) -> None:
        """Until every instance answers and they agree on a leader (so writes work at once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.pid() is None:
                    raise ServiceUnavailableError(
                        f"the schema registry exited during start; last lines of {process.log_file}:\n"
                        f"{process.log_tail()}",
                        hint=f"is port {self.settings.registry.port} taken? Set BACKBONE_SCHEMA_REGISTRY_PORT",
                    )
            if all(registry_has_leader(url) for url in self.settings.registry.endpoints):
                return
            time.sleep(0.1)
        raise ServiceUnavailableError(
            f"the schema registry did not answer within {timeout:.0f}s:\n{self.process.log_tail()}",
            hint="run `backbone down` and `backbone up` again",
        )

    def pids(self) -> list[int | None]:
        return [process.pid() for process in self.processes]

    def stop(self) -> bool:
        """Stop every instance this data directory's pid files name (also replicas of an earlier `up`)."""
        names = {p.name for p in self.processes} | {f.stem for f in self.home.glob("registry*.pid")}
        stopped = [ServiceProcess(name, self.home, marker="backbone.registry").stop(timeout=20) for name in names]
        return any(stopped)


def _instance_name(index: int) -> str:
    return "registry" if index == 0 else f"registry-{index + 1}"


def registry_answers(url: str) -> bool:
    """Whether a registry answers at `url` (its open health path: no credentials needed)."""
    try:
        return httpx.get(f"{url}/", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def registry_has_leader(url: str) -> bool:
    """Whether the backbone registry at `url` answers and knows its leader."""
    try:
        answer = httpx.get(f"{url}/leader", timeout=1.0)
        return answer.status_code == 200 and bool(answer.json().get("leader"))
    except (httpx.HTTPError, ValueError):
        return False


class LocalRuntime:
    """Everything `backbone up` manages for one data directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = LocalKafka(settings.runtime, settings.kafka)
        self.registry = LocalRegistry(settings)
        self.postgres = LocalPostgres(settings.runtime, settings.postgres)

    def up(self, say: Say = print) -> None:
        """Start what is needed, apply the catalog and register the schemas; one line per service."""
        self.settings.runtime.data_dir.mkdir(parents=True, exist_ok=True)
        self._start_kafka(say)
        self._apply_topics(say)
        self._start_registry(say)
        self._register_schemas(say)
        self._start_postgres(say)

    def _start_kafka(self, say: Say) -> None:
        kafka = self.settings.kafka
        if kafka.is_external:
            _check_external_kafka(self.settings)
            say(f"kafka     external    {kafka.servers}")
            return
        started = _timed(self.kafka.start)
        say(f"kafka     {'started' if started[0] else 'running':<11} {self.kafka.address}  ({started[1]:.1f}s)")

    def _apply_topics(self, say: Say) -> None:
        from backbone.kafka.admin import apply_topics

        report = apply_topics(self.admin(), replication_factor=self.settings.kafka.replication_factor)
        say(f"topics    {len(report.created)} created, {len(report.unchanged)} unchanged, {len(report.drift)} drift")
        for problem in report.drift:
            say(f"  drift: {problem}")

    def _start_registry(self, say: Say) -> None:
        if self.settings.registry.is_external:
            say(f"registry  external    {self.settings.registry.endpoint}")
            return
        started = _timed(self.registry.start)
        say(f"registry  {'started' if started[0] else 'running':<11} {self.registry.address}  ({started[1]:.1f}s)")
        created = "created" if self.registry.created_users else "kept"
        say(f"          credentials {created} in {self.registry.credentials_file} (reader, writer, admin; mode 0600)")

    def _register_schemas(self, say: Say) -> None:
        from backbone.kafka.serde import register_all, registry_client  # imported late: the Avro stack is heavy

        # Read again: on the first run the credentials were created after the settings were loaded.
        registry = with_local_registry(self.settings.registry, self.registry.home)
        ids = register_all(registry_client(registry.client_config()))
        say(f"schemas   {len(ids)} registered")

    def _start_postgres(self, say: Say) -> None:
        postgres = self.settings.postgres
        if postgres.is_external:
            say("postgres  external    (BACKBONE_POSTGRES_DSN)")
            return
        if find_bin_dir(postgres) is None:
            say("postgres  missing     server binaries not found: apt-get install -y postgresql")
            return
        started = _timed(self.postgres.start)
        say(f"postgres  {'started' if started[0] else 'running':<11} {self.postgres.address}  ({started[1]:.1f}s)")

    def down(self, say: Say = print) -> None:
        """Stop what `up` started (and nothing else), in reverse order."""
        for name, service in (
            ("postgres", self.postgres),
            ("registry", self.registry),
            ("kafka", self.kafka),
        ):
            say(f"{name:<9} {'stopped' if service.stop() else 'not running'}")

    def status(self) -> list[ServiceStatus]:
        return [self._kafka_status(), self._registry_status(), self._postgres_status()]

    def _kafka_status(self) -> ServiceStatus:
        kafka = self.settings.kafka
        if kafka.is_external:
            state = "external" if broker_answers(self.admin(), timeout=3) else "unavailable"
            return ServiceStatus("kafka", state, kafka.servers)
        pid = self.kafka.process.pid()
        return ServiceStatus("kafka", "running" if pid else "stopped", self.kafka.address, pid)

    def _registry_status(self) -> ServiceStatus:
        registry = self.settings.registry
        if registry.is_external:
            state = "external" if registry_answers(registry.endpoint) else "unavailable"
            return ServiceStatus("registry", state, registry.endpoint)
        pids = self.registry.pids()
        state = "running" if all(pids) else ("degraded" if any(pids) else "stopped")
        return ServiceStatus("registry", state, registry.endpoint, next((p for p in pids if p), None))

    def _postgres_status(self) -> ServiceStatus:
        postgres = self.settings.postgres
        if postgres.is_external:
            state = "external" if answers(postgres.conninfo()) else "unavailable"
            return ServiceStatus("postgres", state, "BACKBONE_POSTGRES_DSN")
        pid = self.postgres.process.pid()
        return ServiceStatus("postgres", "running" if pid else "stopped", self.postgres.address, pid)

    def admin(self) -> AdminClient:
        # Warnings and errors only: librdkafka's informational lines are noise on a terminal.
        return AdminClient({**self.settings.kafka.client_config(), "log_level": 4})


def _check_external_kafka(settings: Settings) -> None:
    if not broker_answers(AdminClient(settings.kafka.client_config()), timeout=10):
        raise ServiceUnavailableError(
            f"the configured Kafka cluster {settings.kafka.servers} does not answer",
            hint="check BACKBONE_KAFKA_BOOTSTRAP_SERVERS and the SASL/TLS settings, or unset it to run a local broker",
        )


def _timed(start: Callable[[], bool]) -> tuple[bool, float]:
    began = time.monotonic()
    result = start()
    return result, time.monotonic() - began
