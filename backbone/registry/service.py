"""Wiring of one schema registry instance: settings in, log replayed, leadership sought, HTTP served.

`run(settings)` is what `python -m backbone.registry` and `backbone run registry` call. It refuses to
serve before the whole topic has been replayed, so the first answer a client gets is already complete,
then joins the leadership group (`election`): the elected instance claims the log and takes writes,
the others follow it and forward writes there. With authentication on (the default) it refuses to
start without a users file. uvicorn handles SIGTERM/SIGINT by finishing in-flight requests, then
re-raises the signal; our SIGTERM handler turns that into a normal exit (status 0), after which the
instance leaves the group (another is elected at once) and the log is closed.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import structlog
import uvicorn

from backbone.observability import configure_logging
from backbone.registry.app import create_app
from backbone.registry.auth import Authenticator, Role, load_users
from backbone.registry.election import LeaderElection
from backbone.registry.log import KafkaLog
from backbone.registry.replica import SchemaStore
from backbone.settings import RegistrySettings, Settings

log = structlog.get_logger("backbone.registry")


def build_store(settings: Settings) -> SchemaStore:
    """A store over the configured topic, with its state rebuilt from the topic."""
    registry = settings.registry
    store = SchemaStore(KafkaLog(settings.kafka, registry.topic), url=advertised_url(registry))
    replayed = store.start()
    log.info("registry_replayed", topic=registry.topic, records=replayed, subjects=len(store.state.subjects))
    return store


def advertised_url(registry: RegistrySettings) -> str:
    return registry.advertised_url or f"http://{registry.host}:{registry.port}"


def build_authenticator(settings: Settings) -> Authenticator | None:
    """The users the registry accepts, or None when authentication is off (said loudly in the log)."""
    registry = settings.registry
    if registry.auth == "none":
        log.warning("registry_auth_off", detail="BACKBONE_SCHEMA_REGISTRY_AUTH=none: anyone may change schemas")
        return None
    users = load_users(users_file(settings))
    anonymous = Role.READER if registry.anonymous_role == "reader" else None
    log.info("registry_auth", users=len(users), anonymous=registry.anonymous_role)
    return Authenticator(users, anonymous_role=anonymous)


def users_file(settings: Settings) -> Path:
    return settings.registry.users_file or settings.runtime.data_dir / "registry" / "users.json"


def audit_file(settings: Settings) -> Path:
    return settings.registry.audit_file or settings.runtime.data_dir / "registry" / "audit.log"


def run(settings: Settings) -> None:
    """Serve the registry on `host:port` until SIGTERM or SIGINT."""
    configure_logging("registry", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # forwarded writes are logged as registry events
    registry = settings.registry
    authenticator = build_authenticator(settings)
    store = build_store(settings)
    election = LeaderElection(
        settings.kafka,
        registry.topic,
        on_elected=lambda: _lead(store, election),
        on_deposed=store.resign,
        session_timeout_ms=registry.session_timeout_ms,
    )
    app = create_app(
        store, authenticator=authenticator, audit_file=audit_file(settings), leader_wait=registry.leader_wait_s
    )
    config = uvicorn.Config(
        app,
        host=registry.host,
        port=registry.port,
        access_log=False,  # the app logs each request itself, as structlog JSON
        log_config=None,
        lifespan="off",
        http="h11",  # what it was tested on; httptools and uvloop are installed for the simulators
        loop="asyncio",
    )
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        election.start()
        log.info("registry_serving", port=registry.port, url=store.url)
        uvicorn.Server(config).run()
    finally:
        election.close()
        store.close()
        log.info("registry_stopped")


def _lead(store: SchemaStore, election: LeaderElection) -> None:
    # Retried while the group still names this instance: a claim that failed on a broker hiccup (or was
    # fenced while the group had not yet noticed) is tried again instead of leaving the registry leaderless.
    store.claim_leadership(retry_until=lambda: election.holds_partition)


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)
