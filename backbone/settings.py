"""Settings are data: one pydantic-settings class per external system, read from `BACKBONE_*` once.

Entry points call `load_settings()` and pass the frozen result down. The Kafka settings turn into
librdkafka configuration dicts (`KafkaSettings.client_config()`), so the same commands work against a
local broker and a production cluster with SASL/SCRAM and TLS. Secrets are `SecretStr` and never
appear in logs or `repr`.
"""

from __future__ import annotations

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
    """The schema registry. Leave `url` unset to use the one `backbone up` starts."""

    model_config = SettingsConfigDict(env_prefix="BACKBONE_SCHEMA_REGISTRY_", frozen=True, extra="ignore")

    url: str | None = Field(default=None, description="Any Confluent-compatible registry.")
    port: int = Field(default=8081, description="Port of the local registry started by `backbone up`.")
    basic_auth_user_info: SecretStr | None = Field(default=None, description="user:password")
    topic: str = Field(default="_schemas", description="Compacted topic that stores the schemas.")

    @property
    def is_external(self) -> bool:
        return self.url is not None

    @property
    def endpoint(self) -> str:
        return self.url or f"http://127.0.0.1:{self.port}"

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"url": self.endpoint}
        if self.basic_auth_user_info is not None:
            config["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        return config


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


class Settings(_Section):
    """Everything, read once at the entry point."""

    kafka: KafkaSettings
    registry: RegistrySettings
    postgres: PostgresSettings
    runtime: RuntimeSettings
    streams: StreamsSettings = Field(default_factory=StreamsSettings)


def load_settings() -> Settings:
    """Read every section from the environment (`BACKBONE_*`)."""
    return Settings(
        kafka=KafkaSettings(),
        registry=RegistrySettings(),
        postgres=PostgresSettings(),
        runtime=RuntimeSettings(),
        streams=StreamsSettings(),
    )


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
