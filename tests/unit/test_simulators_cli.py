"""`backbone run erp-sim` / `billing-sim` turn their flags into settings before anything starts."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from click.testing import CliRunner

from backbone.cli.main import cli
from consumers.simulators import server


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The simulator settings the command would serve with (nothing is served)."""
    calls: list[Any] = []
    monkeypatch.setattr(server, "run_erp_sim", lambda _settings, erp: calls.append(erp))
    monkeypatch.setattr(server, "run_billing_sim", lambda _settings, billing: calls.append(billing))
    return calls


def test_erp_sim_flags_become_the_instance_settings(started: list[Any]) -> None:
    flags = ["--name", "legacy-erp", "--port", "8190", "--closed-before", "2026-01-01", "--closed-period", "2026-03"]
    flags += ["--project", "P-1", "--project", "P-2", "--on-conflict", "update", "--burst", "2", "--seed", "9"]
    result = CliRunner().invoke(cli, ["run", "erp-sim", *flags])
    assert result.exit_code == 0, result.output
    [erp] = started
    assert (erp.db_schema, erp.port, erp.closed_before) == ("erp_sim_legacy_erp", 8190, date(2026, 1, 1))
    assert (erp.closed_periods, erp.projects, erp.on_conflict) == ({"2026-03"}, {"P-1", "P-2"}, "update")
    assert (erp.cost_centres, erp.faults.burst, erp.faults.seed) == (None, 2, 9)


def test_billing_sim_flags_become_its_settings(started: list[Any]) -> None:
    result = CliRunner().invoke(cli, ["run", "billing-sim", "--schema", "billing_it", "--outage-s", "30"])
    assert result.exit_code == 0, result.output
    [billing] = started
    assert (billing.db_schema, billing.port, billing.faults.outage_s) == ("billing_it", 8091, 30.0)


@pytest.mark.parametrize(
    "flags",
    [
        ["--name", "Legacy ERP"],
        ["--name", "erp", "--closed-period", "2026-13"],
        ["--name", "erp", "--closed-before", "x"],
    ],
    ids=["bad-name", "bad-month", "bad-date"],
)
def test_bad_flags_are_a_configuration_error_before_anything_starts(started: list[Any], flags: list[str]) -> None:
    result = CliRunner().invoke(cli, ["run", "erp-sim", *flags])
    assert result.exit_code == 78 and "invalid simulator setting" in result.output
    assert started == []
