"""`backbone emit` refuses invalid input before it touches Kafka: these run with no broker at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from backbone.cli.main import cli
from tests.examples import RICH

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
