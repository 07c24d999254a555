"""`backbone run poller` as a real process against the fake tracker APIs and the real broker.

Stopped with SIGTERM, killed with SIGKILL mid-run and restarted, it still puts each change on the broker
exactly once (read-committed, to the end of every partition); a 5xx burst is retried and recovers; a 401
stops the source with a log line that says what to do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from backbone.kafka import topics as catalog
from backbone.kafka.admin import apply_topics
from backbone.kafka.serde import SerdeCache, registry_client
from backbone.settings import Settings
from tests.fixtures.connectors.fake_trackers import FakeTrackers
from tests.support import unique_name, wait_for_partitions, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


class LiveFake:
    """The fake trackers served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, fake: FakeTrackers) -> None:
        config = uvicorn.Config(fake.app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=15, message="fake trackers started")
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class PollerProcess:
    """`python -m backbone.cli run poller` with its own name, checkpoint topic and log file."""

    def __init__(self, url: str, sources: str, log: Path) -> None:
        self.log, self.process = log, None
        name = unique_name("poller")
        self.env = {
            **os.environ,
            "BACKBONE_POLLER_SOURCES": sources,
            "BACKBONE_POLLER_INTERVAL_S": "0.2",
            "BACKBONE_POLLER_NAME": name,
            "BACKBONE_POLLER_CHECKPOINT_TOPIC": f"{name}-checkpoints",
            "BACKBONE_POLLER_RETRY_BASE_S": "0.05",
            "BACKBONE_POLLER_RETRY_MAX_S": "0.2",
            "BACKBONE_HARVEST_BASE_URL": url,
            "BACKBONE_HARVEST_ACCESS_TOKEN": "harvest-token",
            "BACKBONE_HARVEST_ACCOUNT_ID": "4711",
            "BACKBONE_TOGGL_BASE_URL": url,
            "BACKBONE_TOGGL_API_TOKEN": "toggl-token",
            "BACKBONE_LOG_FORMAT": "json",
        }

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "backbone.cli", "run", "poller"], env=self.env, cwd=ROOT, stderr=log
            )
        return self.process

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout=60)

    def lines(self) -> list[dict[str, Any]]:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def catalog_topics(bootstrap: str) -> None:
    """The catalog's topics on the test broker (the poller publishes to them), each partition ready."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    apply_topics(admin)
    for topic in (catalog.TIME_ENTRIES, catalog.APPROVALS):
        wait_for_partitions(bootstrap, topic.name, topic.partitions)


@pytest.fixture
def fake() -> Iterator[tuple[FakeTrackers, str]]:
    trackers = FakeTrackers()
    with LiveFake(trackers) as url:
        yield trackers, url


def committed(settings: Settings, topic: catalog.Topic, entry_ids: set[str]) -> list[Any]:
    """Every committed event of `topic` about `entry_ids`, read to the end of each partition."""
    serde = SerdeCache(registry_client(settings.registry.client_config())).for_topic(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.servers,
            "group.id": unique_name("poller-read"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    ends = [consumer.get_watermark_offsets(p, timeout=10, cached=False)[1] for p in partitions]
    consumer.assign([TopicPartition(topic.name, p, 0) for p in range(topic.partitions)])
    events: list[Any] = []

    keys = {entry_id.encode() for entry_id in entry_ids}  # records are keyed by time entry id

    def at_end() -> bool:
        batch = consumer.consume(1000, timeout=0.2)
        # decode only this test's records: other tests leave hundreds of thousands on the catalog topics
        events.extend(serde.decode(m) for m in batch if m.error() is None and m.key() in keys)
        positions = consumer.position(partitions)
        # An empty partition has no position to report; it is read to its end by definition.
        return all(end == 0 or position.offset >= end for position, end in zip(positions, ends, strict=True))

    try:
        wait_until(at_end, timeout=120, message=f"read {topic.name} to its end")
    finally:
        consumer.close()
    return [e for e in events if e.time_entry_id in entry_ids]


def revisions(settings: Settings, entry_ids: set[str]) -> list[tuple[str, int, bool]]:
    return sorted(
        (e.time_entry_id, e.revision, e.deleted) for e in committed(settings, catalog.TIME_ENTRIES, entry_ids)
    )


def test_sigterm_and_sigkill_restarts_publish_each_change_exactly_once(
    settings: Settings, catalog_topics: None, fake: tuple[FakeTrackers, str], tmp_path: Path
) -> None:
    trackers, url = fake
    base = uuid.uuid4().int % 10**9 * 10
    h1, h2, h3, h4, t1, t2 = (base + i for i in range(6))
    ids = {f"harvest-{i}" for i in (h1, h2, h3, h4)} | {f"toggl-{i}" for i in (t1, t2)}
    poller = PollerProcess(url, "harvest,toggl", tmp_path / "poller.log")
    for entry in (h1, h2, h3):
        trackers.put_harvest(entry, "2024-03-05T08:00:00Z")
    trackers.put_toggl(t1, "2024-03-05T08:00:00Z")

    poller.start()
    wait_until(lambda: len(revisions(settings, ids)) >= 4, timeout=60, message="first poll on the broker")
    trackers.put_harvest(h2, "2024-03-05T09:30:00Z", hours=3.0, closed=True)
    trackers.put_toggl(t2, "2024-03-05T09:30:00Z")
    assert poller.stop(signal.SIGTERM) == 0, "SIGTERM is a clean stop"

    poller.start()
    wait_until(lambda: len(revisions(settings, ids)) >= 6, timeout=60, message="changes made while stopped")
    trackers.put_harvest(h4, "2024-03-05T10:00:00Z")
    trackers.put_toggl(t1, "2024-03-06T08:00:00Z", deleted_at="2024-03-06T08:00:00Z")
    polls_before = len(trackers.requests)
    wait_until(lambda: len(trackers.requests) > polls_before, timeout=30, message="a poll after the change")
    poller.stop(signal.SIGKILL)  # mid-run: the poll that saw the change may or may not have committed

    poller.start()
    wait_until(lambda: len(revisions(settings, ids)) >= 8, timeout=60, message="everything after the kill")
    wait_until(lambda: len(trackers.requests) > polls_before + 6, timeout=30, message="a few more polls")
    assert poller.stop(signal.SIGTERM) == 0

    entries = committed(settings, catalog.TIME_ENTRIES, ids)
    assert len({e.event_id for e in entries}) == len(entries) == 8, "each change exactly once"
    assert len({(e.time_entry_id, e.revision) for e in entries}) == 8
    assert [e.time_entry_id for e in entries if e.deleted] == [f"toggl-{t1}"]
    approvals = committed(settings, catalog.APPROVALS, ids)
    assert [(a.time_entry_id, a.decision.value) for a in approvals] == [(f"harvest-{h2}", "APPROVED")]
    assert any(line.get("event") == "poller stopped" for line in poller.lines())


def test_a_5xx_burst_is_retried_and_a_401_stops_the_source_with_a_hint(
    settings: Settings, catalog_topics: None, fake: tuple[FakeTrackers, str], tmp_path: Path
) -> None:
    trackers, url = fake
    base = uuid.uuid4().int % 10**9 * 10
    poller = PollerProcess(url, "harvest", tmp_path / "poller.log")
    trackers.put_harvest(base, "2024-03-05T08:00:00Z")
    trackers.fail_next(503, 502, 500)  # with the 429 below, fewer than the 5 attempts of one request
    trackers.fail_next(429, retry_after="1")
    poller.start()
    wait_until(lambda: revisions(settings, {f"harvest-{base}"}), timeout=60, message="entry after the burst")
    assert trackers.served_failures == 4
    retried = [line for line in poller.lines() if line.get("event") == "retrying"]
    assert [line["delay_s"] <= 0.2 for line in retried] == [True, True, True, False], "jittered, bounded backoff"
    assert retried[-1]["delay_s"] >= 1, "the 429's Retry-After is honoured"

    trackers.fail_next(401)
    # The only source is refused permanently: the process says what to fix and exits with EX_CONFIG.
    assert poller.process is not None and poller.process.wait(timeout=60) == 78
    stopped = [line for line in poller.lines() if line.get("event") == "source stopped"]
    assert stopped and stopped[0]["status"] == 401 and "token" in stopped[0]["todo"]
    assert "harvest-token" not in poller.log.read_text(), "the token never reaches a log line"
