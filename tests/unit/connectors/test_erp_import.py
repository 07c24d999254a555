"""ERP master data: NetSuite/D365-shaped CSV and JSON exports give canonical reference events."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backbone.domain.models import ContractVersion
from producers.erp import read_erp
from producers.parsing import ImportReport, ReadOptions

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectors"
OPTIONS = ReadOptions(exported_at=datetime(2024, 11, 1, tzinfo=UTC))


def _import(fixture: str, kind: str, **defaults: str) -> tuple[list[dict[str, Any]], list[str]]:
    report = ImportReport()
    events = list(report.events_of(read_erp(FIXTURES / fixture, kind, OPTIONS, source="erp", defaults=defaults)))  # type: ignore[arg-type]
    dumped = [
        e.model_dump(mode="json", exclude={"event_id", "source_system", "correlation_id"}, exclude_none=True)
        for e in events
    ]
    return dumped, [str(r) for r in report.rejections]


CASES: dict[str, tuple[Any, ...]] = {
    "netsuite-clients-csv-euro-label-inactive": (
        "erp_clients_netsuite.csv",
        "clients",
        {},
        [
            ("C-100", "Acme GmbH", "Firm DE", "EUR", True, "2024-10-01T08:00:00Z"),
            ("C-200", "Globex, Inc.", "Firm US", "USD", False, "2024-11-01T00:00:00Z"),
        ],
        ["line 4: currency: required value is missing"],
    ),
    "d365-clients-odata-json-blocked": (
        "erp_clients_d365.json",
        "clients",
        {},
        [
            ("US-001", "Contoso Retail", "usmf", "USD", True, "2024-09-30T12:00:00Z"),
            ("DE-014", "Fabrikam GmbH", "demf", "EUR", False, "2024-11-01T00:00:00Z"),
        ],
        [],
    ),
}


@pytest.mark.parametrize(("fixture", "kind", "defaults", "expected", "rejected"), CASES.values(), ids=CASES.keys())
def test_clients(
    fixture: str, kind: str, defaults: dict[str, str], expected: list[tuple[Any, ...]], rejected: list[str]
) -> None:
    events, rejections = _import(fixture, kind, **defaults)
    got = [
        (e["client_id"], e["name"], e["billing_entity"], e["currency"], e["active"], e["occurred_at"]) for e in events
    ]
    assert got == expected
    assert [r[: len(p)] for r, p in zip(rejections, rejected, strict=True)] == rejected


PROJECTS = {
    "netsuite-rest-json-refnames": (
        "erp_projects_netsuite.json",
        {},
        [
            ("P-100", "C-100", "ACME-001", "ACTIVE", "TIME_AND_MATERIALS", "EUR", "Consulting", "EMEA", "Firm DE"),
            ("P-200", "C-100", None, "CLOSED", "FIXED_FEE", "EUR", "Audit", "EMEA", "Firm DE"),
        ],
        ["item 3: (record): status 'Dormant' is not known"],
    ),
    "d365-csv-with-command-line-default": (
        "erp_projects_d365.csv",
        {"region": "NA"},
        [("USMF-000123", "US-001", None, "ACTIVE", "TIME_AND_MATERIALS", "USD", "Advisory", "NA", "usmf")],
        ["line 3: client_id: required value is missing"],
    ),
    "d365-csv-without-region-rejects-every-row": (
        "erp_projects_d365.csv",
        {},
        [],
        ["line 2: region: required value is missing", "line 3: client_id: required value is missing"],
    ),
}


@pytest.mark.parametrize(("fixture", "defaults", "expected", "rejected"), PROJECTS.values(), ids=PROJECTS.keys())
def test_projects(fixture: str, defaults: dict[str, str], expected: list[tuple[Any, ...]], rejected: list[str]) -> None:
    events, rejections = _import(fixture, "projects", **defaults)
    fields = (
        "project_id",
        "client_id",
        "code",
        "status",
        "billing_type",
        "currency",
        "business_unit",
        "region",
        "legal_entity",
    )
    assert [tuple(e.get(f) for f in fields) for e in events] == expected
    assert [r[: len(p)] for r, p in zip(rejections, rejected, strict=True)] == rejected


def test_workers_with_decimal_comma_costs_and_employment_synonyms() -> None:
    events, rejections = _import("erp_workers.csv", "workers")
    assert [
        (e["worker_id"], e["name"], e["employment_type"], e["cost_rate"], e["cost_currency"], e["active"])
        for e in events
    ] == [
        ("W-001", "Ada Lovelace", "EMPLOYEE", "85.50", "EUR", True),
        ("W-002", "Charles Babbage", "CONTRACTOR", "1120.00", "EUR", False),
    ]
    assert rejections == [
        "line 4: (record): employment type 'Astronaut' is not known (accepted: CONTRACTOR, EMPLOYEE and ERP synonyms)"
    ]


def test_contract_csv_groups_rate_card_lines_per_version() -> None:
    events, _rejections = _import("erp_contracts.csv", "contracts")
    assert [(e["contract_id"], e["version"], e["status"]) for e in events] == [
        ("K-1", 1, "ACTIVE"),
        ("K-1", 2, "ACTIVE"),
        ("K-2", 1, "TERMINATED"),
    ]
    assert events[0]["rate_card"] == [
        {"role": "Senior Consultant", "hourly_rate": "150.00"},
        {"worker_id": "W-001", "hourly_rate": "180.00"},
    ]
    assert (events[1]["discount_percent"], events[1]["not_to_exceed"], events[1]["effective_to"]) == (
        "12.5",
        "250000.00",
        "2024-12-31",
    )
    assert (events[0]["rounding_increment_minutes"], events[0]["rounding_mode"]) == (15, "UP")
    assert events[2]["rate_card"] == []


def test_a_contract_version_with_one_bad_line_is_rejected_whole() -> None:
    _, rejections = _import("erp_contracts.csv", "contracts")
    assert rejections == ["lines 6, 7: (record): version rejected whole; line 7: 'a lot' is not a number"]


def test_contract_json_amendments_accumulate_into_versions() -> None:
    report = ImportReport()
    events = list(report.events_of(read_erp(FIXTURES / "erp_contracts.json", "contracts", OPTIONS)))
    assert all(isinstance(e, ContractVersion) for e in events)
    versions = {e.version: e for e in events if isinstance(e, ContractVersion)}
    assert sorted(versions) == [1, 2, 3]
    assert [line.hourly_rate for line in versions[1].rate_card] == [Decimal("150.00"), Decimal("175.5")]
    assert [line.hourly_rate for line in versions[2].rate_card] == [Decimal("155.00")]
    assert versions[2].not_to_exceed == Decimal("50000.00")
    assert versions[3].status.value == "TERMINATED"
    assert versions[3].not_to_exceed == Decimal("50000.00"), "amendment 3 builds on amendment 2"
    assert versions[3].effective_from.isoformat() == "2025-10-01"
    assert [str(r) for r in report.rejections] == ["item 2: (record): rate_card line 1 has no hourly rate"]


def test_money_is_never_a_float() -> None:
    events, _ = _import("erp_contracts.json", "contracts")
    assert all(isinstance(line["hourly_rate"], str) for e in events for line in e["rate_card"])
