"""Helpers tests share: deadline waits (never fixed sleeps) and unique names."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# A valid canonical time entry as a client posts it to the gateway (tests vary one field at a time).
GATEWAY_TIME_ENTRY = {
    "occurred_at": "2024-03-05T08:00:00Z",
    "source_system": "harvest",
    "time_entry_id": "H-1",
    "revision": 1,
    "worker_id": "W-1",
    "project_id": "P-1",
    "work_date": "2024-03-04",
    "duration_seconds": 3600,
    "billable": True,
}


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
    """Create a topic and return once every partition answers offset requests."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(timeout=30)
    wait_for_partitions(bootstrap, name, partitions)
    return name


def wait_for_partitions(bootstrap: str, name: str, partitions: int, timeout: float = 30.0) -> None:
    """Wait until every partition of `name` answers a watermark request.

    Metadata names a leader a moment before the broker has loaded the partition's log; until then
    offset requests fail with NOT_LEADER_FOR_PARTITION, so "has a leader" is not "ready".
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    not_yet = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,  # the client's metadata does not list it yet
        KafkaError._UNKNOWN_TOPIC,
    }

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("ready")})

    def answers() -> bool:
        try:
            for partition in range(partitions):
                consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=5, cached=False)
        except KafkaException as error:
            if error.args[0].code() not in not_yet:
                raise
            return False
        return True

    try:
        wait_until(answers, timeout=timeout, message=f"every partition of {name} answers offset requests")
    finally:
        consumer.close()


@dataclass
class MeasuredRun:
    """A finished `backbone` command: exit code, output, its own peak RSS and its children's.

    `emit` and `import` validate a large input in two processes (the second a fork of the first), so
    what a command holds is both: `total_peak_rss_mib` adds the largest child's peak to the command's
    own, an upper bound (pages a forked child shares with its parent count twice, and the two peaks need
    not be at the same moment)."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss_mib: float
    children_peak_rss_mib: float

    @property
    def total_peak_rss_mib(self) -> float:
        return self.peak_rss_mib + self.children_peak_rss_mib


def run_backbone_measured(
    args: list[str], *, env: dict[str, str], cwd: Path, stdin: Any = subprocess.DEVNULL, timeout: float = 600
) -> MeasuredRun:
    """`backbone ARGS...` in a child process that reports its own peak RSS (VmHWM) as it exits.

    Not `wait4`'s ru_maxrss: on Linux that includes the forked copy of the (large) test process."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as scratch:
        status_file = Path(scratch) / "status"
        code = (
            "import atexit, resource, sys\n"
            "def report():\n"
            "    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            f"    status = open('/proc/self/status').read() + f'Children: {{children}} kB\\n'\n"
            f"    open({str(status_file)!r}, 'w').write(status)\n"
            "atexit.register(report)\n"
            "from backbone.cli.main import cli\n"
            "cli(sys.argv[1:], prog_name='backbone')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            stdin=stdin,
            capture_output=True,
            cwd=cwd,
            env={**os.environ, **env, "PYTHONPATH": str(root)},
            timeout=timeout,
            check=False,
        )
        status = status_file.read_text()
    peak_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    children_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Children:"))
    return MeasuredRun(
        done.returncode, done.stdout.decode(), done.stderr.decode(), peak_kib / 1024, children_kib / 1024
    )
