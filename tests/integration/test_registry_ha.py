"""Two registry instances on the real broker: the leader dies (or hangs), a follower takes over, and no
schema id is lost, reused or given twice.

Producers register new subjects continuously through confluent-kafka's client given both URLs, as a
backbone client is. Every attempt must end as a success whose id is unique and readable from both
instances, or as a retryable error (5xx or no connection) whose retry then succeeds without a second
version. See docs/schema-registry.md for the design these tests hold to.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tests.registry_process import RegistryProcess, RegistryUsers
from tests.support import unique_name, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]

FAILOVER_WITHIN_S = 20.0  # session timeout (6 s) + rebalance + claim + catch-up, with room for a busy machine


def entry_schema(name: str) -> Schema:
    fields = [{"name": "id", "type": "string"}, {"name": "minutes", "type": "int"}]
    return Schema(json.dumps({"type": "record", "name": name, "namespace": "ha.test", "fields": fields}), "AVRO")


@dataclass
class Outcomes:
    """What each registration attempt ended as: subject -> id, or subject -> the retryable error."""

    succeeded: dict[str, int] = field(default_factory=dict)
    retryable: dict[str, str] = field(default_factory=dict)
    other: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, subject: str, error: Exception | None, schema_id: int | None) -> None:
        with self.lock:
            self.times[subject] = time.monotonic()
            if error is None:
                assert schema_id is not None
                self.succeeded[subject] = schema_id
            elif _retryable(error):
                self.retryable[subject] = repr(error)
            else:
                self.other[subject] = repr(error)

    def successes_after(self, instant: float) -> int:
        with self.lock:
            return sum(1 for s in self.succeeded if self.times[s] > instant)


def _retryable(error: Exception) -> bool:
    if isinstance(error, SchemaRegistryError):
        return error.http_status_code >= 500
    return isinstance(error, httpx.TransportError)


class Producers:
    """Threads that register a new subject (with a schema of its own) again and again until stopped."""

    def __init__(self, url: str, user_info: str, threads: int = 3) -> None:
        self.outcomes = Outcomes()
        self._stop = threading.Event()
        self._config = {"url": url, "basic.auth.user.info": user_info}
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Producers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self, index: int) -> None:
        client = SchemaRegistryClient(self._config)
        while not self._stop.is_set():
            subject = unique_name(f"ha-{index}")
            try:
                schema_id = client.register_schema(subject, entry_schema(_record_name(subject)))
                self.outcomes.record(subject, None, schema_id)
            except Exception as error:  # every outcome is recorded and judged by the test
                self.outcomes.record(subject, error, None)


def _record_name(subject: str) -> str:
    return "E_" + subject.replace("-", "_")


@pytest.fixture
def pair(bootstrap: str, tmp_path: Path) -> Iterator[tuple[RegistryProcess, RegistryProcess]]:
    users = RegistryUsers(tmp_path)
    topic = unique_name("_schemas-ha")
    first = RegistryProcess(bootstrap, topic, users)
    second = RegistryProcess(bootstrap, topic, users)
    first.start()
    second.start()
    yield first, second
    for process in (first, second):
        if process.running:
            process.stop()
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the deletion is confirmed
    admin.delete_topics([topic])[topic].result(timeout=30)


def leader_of(pair: tuple[RegistryProcess, RegistryProcess]) -> tuple[RegistryProcess, RegistryProcess]:
    """(leader, follower), once both name the same leader."""
    first, second = pair
    named = wait_until(
        lambda: first.leader()["leader"] if first.leader()["leader"] == second.leader()["leader"] else None,
        timeout=30,
        message="both instances name one leader",
    )
    return (first, second) if named == first.url else (second, first)


def test_sigkill_of_the_leader_loses_no_registration_and_repeats_no_id(
    pair: tuple[RegistryProcess, RegistryProcess],
) -> None:
    leader, follower = leader_of(pair)
    urls = f"{pair[0].url},{pair[1].url}"  # what a backbone client is given
    users = leader.users
    with Producers(urls, users.credentials["writer"]) as producers:
        wait_until(lambda: len(producers.outcomes.succeeded) >= 30, timeout=60, message="registrations flow")
        leader.kill()
        killed_at = time.monotonic()
        took_over = wait_until(lambda: follower.leader()["is_leader"], timeout=FAILOVER_WITHIN_S, message="takeover")
        failover_s = time.monotonic() - killed_at
        wait_until(lambda: producers.outcomes.successes_after(killed_at) >= 30, timeout=60, message="flow resumes")
    outcomes = producers.outcomes
    print(f"failover: {failover_s:.1f}s; {len(outcomes.succeeded)} registered, {len(outcomes.retryable)} retryable")

    assert took_over and outcomes.other == {}
    assert len(set(outcomes.succeeded.values())) == len(outcomes.succeeded), "an id was given to two schemas"
    # A retryable failure may or may not have been stored before the leader died; retrying it must settle
    # it with one version and an id of its own.
    retry = follower.client("writer")
    for subject in outcomes.retryable:
        outcomes.succeeded[subject] = retry.register_schema(subject, entry_schema(_record_name(subject)))
    assert len(set(outcomes.succeeded.values())) == len(outcomes.succeeded)

    leader.start()  # back, as a follower: it reads everything from the log
    assert not leader.leader()["is_leader"]
    for instance in (follower, leader):
        client = instance.client("reader")
        for subject, schema_id in outcomes.succeeded.items():
            assert client.get_versions(subject) == [1], subject
            registered = client.get_schema(schema_id)
            assert json.loads(registered.schema_str or "")["name"] == _record_name(subject)


def test_a_paused_leader_is_fenced_when_it_wakes(pair: tuple[RegistryProcess, RegistryProcess]) -> None:
    """SIGSTOP past the session timeout: the follower takes over; the old leader, resumed, cannot write."""
    leader, follower = leader_of(pair)
    writer = {"auth": leader.users.auth("writer"), "timeout": 60}
    process_id = leader.pid
    os.kill(process_id, signal.SIGSTOP)
    try:
        wait_until(lambda: follower.leader()["is_leader"], timeout=FAILOVER_WITHIN_S, message="takeover")
        taken = httpx.post(
            f"{follower.url}/subjects/{unique_name('after')}/versions",
            json={"schema": entry_schema("After").schema_str},
            **writer,
        )
        assert taken.status_code == 200, taken.text
    finally:
        os.kill(process_id, signal.SIGCONT)
    # The woken instance may still believe it leads for a moment: whatever it answers, it never stores a
    # schema under an id the new leader gave, and it settles as a follower that forwards.
    zombie_subject = unique_name("zombie")
    answer = httpx.post(
        f"{leader.url}/subjects/{zombie_subject}/versions", json={"schema": entry_schema("Zombie").schema_str}, **writer
    )
    assert answer.status_code in (200, 503), answer.text
    wait_until(lambda: not leader.leader()["is_leader"], timeout=FAILOVER_WITHIN_S, message="the old leader follows")
    assert leader.leader()["leader"] == follower.url
    ids = {}
    for subject in follower.client("reader").get_subjects():
        ids[subject] = follower.client("reader").get_latest_version(subject).schema_id
    assert len(set(ids.values())) == len(ids)
    if answer.status_code == 200:
        assert ids[zombie_subject] == answer.json()["id"]
