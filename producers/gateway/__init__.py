"""The HTTP gateway: `create_app` builds the FastAPI app, `run_gateway` serves it (`backbone run gateway`)."""

from __future__ import annotations

from producers.gateway.app import Gateway, Publisher, create_app
from producers.gateway.server import run_gateway
from producers.gateway.settings import GatewaySettings

__all__ = ["Gateway", "GatewaySettings", "Publisher", "create_app", "run_gateway"]
