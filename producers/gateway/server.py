"""Serving the gateway: the real `Emitter` behind the app, uvicorn in front, a clean stop on SIGTERM."""

from __future__ import annotations

import structlog

from backbone.errors import BackboneError
from backbone.settings import Settings
from producers.gateway.settings import GatewaySettings

log = structlog.get_logger("gateway")


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
    with Emitter(settings) as emitter:

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
        uvicorn.run(app, host=config.host, port=config.port, log_config=None, access_log=False)
