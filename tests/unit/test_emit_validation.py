"""`backbone emit` refuses invalid input before it touches Kafka: these run with no broker at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from backbone.cli import halves
from backbone.cli.main import cli
from tests.examples import RICH, minimal_time_entry

UNREACHABLE = {
    "BACKBONE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "BACKBONE_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=UNREACHABLE)


def test_invalid_line_fails_with_exit_2_and_names_line_and_field(runner: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "workers.jsonl"
    good = json.dumps(RICH["worker"])
    source.write_text("\n".join([good, json.dumps({**RICH["worker"], "cost_rate": 85.5}), good]) + "\n")
    result = runner.invoke(cli, ["emit", "worker", str(source)])
    assert result.exit_code == 2
    assert "line 2: cost_rate: money, rates and percentages must be decimal strings" in result.stderr
    assert "nothing was published" in result.stderr
    assert "--skip-invalid" in result.stderr


def test_invalid_stdin_is_refused_the_same_way(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["emit", "approval", "-"], input="{not json\n")
    assert result.exit_code == 2
    assert "line 1: (json): not valid JSON" in result.stderr


def test_many_problems_are_summarised(runner: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text("{}\n" * 30)
    result = runner.invoke(cli, ["emit", "time-entry", str(source)])
    assert result.exit_code == 2
    assert "more problems" in result.stderr
    assert "30 of 30 lines are invalid" in result.stderr


def test_unknown_event_type_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["emit", "invoice-candidate", "-"], input="")
    assert result.exit_code == 2
    assert "time-entry" in result.stderr


def test_missing_file_says_so(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["emit", "client", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_empty_input_publishes_nothing_and_needs_no_broker(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["emit", "client", "-"], input="\n\n")
    assert result.exit_code == 0, result.stderr
    assert "published 0, rejected 0" in result.stdout


def _mixed_lines(count: int) -> bytes:
    """Time entries with every kind of bad line spread over the file: invalid fields, not JSON, not UTF-8,
    blank lines, a line longer than the limit, and a byte order mark before the first."""
    lines = []
    for index in range(count):
        entry = json.dumps(minimal_time_entry(index)).encode()
        if index % 97 == 5:
            entry = json.dumps({**minimal_time_entry(index), "duration_seconds": -1}).encode()
        elif index % 131 == 7:
            entry = b"{not json"
        elif index % 173 == 11:
            entry = b'{"notes": "\xff"}'
        elif index % 211 == 13:
            entry = b""
        elif index == count // 2:
            entry = b'{"notes": "' + b"x" * 2000 + b'"}'
        lines.append(entry)
    return b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n"


def test_a_file_validated_in_halves_is_refused_exactly_as_in_one_pass(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "entries.jsonl"
    source.write_bytes(_mixed_lines(3000))
    rejects = tmp_path / "rejects.jsonl"
    args = ["emit", "time-entry", str(source), "--max-line-bytes", "1024", "--rejects", str(rejects)]
    outcomes = []
    for threshold in (1 << 40, 1):  # one pass, then two halves (the file is far smaller than the default)
        monkeypatch.setattr(halves, "PARALLEL_BYTES", threshold)
        result = runner.invoke(cli, args)
        outcomes.append((result.exit_code, result.stderr, rejects.read_bytes()))
        rejects.unlink()
    one_pass, in_halves = outcomes
    assert in_halves == one_pass
    assert one_pass[0] == 2
    assert b'"line":1501,"errors":[{"field":"(line)","reason":"line is longer' in one_pass[2]
    assert one_pass[2].rstrip().rsplit(b"\n", 1)[-1].startswith(b'{"line":2953,')  # the last, numbered in the file


def test_the_cut_is_at_a_line_start_and_counts_the_lines_before(tmp_path: Path) -> None:
    source = tmp_path / "lines.jsonl"
    source.write_bytes(b"a\n" * 10 + b"b" * 50 + b"\n" + b"c\n" * 5)
    with source.open("rb") as handle:
        offset, before = halves.cut(handle) or (0, 0)
        assert handle.tell() == 0
        assert (offset, before) == (71, 11)
        assert source.read_bytes()[offset:].startswith(b"c\n")
        first = halves.FirstPart(handle, offset)
        assert b"".join(iter(lambda: first.readline(7), b"")) == source.read_bytes()[:offset]
