"""`backbone import ...`: rejected rows are listed with line numbers, the rest printed, a summary ends it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from backbone.cli.main import cli

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectors"


def _run(*args: str) -> tuple[int, list[dict[str, object]], str]:
    result = CliRunner().invoke(cli, ["import", *args, "--dry-run", "--exported-at", "2024-11-01T00:00:00Z"])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, lines, result.stderr


@pytest.mark.parametrize(
    ("args", "exit_code", "types", "rejected"),
    [
        (
            ["harvest", str(FIXTURES / "harvest_detailed_eu.csv")],
            2,
            ["time-entry", "approval", "time-entry", "time-entry", "time-entry"],
            ["line 6", "line 7", "line 8"],
        ),
        (["toggl", str(FIXTURES / "toggl_detailed_bom_eur.csv")], 0, ["time-entry"] * 2, []),
        (
            ["clockify", str(FIXTURES / "clockify_detailed_dmy.csv"), "--date-order", "DMY"],
            2,
            ["time-entry", "approval", "time-entry", "approval", "time-entry"],
            ["line 5"],
        ),
        (["erp", "--kind", "contracts", str(FIXTURES / "erp_contracts.csv")], 2, ["contract"] * 3, ["lines 6, 7"]),
        (
            [
                "erp",
                "--kind",
                "projects",
                str(FIXTURES / "erp_projects_d365.csv"),
                "--set",
                "region=NA",
                "--source",
                "d365",
            ],
            2,
            ["project"],
            ["line 3"],
        ),
    ],
    ids=["harvest-partial", "toggl-clean", "clockify-day-first", "erp-contracts", "erp-projects-with-default"],
)
def test_import_prints_accepted_events_and_lists_rejections(
    args: list[str], exit_code: int, types: list[str], rejected: list[str]
) -> None:
    code, events, stderr = _run(*args)
    assert code == exit_code, stderr
    assert [e["event_type"] for e in events] == types
    listed = [
        line.removeprefix("rejected ").split(":")[0] for line in stderr.splitlines() if line.startswith("rejected")
    ]
    assert listed == rejected
    assert "records read" in stderr


def test_unmapped_report_policy_and_identity_table() -> None:
    code, events, stderr = _run(
        "clockify",
        str(FIXTURES / "clockify_detailed_us.csv"),
        "--identity",
        str(FIXTURES / "identity.csv"),
        "--unmapped",
        "report",
    )
    assert code == 2
    assert [(e["worker_id"], e["project_id"], e.get("task_id")) for e in events] == [("W-001", "P-200", "T-1")]
    assert "rejected line 2: clockify project (name='Project without Client') has no mapping" in stderr


def test_event_ids_are_filled_and_stable() -> None:
    _, first, _ = _run("toggl", str(FIXTURES / "toggl_detailed_12h.csv"))
    _, again, _ = _run("toggl", str(FIXTURES / "toggl_detailed_12h.csv"))
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again]
    assert all(e["event_id"] for e in first)
