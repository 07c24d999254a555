"""Serving the gateway: the real `Emitter` behind the app, uvicorn in front, a clean stop on SIGTERM.

uvicorn serves it with httptools on uvloop (about a tenth of a webhook's CPU went to h11's pure-Python
parsing, and a fifth to asyncio's socket handling: docs/benchmarks.md). uvicorn times out idle
keep-alive connections but not a request head that trickles in byte by byte (slowloris), and its
keep-alive timer is re-armed by every byte: `GuardedHttpToolsProtocol` closes a connection whose
request line and headers have not all arrived within `header_timeout_s` of the connection opening or
the previous response. Slow bodies are the app's business (408 after `body_timeout_s`).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import structlog

from backbone.errors import BackboneError
from backbone.serving import CorkedHttpToolsProtocol
from backbone.settings import Settings
from producers.gateway.settings import GatewaySettings

log = structlog.get_logger("gateway")


class GuardedHttpToolsProtocol(CorkedHttpToolsProtocol):
    """uvicorn's httptools protocol (writing an answer in one system call: `backbone.serving`) with a
    deadline on each request head (`header_timeout_s`, set on the class): armed when the connection opens
    and after each response, disarmed once the head is parsed."""

    header_timeout_s = 10.0
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        deadline = self._head_deadline
        if deadline is not None:
            deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            client = self.client[0] if self.client else None
            log.info("request head not received in time; connection closed", client=client)
            self.transport.close()


def server_config(app: Any, settings: GatewaySettings, *, port: int | None = None) -> Any:
    """uvicorn's configuration for the gateway (also used by the tests, so they serve it the same way)."""
    import uvicorn

    protocol = type(
        "GatewayHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"header_timeout_s": settings.header_timeout_s}
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port if port is None else port,
        http=protocol,
        loop="uvloop",
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_keep_alive=5,
    )


def run_gateway(settings: Settings, gateway_settings: GatewaySettings | None = None) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn drains in-flight requests), then deliver what is outstanding."""
    import uvicorn

    from backbone.kafka.topics import TIME_ENTRIES
    from producers.emitter import Emitter
    from producers.gateway.app import create_app

    config = gateway_settings or GatewaySettings()
    if not config.api_keys and not config.webhook_secrets:
        raise BackboneError(
            "the gateway has no API keys and no webhook secrets, so it would refuse every request",
            hint='set BACKBONE_GATEWAY_API_KEYS=\'{"name": "key"}\' and/or BACKBONE_GATEWAY_WEBHOOK_SECRETS',
        )
    # The event loop serves the delivery reports itself (`Deliveries`): no polling thread.
    with Emitter(settings, linger_ms=config.linger_ms, poll_thread=False) as emitter:

        def ready() -> bool:
            try:
                emitter.ensure_topic(TIME_ENTRIES, timeout=2)
            except BackboneError:
                return False
            return True

        app = create_app(config, emitter, ready=ready)
        log.info(
            "gateway listening",
            host=config.host,
            port=config.port,
            api_keys=sorted(config.api_keys),
            webhook_sources=sorted(config.webhook_secrets),
        )
        # The ~90,000 objects of start-up (FastAPI, pydantic's schemas, the clients) live as long as the
        # process: kept out of the collector's full passes, which took tens of milliseconds each, in
        # the middle of whichever requests were being answered.
        gc.collect()
        gc.freeze()
        uvicorn.Server(server_config(app, config)).run()
