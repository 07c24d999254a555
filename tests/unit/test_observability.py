"""Log lines are JSON rendered by orjson, with the standard library's encoder for what orjson refuses."""

from __future__ import annotations

import json
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
