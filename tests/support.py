"""Helpers tests share: deadline waits (never fixed sleeps) and unique names."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def unique_name(prefix: str = "test") -> str:
    """A topic/group/subject name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(
    condition: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.05, message: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)  # polling interval of a deadline wait, not a fixed sleep
    raise AssertionError(f"condition not met within {timeout}s: {message or condition!r} (last value {last!r})")
