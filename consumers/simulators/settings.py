"""Settings of the simulators (`BACKBONE_ERP_SIM_*`, `BACKBONE_BILLING_SIM_*`), read once at the entry point.

Command-line flags of `backbone run erp-sim` / `billing-sim` override the environment. Lists are JSON
in the environment (`BACKBONE_ERP_SIM_PROJECTS='["P-1","P-2"]'`); the fault plan is nested
(`BACKBONE_BILLING_SIM_FAULTS__ERROR_RATE=0.1`). The admin token is a `SecretStr`: without one,
`/admin/faults` refuses every call, so faults can then only be set by flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backbone.errors import ConfigurationError
from consumers.simulators.faults import FaultPlan

_INSTANCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_PERIOD = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


class SimulatorSettings(BaseSettings):
    """What both simulators share: where they listen, their connections, admin token and faults."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_nested_delimiter="__")

    host: str = "127.0.0.1"
    port: int = 8090
    pool_size: int = Field(default=10, ge=1, le=90, description="PostgreSQL connections at most.")
    admin_token: SecretStr | None = Field(default=None, description="Bearer token of /admin/faults.")
    faults: FaultPlan = Field(default_factory=FaultPlan, description="Faults in force from the start.")
    group_commit_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="Writes arriving within this long of the first share one transaction (group commit).",
    )


class ErpSimSettings(SimulatorSettings):
    """One named ERP instance: its schema, the periods it has closed and the master data it knows."""

    model_config = SettingsConfigDict(
        env_prefix="BACKBONE_ERP_SIM_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    port: int = 8090
    name: str = Field(default="erp", description="Instance name; the schema is erp_sim_<name>.")
    closed_before: date | None = Field(default=None, description="Every period before this date is closed.")
    closed_periods: frozenset[str] = Field(default=frozenset(), description="Closed months, YYYY-MM.")
    projects: frozenset[str] | None = Field(default=None, description="Known projects; None accepts any.")
    reject_project_pattern: str | None = Field(default=None, description="Regex of project ids to refuse.")
    cost_centres: frozenset[str] | None = Field(default=None, description="Known cost centres; None accepts any.")
    on_conflict: Literal["reject", "update"] = Field(
        default="reject", description="Same external id, other content: 409 (reject) or update the document."
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not _INSTANCE_NAME.match(name):
            raise ValueError("an instance name is lowercase letters, digits, - and _ (at most 40)")
        return name

    @field_validator("closed_periods")
    @classmethod
    def _months(cls, periods: frozenset[str]) -> frozenset[str]:
        bad = sorted(p for p in periods if not _PERIOD.match(p))
        if bad:
            raise ValueError(f"closed periods are months like 2026-01, not {', '.join(bad)}")
        return periods

    @field_validator("reject_project_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            re.compile(pattern)
        return pattern

    @property
    def db_schema(self) -> str:
        return "erp_sim_" + self.name.replace("-", "_")


class BillingSimSettings(SimulatorSettings):
    """The Stripe-like billing engine: its schema and how long idempotency keys live."""

    model_config = SettingsConfigDict(
        env_prefix="BACKBONE_BILLING_SIM_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    port: int = 8091
    db_schema: str = Field(default="billing_sim", description="PostgreSQL schema of its documents.")
    idempotency_ttl_s: float = Field(default=24 * 3600, gt=0, description="Stripe keeps keys for 24 hours.")


SimulatorSettingsT = TypeVar("SimulatorSettingsT", bound=SimulatorSettings)


def settings_from_flags(cls: type[SimulatorSettingsT], flags: Mapping[str, Any]) -> SimulatorSettingsT:
    """The environment's settings with the command line's flags on top (None or () means "not given").

    Flags named like `FaultPlan` fields (`error_rate`, `burst`, ...) change only those fields of the
    fault plan the environment sets.
    """
    given = {name: value for name, value in flags.items() if value is not None and value != ()}
    fault_flags = {name: given.pop(name) for name in list(given) if name in FaultPlan.model_fields}
    try:
        if fault_flags:
            given["faults"] = FaultPlan(**{**cls().faults.model_dump(), **fault_flags})
        return cls(**given)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigurationError(f"invalid simulator setting {where}: {first['msg']}") from None
