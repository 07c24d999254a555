"""Serving a simulator: migrate its schema, build its app, run uvicorn until SIGTERM (`backbone run erp-sim`)."""

from __future__ import annotations

import gc
import signal
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from backbone.migrations import apply_migrations
from backbone.settings import Settings
from consumers.simulators.settings import BillingSimSettings, ErpSimSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = structlog.get_logger("simulators")


def run_erp_sim(settings: Settings, erp: ErpSimSettings) -> None:
    """Serve one named ERP instance on its port, its documents in schema erp_sim_<name>."""
    from consumers.simulators.erp import MIGRATIONS, create_erp_app

    conninfo = settings.postgres.conninfo()
    applied = apply_migrations(conninfo, erp.db_schema, MIGRATIONS)
    app = create_erp_app(erp, conninfo)
    log.info(
        "erp simulator listening",
        name=erp.name,
        schema=erp.db_schema,
        migrations_applied=applied,
        host=erp.host,
        port=erp.port,
        faults=erp.faults.model_dump(exclude_defaults=True),
    )
    _serve(app, erp.host, erp.port)


def run_billing_sim(settings: Settings, billing: BillingSimSettings) -> None:
    """Serve the Stripe-like billing engine on its port, its documents in its schema."""
    from consumers.simulators.billing import MIGRATIONS, create_billing_app

    conninfo = settings.postgres.conninfo()
    applied = apply_migrations(conninfo, billing.db_schema, MIGRATIONS)
    app = create_billing_app(billing, conninfo)
    log.info(
        "billing simulator listening",
        schema=billing.db_schema,
        migrations_applied=applied,
        host=billing.host,
        port=billing.port,
        faults=billing.faults.model_dump(exclude_defaults=True),
    )
    _serve(app, billing.host, billing.port)


def _serve(app: FastAPI, host: str, port: int) -> None:
    """uvicorn until SIGTERM/SIGINT; it drains in-flight requests, then re-raises the signal, which
    becomes a normal exit (status 0) here."""
    import uvicorn

    from backbone.runtime.processes import require_free_port
    from backbone.serving import CorkedHttpToolsProtocol

    require_free_port(port, "the simulator", "--port")
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # The objects of start-up (FastAPI, pydantic's schemas) live as long as the process: kept out of the
    # collector's full passes, which would otherwise walk them in the middle of requests.
    gc.collect()
    gc.freeze()
    try:
        # httptools and uvloop (h11 alone cost ~0.2 ms of CPU per request), each answer in one send
        # (`CorkedHttpToolsProtocol`), and no proxy-header rewriting: nothing here reads the client's
        # address (docs/delivery.md, "Throughput")
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            http=CorkedHttpToolsProtocol,
            loop="uvloop",
            proxy_headers=False,
        )
    finally:
        log.info("simulator stopped", port=port)


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)
