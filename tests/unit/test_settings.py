"""Settings: environment variables become librdkafka configuration; secrets never leak."""

from __future__ import annotations

import pytest
import structlog

from backbone.observability import redact
from backbone.settings import KafkaSettings, PostgresSettings, RegistrySettings, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each case starts from an environment without BACKBONE_* (the session fixtures set some)."""
    import os

    for name in [n for n in os.environ if n.startswith("BACKBONE_")]:
        monkeypatch.delenv(name)


def test_defaults_point_at_the_local_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BACKBONE_KAFKA_BOOTSTRAP_SERVERS", "BACKBONE_KAFKA_PORT", "BACKBONE_SCHEMA_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.kafka.client_config()["bootstrap.servers"] == "127.0.0.1:9092"
    assert not settings.kafka.is_external
    assert settings.registry.endpoint == "http://127.0.0.1:8081"


def test_external_cluster_with_sasl_scram_and_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_KAFKA_BOOTSTRAP_SERVERS", "b1.example:9094,b2.example:9094")
    monkeypatch.setenv("BACKBONE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BACKBONE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("BACKBONE_KAFKA_SASL_USERNAME", "backbone")
    monkeypatch.setenv("BACKBONE_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("BACKBONE_KAFKA_SSL_CA_LOCATION", "/etc/ssl/ca.pem")
    kafka = KafkaSettings()
    assert kafka.is_external
    assert kafka.client_config() == {
        "bootstrap.servers": "b1.example:9094,b2.example:9094",
        "client.id": "backbone",
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "backbone",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }


def test_invalid_security_protocol_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_KAFKA_SECURITY_PROTOCOL", "KERBEROS")
    with pytest.raises(ValueError, match="security_protocol"):
        KafkaSettings()


def test_secrets_are_masked_in_repr_and_in_logged_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("BACKBONE_POSTGRES_DSN", "postgresql://u:pw@db/backbone")
    monkeypatch.setenv("BACKBONE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "user:regpw")
    settings = load_settings()
    assert "s3cret" not in repr(settings) and "pw@db" not in repr(settings) and "regpw" not in repr(settings)
    logged = redact({**settings.kafka.client_config(), **settings.registry.client_config()})
    assert logged["sasl.password"] == "***"
    assert logged["basic.auth.user.info"] == "***"
    assert logged["bootstrap.servers"] == settings.kafka.servers


def test_secret_values_never_reach_a_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_KAFKA_SASL_PASSWORD", "s3cret")
    with structlog.testing.capture_logs() as logs:
        structlog.get_logger().info("kafka configured", config=redact(KafkaSettings().client_config()))
    assert "s3cret" not in str(logs)


def test_postgres_dsn_overrides_the_local_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKBONE_POSTGRES_DSN", raising=False)
    assert PostgresSettings().conninfo() == "host=127.0.0.1 port=5433 dbname=backbone user=backbone"
    monkeypatch.setenv("BACKBONE_POSTGRES_DSN", "postgresql://db.example/backbone")
    assert PostgresSettings().is_external
    assert PostgresSettings().conninfo() == "postgresql://db.example/backbone"


def test_registry_url_makes_the_registry_external(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_SCHEMA_REGISTRY_URL", "https://registry.example")
    assert RegistrySettings().is_external
    assert RegistrySettings().client_config() == {"url": "https://registry.example"}
