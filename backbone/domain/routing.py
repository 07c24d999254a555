"""Which ERP a project's postings go to (billing-rules.md §10): an ordered rule list, first match wins.

Rules match `business_unit`, `region` and `billing_type` (any subset; `*` or an absent field matches
everything) and name an `erp_target`; a default target is required. The rules live in a TOML file
(`topology/routing.toml` by default) so a migration moves projects between the legacy and the cloud ERP
without code changes:

    default = "legacy-erp"

    [[rule]]
    business_unit = "consulting"
    region = "EU"
    erp_target = "cloud-erp"
"""

from __future__ import annotations

import tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backbone.domain.models import Project
from backbone.errors import ConfigurationError

ANY = "*"


class RoutingRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    business_unit: str = ANY
    region: str = ANY
    billing_type: str = ANY
    erp_target: str = Field(min_length=1)

    def matches(self, business_unit: str, region: str, billing_type: str) -> bool:
        return (
            self.business_unit in (ANY, business_unit)
            and self.region in (ANY, region)
            and self.billing_type in (ANY, billing_type)
        )


class RoutingRules(BaseModel):
    """The ordered rules and the required default."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    default: str = Field(min_length=1)
    rules: tuple[RoutingRule, ...] = Field(default=(), alias="rule")

    def target(self, business_unit: str, region: str, billing_type: str) -> str:
        """The erp_target of the first matching rule, else the default."""
        for rule in self.rules:
            if rule.matches(business_unit, region, billing_type):
                return rule.erp_target
        return self.default

    def target_for(self, project: Project) -> str:
        """The target of a project's postings (asked for every priced entry, so remembered per rule set)."""
        key = (project.business_unit, project.region, project.billing_type)
        held = _TARGETS.get(id(self))
        if held is None or held[0] is not self:
            if len(_TARGETS) >= _CACHED_RULE_SETS:
                _TARGETS.clear()
            held = _TARGETS[id(self)] = (self, {})
        targets = held[1]
        target = targets.get(key)
        if target is None:
            if len(targets) >= _CACHED_TARGETS:
                targets.clear()
            target = targets[key] = self.target(key[0], key[1], str(key[2]))
        return target


_TARGETS: dict[int, tuple[RoutingRules, dict[tuple[str, str, str], str]]] = {}
"""Targets already chosen, per rule set (by id, with the rule set itself so that its id is never reused while
it is held) and (business_unit, region, billing_type). Rules are frozen, so a chosen target stays right; kept
outside the model because a private attribute would take part in the model's equality."""
_CACHED_RULE_SETS = 16
_CACHED_TARGETS = 4096


def parse_routing(text: str, *, source: str = "routing rules") -> RoutingRules:
    """Rules from TOML text; a missing default or a malformed rule is a configuration error."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(
            f"{source} is not valid TOML: {error}", hint="fix the file; see topology/routing.toml for the format"
        ) from error
    if "default" not in document:
        raise ConfigurationError(
            f"{source} has no default erp_target", hint='add a top-level line like default = "legacy-erp"'
        )
    try:
        return RoutingRules.model_validate(document)
    except ValidationError as error:
        raise ConfigurationError(
            f"{source} has invalid rules: {error}",
            hint="each [[rule]] takes business_unit, region, billing_type and erp_target",
        ) from error
