"""Logging and metrics every backbone process shares.

`configure_logging` sets structlog up once per process: JSON lines on stderr (or a console renderer
for people), with the process name, level, ISO timestamp and any context bound with
`structlog.contextvars.bind_contextvars(correlation_id=...)`. `serve_metrics` exposes the process's
Prometheus registry on a port. Secrets never reach a log line: settings hold them as `SecretStr`,
and `redact` masks well-known secret keys in any mapping before it is logged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog
from prometheus_client import start_http_server

_SECRET_MARKERS = ("password", "secret", "token", "api_key", "apikey", "user.info", "authorization")


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `config` fit for a log line: values of secret-looking keys become '***'."""
    return {
        key: "***" if any(marker in key.lower() for marker in _SECRET_MARKERS) else value
        for key, value in config.items()
    }


def configure_logging(process: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library's logging to stderr in one format."""
    renderer: Any = structlog.dev.ConsoleRenderer()
    logger_factory: Any = structlog.PrintLoggerFactory(file=sys.stderr)
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        stream = getattr(sys.stderr, "buffer", None)
        if stream is not None:  # bytes straight to the stream: no str round trip, one write per line
            renderer = structlog.processors.JSONRenderer(serializer=_dumps)
            logger_factory = structlog.BytesLoggerFactory(file=stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    logging.basicConfig(handlers=[_StandardToStructlog()], level=level.upper(), force=True)
    for name in ("httpx", "httpx2"):  # a line per registry request is noise at INFO
        logging.getLogger(name).setLevel(logging.WARNING)


class _StandardToStructlog(logging.Handler):
    """Lines the libraries log through the standard library (uvicorn, httpx, ...) as this process's
    structlog lines, named by their logger, so a log stays one JSON line per event."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger().log(record.levelno, record.getMessage(), logger=record.name)
        except Exception:  # a logging failure must not take the process down
            self.handleError(record)


def _dumps(event: Any, default: Callable[[Any], Any]) -> bytes:
    """A log line's JSON by orjson, several times faster than the standard library's encoder (a gateway
    request's access line was about a tenth of its CPU: docs/benchmarks.md); by the standard library for
    what orjson refuses (integers beyond 64 bits, keys that are not strings)."""
    try:
        return orjson.dumps(event, default=default)
    except TypeError:
        return json.dumps(event, default=default).encode()


def serve_metrics(port: int | None) -> None:
    """Expose this process's Prometheus metrics on `port` (no-op when None)."""
    if port is not None:
        start_http_server(port, addr="127.0.0.1")
