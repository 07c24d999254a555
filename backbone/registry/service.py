"""Wiring of the schema registry process: settings in, store replayed, HTTP served until SIGTERM.

`run(settings)` is what `python -m backbone.registry` and `backbone run registry` call. It refuses to
serve before the whole topic has been replayed, so the first answer a client gets is already complete.
uvicorn handles SIGTERM/SIGINT by finishing in-flight requests, then re-raises the signal; our SIGTERM
handler turns that into a normal exit (status 0) so the producer is closed and the stop is logged.
"""

from __future__ import annotations

import signal
from types import FrameType

import structlog
import uvicorn

from backbone.observability import configure_logging
from backbone.registry.app import create_app
from backbone.registry.store import KafkaLog, SchemaStore
from backbone.settings import Settings

log = structlog.get_logger("backbone.registry")


def build_store(settings: Settings) -> SchemaStore:
    """A store over the configured topic, with its state rebuilt from the topic."""
    store = SchemaStore(KafkaLog(settings.kafka, settings.registry.topic))
    replayed = store.start()
    log.info(
        "registry_replayed",
        topic=settings.registry.topic,
        records=replayed,
        subjects=len(store.state.subjects),
    )
    return store


def run(settings: Settings) -> None:
    """Serve the registry on 127.0.0.1:`settings.registry.port` until SIGTERM or SIGINT."""
    configure_logging("registry", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    store = build_store(settings)
    config = uvicorn.Config(
        create_app(store),
        host="127.0.0.1",
        port=settings.registry.port,
        access_log=False,  # the app logs each request itself, as structlog JSON
        log_config=None,
        lifespan="off",
    )
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        log.info("registry_serving", port=settings.registry.port)
        uvicorn.Server(config).run()
    finally:
        store.close()
        log.info("registry_stopped")


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)
