"""The processor runtime alone, on the real broker: what a transaction promises under failure.

Each test runs `StreamWorker`s in threads over a small counting stage: for every input record it adds
one to its key's count (state, logged to a changelog) and writes `key:count` to an output topic. Read
with read_committed, the output must hold every count of every key exactly once — a lost, repeated or
restarted-from-zero count shows at once which promise broke.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from backbone.errors import ConfigurationError, ServiceUnavailableError
from backbone.settings import Settings, StreamsSettings
from backbone.streams.errors import FatalStreamError
from backbone.streams.loop import Context, Stage, StreamWorker, WorkerSlot
from backbone.streams.state import StoreSpec
from tests.support import create_topic, unique_name, wait_until

pytestmark = [pytest.mark.integration]
PARTITIONS = 3


class IntCodec:
    def encode(self, value: int) -> bytes:
        return str(value).encode()

    def decode(self, data: bytes) -> int:
        return int(data)


@dataclass
class Pipe:
    """One test's topics and group, and helpers to publish inputs and read outputs."""

    settings: Settings
    name: str
    inputs: str = ""
    outputs: str = ""
    changelog: str = ""
    handled: Counter[str] = field(default_factory=Counter)
    hook: Callable[[Message], None] | None = None
    """Called before a record is handled (a test's way to fail or block mid-batch)."""

    def __post_init__(self) -> None:
        servers = self.settings.kafka.servers
        self.inputs = create_topic(servers, f"{self.name}.in", PARTITIONS)
        self.outputs = create_topic(servers, f"{self.name}.out", PARTITIONS)
        self.changelog = create_topic(
            servers, f"{self.name}-counts-changelog", PARTITIONS, {"cleanup.policy": "compact"}
        )
        create_topic(servers, f"{self.name}.in.dlq", 1)
        self.producer = Producer(self.settings.kafka.client_config() | {"partitioner": "murmur2_random"})

    def stage(self) -> Stage:
        return Stage("count", (self.inputs,), self.count, (StoreSpec("counts", self.changelog, IntCodec()),))

    def count(self, message: Message, context: Context) -> None:
        if self.hook is not None:
            self.hook(message)
        key = (message.key() or b"").decode()
        store = context.store("counts", message.partition())  # type: ignore[arg-type]
        n = store.get(key, 0) + 1
        store.put(key, n)
        context.produce(self.outputs, f"{key}:{n}".encode(), key=key.encode())
        self.handled[key] += 1

    def worker(self, slot: int, **tuning: int) -> StreamWorker:
        streams = StreamsSettings(session_timeout_ms=6000, **tuning)
        return StreamWorker(
            kafka=self.settings.kafka,
            streams=streams,
            slot=WorkerSlot(self.name, "test", slot),
            stages=[self.stage()],
        )

    def publish(self, keys: list[str], per_key: int) -> None:
        for _ in range(per_key):
            for key in keys:
                self.producer.produce(self.inputs, b"x", key=key.encode())
        assert self.producer.flush(30) == 0

    def committed_outputs(self, isolation: str = "read_committed") -> list[str]:
        """Every output record visible to a reader with `isolation`, read to the partitions' ends."""
        reader = Consumer(
            self.settings.kafka.client_config()
            | {"group.id": unique_name("read"), "isolation.level": isolation, "enable.partition.eof": True}
        )
        reader.assign([TopicPartition(self.outputs, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        values, ended = [], set()
        try:
            while len(ended) < PARTITIONS:
                for message in reader.consume(1000, 1.0):
                    if message.error() is None:
                        values.append(message.value().decode())
                    elif message.error().code() == KafkaError._PARTITION_EOF:
                        ended.add(message.partition())
        finally:
            reader.close()
        return values


def exactly_every_count(values: list[str], keys: list[str], per_key: int) -> bool:
    """Each key's counts 1..per_key, each exactly once."""
    return sorted(values) == sorted(f"{k}:{n}" for k in keys for n in range(1, per_key + 1))


class Running:
    """A worker's loop on a thread; `error` holds what stopped it, if anything did."""

    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(handle_signals=False)
        except BaseException as error:
            self.error = error

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "worker did not stop within 60 s"


@pytest.fixture
def pipe(settings: Settings) -> Iterator[Pipe]:
    yield Pipe(settings, unique_name("streams"))


KEYS = [f"k{i}" for i in range(12)]


def test_a_batch_aborted_midway_leaves_no_output_and_is_processed_again(pipe: Pipe) -> None:
    pipe.publish(KEYS, 5)
    failures = {"left": 1}

    def fail_once_midway(message: Message) -> None:
        if sum(pipe.handled.values()) == 30 and failures["left"]:
            failures["left"] -= 1
            raise ServiceUnavailableError("the schema registry went away for a moment")

    pipe.hook = fail_once_midway
    running = Running(pipe.worker(0, commit_interval_ms=60_000, commit_records=10_000, commit_idle_ms=0))
    try:
        wait_until(lambda: failures["left"] == 0 and sum(pipe.handled.values()) >= 90, timeout=60)
    finally:
        running.stop()
    assert running.error is None
    assert exactly_every_count(pipe.committed_outputs(), KEYS, 5)
    assert sum(pipe.handled.values()) == 30 + 60  # the aborted 30 were handled again, with all the rest


def test_a_zombie_with_the_same_transactional_id_is_fenced_and_its_output_never_appears(pipe: Pipe) -> None:
    pipe.publish(KEYS, 2)
    zombie_inside = threading.Event()
    release = threading.Event()

    def zombie_hangs(message: Message) -> None:
        if threading.current_thread() is zombie.thread and sum(pipe.handled.values()) == 12:
            zombie_inside.set()
            release.wait(60)

    pipe.hook = zombie_hangs
    zombie = Running(pipe.worker(0, commit_interval_ms=60_000, commit_idle_ms=0))
    wait_until(zombie_inside.is_set, timeout=60, message="the zombie is mid-transaction")
    successor = Running(pipe.worker(0))
    try:
        wait_until(lambda: len(pipe.committed_outputs()) == 24, timeout=60, message="the successor's outputs")
        release.set()
        zombie.thread.join(60)
        assert isinstance(zombie.error, FatalStreamError), zombie.error
        pipe.publish(KEYS, 1)
        wait_until(lambda: len(pipe.committed_outputs()) == 36, timeout=60)
    finally:
        release.set()
        successor.stop()
    assert exactly_every_count(pipe.committed_outputs(), KEYS, 3)


def test_revocation_during_a_batch_commits_it_and_the_next_owner_continues_the_state(pipe: Pipe) -> None:
    pipe.publish(KEYS, 3)
    first = Running(pipe.worker(0, commit_interval_ms=600_000, commit_records=1_000_000, commit_idle_ms=0))
    try:
        wait_until(lambda: sum(pipe.handled.values()) == 36, timeout=60, message="first batch handled")
        assert pipe.committed_outputs() == []  # nothing committed: the transaction is still open
        second = Running(pipe.worker(1, commit_interval_ms=50))
        try:
            wait_until(lambda: len(pipe.committed_outputs()) == 36, timeout=60, message="revocation committed")
            pipe.publish(KEYS, 3)
            wait_until(lambda: sum(pipe.handled.values()) == 72, timeout=60, message="second batch handled")
        finally:
            second.stop()
    finally:
        first.stop()
    assert first.error is None and second.error is None
    assert exactly_every_count(pipe.committed_outputs(), KEYS, 6)


def test_state_is_restored_after_a_restart(pipe: Pipe) -> None:
    pipe.publish(KEYS, 4)
    before = Running(pipe.worker(0))
    try:
        wait_until(lambda: len(pipe.committed_outputs()) == 48, timeout=60)
    finally:
        before.stop()
    pipe.publish(KEYS, 4)
    after = Running(pipe.worker(0))
    try:
        wait_until(lambda: len(pipe.committed_outputs()) == 96, timeout=60)
    finally:
        after.stop()
    assert exactly_every_count(pipe.committed_outputs(), KEYS, 8)


def test_a_record_a_handler_cannot_process_is_dead_lettered_and_the_partition_moves_on(pipe: Pipe) -> None:
    pipe.publish(KEYS, 2)

    def poison(message: Message) -> None:
        if message.key() == b"k3" and not pipe.handled["k3-poisoned"]:
            pipe.handled["k3-poisoned"] += 1
            raise ValueError("cannot count this one")

    pipe.hook = poison
    running = Running(pipe.worker(0))
    try:
        wait_until(lambda: len(pipe.committed_outputs()) == 23, timeout=60)
    finally:
        running.stop()
    reader = Consumer(pipe.settings.kafka.client_config() | {"group.id": unique_name("dlq")})
    reader.assign([TopicPartition(f"{pipe.inputs}.dlq", 0, OFFSET_BEGINNING)])
    [dead] = wait_until(lambda: reader.consume(10, 1.0), timeout=30)
    reader.close()
    headers = dict(dead.headers())
    assert dead.key() == b"k3"
    assert headers["backbone.error.class"] == b"ValueError"
    assert headers["backbone.error.message"] == b"cannot count this one"
    assert headers["backbone.error.topic"] == pipe.inputs.encode()
    assert exactly_every_count(
        [v for v in pipe.committed_outputs() if not v.startswith("k3:")], [k for k in KEYS if k != "k3"], 2
    )
    assert sorted(v for v in pipe.committed_outputs() if v.startswith("k3:")) == ["k3:1"]


def test_a_stage_whose_inputs_are_not_co_partitioned_is_refused_before_it_starts(pipe: Pipe) -> None:
    other = create_topic(pipe.settings.kafka.servers, f"{pipe.name}.other", PARTITIONS + 1)
    stage = pipe.stage()
    worker = StreamWorker(
        kafka=pipe.settings.kafka,
        streams=StreamsSettings(),
        slot=WorkerSlot(pipe.name, "test", 0),
        stages=[Stage(stage.name, (pipe.inputs, other), stage.handle, stage.stores)],
    )
    with pytest.raises(ConfigurationError) as refused:
        worker.run(handle_signals=False)
    assert f"{other}': {PARTITIONS + 1}" in str(refused.value)
    assert "one partition count" in str(refused.value)
