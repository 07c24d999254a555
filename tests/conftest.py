"""Session fixtures: one real Kafka broker, schema registry and PostgreSQL for the whole test run.

They are started through the same runtime code as `backbone up`, in a data directory and on ports of
their own (so a developer's `backbone up` is left alone), unless `BACKBONE_KAFKA_BOOTSTRAP_SERVERS`
(and friends) point at running services. Processes the fixtures start are stopped at the end; the
test data directory is wiped at the start of each run so every run begins from empty topics.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from backbone.runtime.kafka import LocalKafka
from backbone.runtime.local import LocalRegistry
from backbone.runtime.postgres import LocalPostgres
from backbone.settings import KafkaSettings, PostgresSettings, RegistrySettings, RuntimeSettings, Settings

TEST_DATA_DIR = Path(__file__).resolve().parent.parent / ".backbone-test"
TEST_PORTS = {
    "BACKBONE_KAFKA_PORT": "29092",
    "BACKBONE_KAFKA_CONTROLLER_PORT": "29093",
    "BACKBONE_SCHEMA_REGISTRY_PORT": "28081",
    "BACKBONE_POSTGRES_PORT": "25433",
}


@pytest.fixture(scope="session")
def test_settings() -> Settings:
    """Settings of the test services: the environment wins, else the test ports and data dir."""
    for key, value in TEST_PORTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("BACKBONE_DATA_DIR", str(TEST_DATA_DIR))
    return Settings(
        kafka=KafkaSettings(),
        registry=RegistrySettings(),
        postgres=PostgresSettings(),
        runtime=RuntimeSettings(),
    )


@pytest.fixture(scope="session")
def _fresh_data_dir(test_settings: Settings) -> Path:
    data_dir = test_settings.runtime.data_dir.resolve()
    if data_dir == TEST_DATA_DIR and not _any_running(test_settings):
        shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def _any_running(settings: Settings) -> bool:
    services = (LocalKafka(settings.runtime, settings.kafka), LocalRegistry(settings))
    return any(service.process.pid() is not None for service in services)


@pytest.fixture(scope="session")
def kafka_settings(test_settings: Settings, _fresh_data_dir: Path) -> Iterator[KafkaSettings]:
    """A real broker: the configured cluster, or a local one started like `backbone up` does."""
    if test_settings.kafka.is_external:
        yield test_settings.kafka
        return
    kafka = LocalKafka(test_settings.runtime, test_settings.kafka)
    started = kafka.start()
    os.environ["BACKBONE_KAFKA_BOOTSTRAP_SERVERS"] = kafka.address  # subprocesses find the same broker
    yield test_settings.kafka
    if started:
        kafka.stop()


@pytest.fixture(scope="session")
def bootstrap(kafka_settings: KafkaSettings) -> str:
    return kafka_settings.servers


@pytest.fixture(scope="session")
def registry_url(test_settings: Settings, kafka_settings: KafkaSettings) -> Iterator[str]:
    """The schema registry service (`python -m backbone.registry`) against the test broker, with
    authentication on, as `backbone up` runs it.

    Clients of the tests (and the processes they start, which inherit the environment) use the `writer`
    credentials `backbone up` created; `registry_credentials` has every role's.
    """
    if test_settings.registry.is_external:
        yield test_settings.registry.endpoint
        return
    settings = test_settings.model_copy(update={"kafka": kafka_settings})
    registry = LocalRegistry(settings)
    started = registry.start()
    os.environ["BACKBONE_SCHEMA_REGISTRY_URL"] = registry.address
    os.environ.setdefault("BACKBONE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", _local_credentials(registry)["writer"])
    yield registry.address
    if started:
        registry.stop()


def _local_credentials(registry: LocalRegistry) -> dict[str, str]:
    from backbone.registry.users import local_credentials

    return local_credentials(registry.credentials_file)


@pytest.fixture(scope="session")
def registry_credentials(test_settings: Settings, registry_url: str) -> dict[str, str]:
    """`{role: "user:password"}` of the test registry: `reader`, `writer`, `admin`.

    Against an external registry, BACKBONE_TEST_REGISTRY_<ROLE> (user:password) name them; a role
    without one falls back to the configured client credentials.
    """
    if not test_settings.registry.is_external:
        return _local_credentials(LocalRegistry(test_settings))
    configured = os.environ.get("BACKBONE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "")
    return {role: os.environ.get(f"BACKBONE_TEST_REGISTRY_{role.upper()}", configured) for role in _ROLES}


_ROLES = ("reader", "writer", "admin")


def registry_client_config(url: str, user_info: str) -> dict[str, str]:
    """A Confluent `SchemaRegistryClient` config for `url` with one role's credentials."""
    return {"url": url, "basic.auth.user.info": user_info} if user_info else {"url": url}


@pytest.fixture(scope="session")
def postgres_conninfo(test_settings: Settings, _fresh_data_dir: Path) -> Iterator[str]:
    """A real PostgreSQL: the configured DSN, or a local cluster started like `backbone up` does."""
    if test_settings.postgres.is_external:
        yield test_settings.postgres.conninfo()
        return
    postgres = LocalPostgres(test_settings.runtime, test_settings.postgres)
    started = postgres.start()
    yield test_settings.postgres.conninfo()
    if started:
        postgres.stop()


@pytest.fixture(scope="session")
def settings(test_settings: Settings, kafka_settings: KafkaSettings, registry_url: str) -> Settings:
    """Full settings pointing at the running test broker and registry."""
    return test_settings.model_copy(update={"kafka": kafka_settings, "registry": RegistrySettings(url=registry_url)})
