"""Log lines are JSON rendered by orjson, with the standard library's encoder for what orjson refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from backbone.observability import _dumps


def _fallback(value: Any) -> str:
    return repr(value)


@pytest.mark.parametrize(
    "event",
    [
        {"event": "request", "status": 202, "ms": 1.25, "route": "/v1/webhooks/{source}", "principal": None},
        {"event": "huge", "value": 2**70},
        {"event": "keys", "counts": {1: 2}},
        {"event": "text", "note": "café ‮"},
        {"event": "object", "thing": object},
    ],
    ids=["access-line", "integer-beyond-64-bits", "non-string-keys", "non-ascii", "unknown-type-by-default"],
)
def test_every_event_renders_as_one_json_line(event: dict[str, Any]) -> None:
    line = _dumps(event, default=_fallback)
    assert isinstance(line, bytes) and b"\n" not in line
    parsed = json.loads(line)
    assert parsed["event"] == event["event"]
    assert parsed == json.loads(json.dumps(event, default=_fallback))


def test_a_library_logging_through_the_standard_library_writes_the_same_json_lines() -> None:
    """uvicorn and friends log through `logging`: their lines must be JSON too, or a log cannot be parsed."""
    script = (
        "import logging, structlog\n"
        "from backbone.observability import configure_logging\n"
        "configure_logging('probe')\n"
        "logging.getLogger('uvicorn.error').warning('Started server process [%d]', 42)\n"
        "logging.getLogger('httpx').info('HTTP Request: GET /schemas/ids/1')\n"
        "structlog.get_logger().info('ready')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, timeout=60)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["event"], line.get("logger"), line["level"]) for line in lines] == [
        ("Started server process [42]", "uvicorn.error", "warning"),
        ("ready", None, "info"),
    ]
    assert all(line["process"] == "probe" for line in lines)
