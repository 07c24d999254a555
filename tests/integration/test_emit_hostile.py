"""`backbone emit` on hostile and huge input, as a user runs it (a subprocess) against the real broker.

A binary file, a 200 MB line and a FIFO end in a clear message, bounded memory and no traceback; an
input with one invalid line publishes nothing; `--skip-invalid` on standard input leaves no rejects
file behind unless `--rejects` names one; and a large file is emitted within a fixed memory bound
(the 1 GB one is marked `huge`, deselected by default: `pytest -m huge tests/integration/test_emit_hostile.py`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from backbone.kafka import topics as catalog
from tests.support import MeasuredRun, create_topic, run_backbone_measured, unique_name

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
RSS_BOUND_MIB = 300


def entry_line(index: int) -> bytes:
    entry = {
        "occurred_at": "2026-11-02T09:30:00Z",
        "source_system": "bench",
        "time_entry_id": f"TE-{index}",
        "revision": 1,
        "worker_id": f"W-{index % 250}",
        "project_id": f"P-{index % 40}",
        "work_date": "2026-11-02",
        "duration_seconds": 900 + index % 28_800,
        "billable": True,
        "notes": "Implementation work on the integration backbone",
    }
    return json.dumps(entry).encode() + b"\n"


Run = MeasuredRun


def run_emit(
    settings_env: dict[str, str], cwd: Path, *args: str, stdin: Any = subprocess.DEVNULL, timeout: float = 600
) -> Run:
    return run_backbone_measured(["emit", *args], env=settings_env, cwd=cwd, stdin=stdin, timeout=timeout)


@pytest.fixture
def env(bootstrap: str, registry_url: str) -> dict[str, str]:
    return {"BACKBONE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "BACKBONE_SCHEMA_REGISTRY_URL": registry_url}


@pytest.fixture
def topic(bootstrap: str) -> catalog.Topic:
    made = dataclasses.replace(catalog.TIME_ENTRIES, name=unique_name("emit-hostile"), partitions=1)
    create_topic(bootstrap, made.name, 1)
    return made


def records_on(bootstrap: str, topic: catalog.Topic) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("count")})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic.name, 0), timeout=10)
    finally:
        consumer.close()
    return high - low


def assert_clean_failure(run: Run, *phrases: str) -> None:
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr
    for phrase in phrases:
        assert phrase in run.stderr, run.stderr


def test_a_binary_file_is_refused_up_front(env: dict[str, str], topic: catalog.Topic, tmp_path: Path) -> None:
    binary = tmp_path / "export.xlsx"
    binary.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + os.urandom(4096))
    run = run_emit(env, tmp_path, "time-entry", str(binary), "--topic", topic.name)
    assert_clean_failure(run, "is a binary file", "NUL byte")


def test_a_200_mb_line_is_an_invalid_line_read_in_bounded_memory(
    env: dict[str, str], topic: catalog.Topic, tmp_path: Path
) -> None:
    source = tmp_path / "entries.jsonl"
    with source.open("wb") as out:
        out.write(entry_line(1))
        out.write(b'{"notes": "' + b"x" * (200 * MIB) + b'"}\n')
        out.write(entry_line(3))
    run = run_emit(env, tmp_path, "time-entry", str(source), "--topic", topic.name)
    assert_clean_failure(run, "line 2: (line): line is longer than 1,048,576 bytes", "nothing was published")
    assert run.total_peak_rss_mib < 150, (
        f"peak RSS {run.peak_rss_mib:.0f} MiB, its child's {run.children_peak_rss_mib:.0f}"
    )
    assert records_on(env["BACKBONE_KAFKA_BOOTSTRAP_SERVERS"], topic) == 0


def test_a_line_that_is_not_utf8_names_its_line_and_byte(
    env: dict[str, str], topic: catalog.Topic, tmp_path: Path
) -> None:
    source = tmp_path / "entries.jsonl"
    source.write_bytes(entry_line(1) + b'{"notes": "caf\xe9"}\n')
    run = run_emit(env, tmp_path, "time-entry", str(source), "--topic", topic.name)
    assert_clean_failure(run, "line 2: (line): not UTF-8 text: byte 0xe9 at column 15")
    assert records_on(env["BACKBONE_KAFKA_BOOTSTRAP_SERVERS"], topic) == 0


def test_a_fifo_is_read_once_and_published_whole(env: dict[str, str], topic: catalog.Topic, tmp_path: Path) -> None:
    fifo = tmp_path / "entries.fifo"
    os.mkfifo(fifo)
    count = 25_000  # more than one pass could keep in memory before; the old second pass could not seek a FIFO

    def feed() -> None:
        with fifo.open("wb") as out:
            for i in range(count):
                out.write(entry_line(i))

    feeder = threading.Thread(target=feed)
    feeder.start()
    run = run_emit(env, tmp_path, "time-entry", str(fifo), "--topic", topic.name, "-q")
    feeder.join(timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"published {count}, rejected 0")
    assert records_on(env["BACKBONE_KAFKA_BOOTSTRAP_SERVERS"], topic) == count


def test_skip_invalid_on_stdin_writes_rejects_only_where_asked(
    env: dict[str, str], topic: catalog.Topic, tmp_path: Path
) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(entry_line(1) + b'{"revision": 2147483648}\n' + entry_line(2))
    workdir = tmp_path / "work"
    workdir.mkdir()
    with source.open("rb") as stdin:
        run = run_emit(env, workdir, "time-entry", "-", "--topic", topic.name, "--skip-invalid", stdin=stdin)
    assert run.returncode == 0, run.stderr
    assert "use --rejects FILE to keep them" in run.stderr
    assert list(workdir.iterdir()) == [], "nothing written to the working directory"
    kept = tmp_path / "kept.jsonl"
    with source.open("rb") as stdin:
        args = ("time-entry", "-", "--topic", topic.name, "--skip-invalid", "--rejects", str(kept))
        run = run_emit(env, workdir, *args, stdin=stdin)
    assert run.returncode == 0, run.stderr
    (rejected,) = [json.loads(line) for line in kept.read_text().splitlines()]
    assert rejected["line"] == 2 and {e["field"] for e in rejected["errors"]} >= {"revision"}
    assert records_on(env["BACKBONE_KAFKA_BOOTSTRAP_SERVERS"], topic) == 4, "two valid lines, twice"


def test_one_value_out_of_avro_range_at_the_end_publishes_nothing(
    env: dict[str, str], topic: catalog.Topic, tmp_path: Path
) -> None:
    source = tmp_path / "entries.jsonl"
    with source.open("wb") as out:
        for i in range(20_000):
            out.write(entry_line(i))
        out.write(entry_line(20_000).replace(b'"duration_seconds": ', b'"duration_seconds": 9223372036854775808'))
    run = run_emit(env, tmp_path, "time-entry", str(source), "--topic", topic.name)
    assert_clean_failure(run, "line 20001: duration_seconds")
    assert records_on(env["BACKBONE_KAFKA_BOOTSTRAP_SERVERS"], topic) == 0


def _emit_within_memory_bound(env: dict[str, str], topic: catalog.Topic, tmp_path: Path, size_mib: int) -> None:
    source = tmp_path / "big.jsonl"
    lines = 0
    with source.open("wb", buffering=4 * MIB) as out:
        while out.tell() < size_mib * MIB:
            out.write(entry_line(lines))
            lines += 1
    run = run_emit(env, tmp_path, "time-entry", str(source), "--topic", topic.name, "-q", timeout=3600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"published {lines}, rejected 0")
    assert run.total_peak_rss_mib < RSS_BOUND_MIB, (
        f"{size_mib} MiB input: peak RSS {run.peak_rss_mib:.0f} MiB, its child's {run.children_peak_rss_mib:.0f}"
    )
    assert records_on(env["BACKBONE_KAFKA_BOOTSTRAP_SERVERS"], topic) == lines


def test_emit_of_a_32_mb_file_stays_within_the_memory_bound(
    env: dict[str, str], topic: catalog.Topic, tmp_path: Path
) -> None:
    _emit_within_memory_bound(env, topic, tmp_path, 32)


@pytest.mark.huge
@pytest.mark.timeout(3600)
def test_emit_of_a_1_gb_file_stays_within_the_memory_bound(
    env: dict[str, str], topic: catalog.Topic, tmp_path: Path
) -> None:
    _emit_within_memory_bound(env, topic, tmp_path, 1024)
