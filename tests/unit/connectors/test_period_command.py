"""`backbone import TRACKER FILE --period FROM..TO`: what the command refuses before it touches Kafka.

The publishing path (the ledger, the transaction, fencing) runs on the real broker in
tests/integration/test_period_imports.py; a refused file must never get that far, so a `PeriodPublisher`
that fails the test when built stands in for it here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from backbone.cli.main import cli

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "periods"
MARCH = ["--period", "2024-03-01..2024-03-31", "--exported-at", "2024-04-01T00:00:00Z"]


@pytest.fixture(autouse=True)
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a refused file must not reach the publisher")

    monkeypatch.setattr("producers.periods.PeriodPublisher.__init__", refuse)
    # the topics check before reading (tested with the import command) finds them all here
    monkeypatch.setattr("backbone.cli.imports._preflight", lambda *args: None)


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["import", *args])


def test_a_row_dated_outside_the_period_refuses_the_file_naming_its_line() -> None:
    result = _invoke("harvest", str(FIXTURES / "harvest_march_outside.csv"), *MARCH)
    assert result.exit_code == 2, result.stderr
    assert "line 3: work_date: 2024-04-01 is outside the period 2024-03-01..2024-03-31" in result.stderr
    assert "nothing was published" in result.stderr


@pytest.mark.parametrize("period", ["march", "2024-03-31..2024-03-01"], ids=["not-from-to", "ends-before-it-starts"])
def test_a_period_that_is_not_from_to_is_refused(period: str) -> None:
    result = _invoke("harvest", str(FIXTURES / "harvest_march_v1.csv"), "--period", period)
    assert result.exit_code == 2, result.stderr
    assert "--period" in result.stderr


def test_a_workspace_that_cannot_name_a_transactional_id_is_refused() -> None:
    result = _invoke("toggl", str(FIXTURES / "harvest_march_v1.csv"), *MARCH, "--workspace", "a|b")
    assert result.exit_code == 2, result.stderr
    assert "--workspace" in result.stderr
