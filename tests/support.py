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


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
    """Create a topic and return once every partition has a leader (so offsets can be read at once)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(timeout=30)

    def led() -> bool:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        return bool(topic and topic.error is None and len(topic.partitions) == partitions) and all(
            p.leader >= 0 and p.error is None for p in topic.partitions.values()
        )

    wait_until(led, timeout=30, message=f"leaders for every partition of {name}")
    return name
