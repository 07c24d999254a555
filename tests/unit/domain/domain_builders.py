"""Builders for canonical events in domain tests: sensible defaults, override what the case is about."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from backbone.domain.models import (
    ApprovalDecision,
    Client,
    ContractVersion,
    Project,
    RateCardLine,
    TimeEntry,
    Worker,
)
from backbone.domain.routing import RoutingRules

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
_clock = itertools.count()
ROUTING = RoutingRules(default="legacy-erp")


def _at() -> datetime:
    return T0 + timedelta(seconds=next(_clock))


def _envelope(kw: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": _at(), "source_system": "test", **kw}


def client(**kw: Any) -> Client:
    return Client(
        **_envelope(
            {
                "client_id": "C1",
                "name": "Globex",
                "billing_entity": "ACME EU BV",
                "currency": "EUR",
                "active": True,
                **kw,
            }
        )
    )


def project(**kw: Any) -> Project:
    return Project(
        **_envelope(
            {
                "project_id": "P1",
                "client_id": "C1",
                "name": "Apollo",
                "status": "ACTIVE",
                "billing_type": "TIME_AND_MATERIALS",
                "currency": "EUR",
                "business_unit": "consulting",
                "region": "EU",
                "legal_entity": "ACME EU BV",
                **kw,
            }
        )
    )


def worker(**kw: Any) -> Worker:
    return Worker(
        **_envelope(
            {
                "worker_id": "W1",
                "name": "Ada",
                "role": "consultant",
                "employment_type": "EMPLOYEE",
                "cost_rate": Decimal("60.00"),
                "cost_currency": "EUR",
                "active": True,
                **kw,
            }
        )
    )


def contract(**kw: Any) -> ContractVersion:
    return ContractVersion(
        **_envelope(
            {
                "contract_id": "K1",
                "version": 1,
                "project_id": "P1",
                "status": "ACTIVE",
                "effective_from": date(2026, 1, 1),
                "currency": "EUR",
                "tax_code": "VAT20",
                "default_hourly_rate": Decimal("150.00"),
                **kw,
            }
        )
    )


def line(rate: str, **selectors: str) -> RateCardLine:
    return RateCardLine(hourly_rate=Decimal(rate), **selectors)


def entry(**kw: Any) -> TimeEntry:
    return TimeEntry(
        **_envelope(
            {
                "time_entry_id": "E1",
                "revision": 1,
                "worker_id": "W1",
                "project_id": "P1",
                "work_date": date(2026, 11, 2),
                "duration_seconds": 3600,
                "billable": True,
                **kw,
            }
        )
    )


def approval(**kw: Any) -> ApprovalDecision:
    return ApprovalDecision(
        **_envelope(
            {"time_entry_id": "E1", "revision": 1, "decision": "APPROVED", "approver_id": "M1", "decided_at": T0, **kw}
        )
    )


def reject(**kw: Any) -> ApprovalDecision:
    return approval(decision="REJECTED", **kw)


def master_data() -> list[Any]:
    """Client C1, project P1 (EUR, T&M, active), worker W1 (cost 60/h), contract K1 v1 at 150/h."""
    return [client(), project(), worker(), contract()]
