"""Settings are data: one pydantic-settings class per external system, read from `BACKBONE_*` once.

Entry points call `load_settings()` and pass the frozen result down. The Kafka settings turn into
librdkafka configuration dicts (`KafkaSettings.client_config()`), so the same commands work against a
local broker and a production cluster with SASL/SCRAM and TLS. Secrets are `SecretStr` and never
appear in logs or `repr`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class _Section(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")


class KafkaSettings(_Section):
    """How to reach Kafka. Leave `bootstrap_servers` unset to use the local runtime's broker."""

    model_config = SettingsConfigDict(env_prefix="BACKBONE_KAFKA_", frozen=True, extra="ignore")

    bootstrap_servers: str | None = Field(
        default=None, description="An existing cluster; when set, `backbone up` starts no broker."
    )
    port: int = Field(default=9092, description="Port of the local broker started by `backbone up`.")
    controller_port: int = Field(default=9093, description="KRaft controller port of the local broker.")
    heap: str = Field(default="512m", description="JVM heap of the local broker (-Xmx).")
    version: str = Field(default="4.1.1", description="Apache Kafka version the local runtime resolves.")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "backbone"
    default_partitions: int = Field(default=6, ge=1, description="Partitions of transactional topics.")
    replication_factor: int = Field(default=1, ge=1)

    @property
    def is_external(self) -> bool:
        return self.bootstrap_servers is not None

    @property
    def servers(self) -> str:
        return self.bootstrap_servers or f"127.0.0.1:{self.port}"

    def client_config(self) -> dict[str, Any]:
        """The librdkafka configuration every confluent-kafka client starts from."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
        }
        optional = {
            "sasl.mechanisms": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": _reveal(self.sasl_password),
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": _reveal(self.ssl_key_password),
        }
        config.update({k: str(v) for k, v in optional.items() if v is not None})
        return config


class RegistrySettings(_Section):
    """The schema registry: how clients reach it, and how `backbone up` / `backbone run registry` run it.

    Leave `url` unset to use the instances `backbone up` starts (`replicas` of them, on `port` and
    `replica_ports`). `url` may list several instances, comma-separated, as Confluent's clients accept.
    """

    model_config = SettingsConfigDict(env_prefix="BACKBONE_SCHEMA_REGISTRY_", frozen=True, extra="ignore")

    url: str | None = Field(default=None, description="Any Confluent-compatible registry (comma-separated URLs).")
    port: int = Field(default=8081, description="Port of the (first) local registry started by `backbone up`.")
    basic_auth_user_info: SecretStr | None = Field(default=None, description="user:password the clients send")
    topic: str = Field(default="_schemas", description="Compacted topic that stores the schemas.")
    # Running the registry (the server side).
    replicas: int = Field(default=1, ge=1, le=9, description="Local registry instances `backbone up` runs.")
    replica_ports: list[int] = Field(
        default_factory=list, description="Ports of instances 2..N (default: port+1, port+2, ...)."
    )
    host: str = Field(default="127.0.0.1", description="Interface the registry listens on.")
    advertised_url: str | None = Field(
        default=None, description="This instance's URL as the other instances reach it (default http://host:port)."
    )
    auth: Literal["basic", "none"] = Field(
        default="basic", description="`none` turns authentication off: anyone who reaches it may do anything."
    )
    users_file: Path | None = Field(
        default=None, description="Users and their scrypt hashes (default <data dir>/registry/users.json)."
    )
    anonymous_role: Literal["none", "reader"] = Field(
        default="none", description="What a request without credentials may do (none: 401)."
    )
    audit_file: Path | None = Field(
        default=None, description="JSON lines, one per write attempt (default <data dir>/registry/audit.log)."
    )
    leader_wait_s: float = Field(
        default=15.0, gt=0, description="How long a write waits for a leader while one is being elected."
    )
    session_timeout_ms: int = Field(
        default=6_000, ge=1_000, description="How long the leadership group waits for a silent leader."
    )

    @property
    def is_external(self) -> bool:
        return self.url is not None

    @property
    def ports(self) -> list[int]:
        """The ports of the local instances, first one first."""
        extra = self.replica_ports or [self.port + i for i in range(1, self.replicas)]
        return [self.port, *extra[: self.replicas - 1]]

    @property
    def endpoint(self) -> str:
        """Every URL clients may use, comma-separated (Confluent's clients try them in order)."""
        return self.url or ",".join(f"http://127.0.0.1:{port}" for port in self.ports)

    @property
    def endpoints(self) -> list[str]:
        return [url.strip() for url in self.endpoint.split(",") if url.strip()]

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"url": self.endpoint}
        if self.basic_auth_user_info is not None:
            config["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        return config

    def client_environment(self) -> dict[str, str]:
        """What a child process needs to reach this registry as this client does (URL and credentials)."""
        env = {"BACKBONE_SCHEMA_REGISTRY_URL": self.endpoint}
        if self.basic_auth_user_info is not None:
            env["BACKBONE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"] = self.basic_auth_user_info.get_secret_value()
        return env


class PostgresSettings(_Section):
    """PostgreSQL for the read model. Leave `dsn` unset to use the local cluster."""

    model_config = SettingsConfigDict(env_prefix="BACKBONE_POSTGRES_", frozen=True, extra="ignore")

    dsn: SecretStr | None = Field(default=None, description="An existing database; `up` then starts none.")
    port: int = Field(default=5433, description="Port of the local cluster started by `backbone up`.")
    database: str = "backbone"
    user: str = "backbone"
    bin_dir: Path | None = Field(default=None, description="Where initdb and pg_ctl live; searched when unset.")

    @property
    def is_external(self) -> bool:
        return self.dsn is not None

    def conninfo(self) -> str:
        if self.dsn is not None:
            return self.dsn.get_secret_value()
        return f"host=127.0.0.1 port={self.port} dbname={self.database} user={self.user}"


class RuntimeSettings(_Section):
    """Where the local runtime keeps its data, and how it logs."""

    model_config = SettingsConfigDict(env_prefix="BACKBONE_", frozen=True, extra="ignore")

    data_dir: Path = Field(default=Path(".backbone"), description="Data, logs and pids of local services.")
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "backbone",
        description="Downloaded Kafka jars (outside the work tree; shared between checkouts).",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    metrics_port: int | None = Field(default=None, description="Serve Prometheus metrics on this port.")


class StreamsSettings(_Section):
    """The processor runtime (`backbone.streams`): transactions, batches, worker slots."""

    model_config = SettingsConfigDict(env_prefix="BACKBONE_STREAMS_", frozen=True, extra="ignore")

    commit_interval_ms: int = Field(
        default=100, ge=1, description="Commit the open transaction at least this often (bounds latency)."
    )
    commit_records: int = Field(default=20_000, ge=1, description="...or after this many input records.")
    commit_idle_ms: int = Field(
        default=25,
        ge=0,
        description="...or once the transaction is this old when no more input is waiting (latency under light "
        "load; under full load batches stay full and commits keep to commit_interval_ms); 0: never early.",
    )
    batch_size: int = Field(default=2_000, ge=1, description="Records one consume() call returns at most.")
    transaction_timeout_ms: int = Field(
        default=15_000,
        ge=1_000,
        description="How long a dead worker's open transaction can hold back read_committed readers.",
    )
    session_timeout_ms: int = Field(
        default=10_000, ge=6_000, description="How long the group waits for a silent worker before moving its work."
    )
    instance: str = Field(
        default="local",
        description="Names this host's worker slots; give each host its own so transactional ids never collide.",
    )
    state_on_disk: bool = Field(
        default=True,
        description="Keep the state that grows with every entry (entries, ledgers) in a local RocksDB per "
        "worker under <data dir>/state, so memory stays flat; off: all state in memory.",
    )
    state_cache_keys: int = Field(
        default=1_024, ge=0, description="Decoded values a store partition on disk keeps in memory between flushes."
    )


class Settings(_Section):
    """Everything, read once at the entry point."""

    kafka: KafkaSettings
    registry: RegistrySettings
    postgres: PostgresSettings
    runtime: RuntimeSettings
    streams: StreamsSettings = Field(default_factory=StreamsSettings)


def load_settings() -> Settings:
    """Read every section from the environment (`BACKBONE_*`), then what `backbone up` left for clients."""
    runtime = RuntimeSettings()
    return Settings(
        kafka=KafkaSettings(),
        registry=with_local_registry(RegistrySettings(), runtime.data_dir / "registry"),
        postgres=PostgresSettings(),
        runtime=runtime,
        streams=StreamsSettings(),
    )


LOCAL_REGISTRY_FILE = "credentials.json"
"""Written by `backbone up` in <data dir>/registry (mode 0600): the local instances' ports and each role's
`user:password` (see backbone/registry/users.py)."""


def with_local_registry(registry: RegistrySettings, home: Path) -> RegistrySettings:
    """The local registry's ports and the `writer` credentials from `backbone up`, unless set otherwise.

    Only for the registry `backbone up` runs (no `url`); what the environment sets always wins. So after
    `backbone up --registry-replicas 2`, every command in the same data directory knows both instances
    and can register schemas without further set-up.
    """
    if registry.is_external:
        return registry
    try:
        recorded = json.loads((home / LOCAL_REGISTRY_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return registry
    update: dict[str, Any] = {}
    ports = recorded.get("ports") or []
    if "replicas" not in registry.model_fields_set and ports and ports[0] == registry.port:
        update |= {"replicas": len(ports), "replica_ports": ports[1:]}
    writer = (recorded.get("basic_auth_user_info") or {}).get("writer")
    if registry.basic_auth_user_info is None and writer:
        update["basic_auth_user_info"] = SecretStr(writer)
    return registry.model_copy(update=update) if update else registry


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
