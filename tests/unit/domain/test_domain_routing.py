"""billing-rules.md §10: ordered routing rules, first match wins, a default is required."""

from pathlib import Path

import pytest

from backbone.domain.routing import parse_routing
from backbone.errors import ConfigurationError

RULES = """
default = "legacy-erp"

[[rule]]
business_unit = "consulting"
region = "EU"
erp_target = "cloud-erp-eu"

[[rule]]
region = "EU"
billing_type = "*"
erp_target = "cloud-erp"

[[rule]]
business_unit = "*"
billing_type = "FIXED_FEE"
erp_target = "fixed-fee-erp"
"""


@pytest.mark.parametrize(
    ("business_unit", "region", "billing_type", "target"),
    [
        pytest.param("consulting", "EU", "TIME_AND_MATERIALS", "cloud-erp-eu", id="first-matching-rule-wins"),
        pytest.param("audit", "EU", "FIXED_FEE", "cloud-erp", id="absent-field-matches-anything"),
        pytest.param("audit", "US", "FIXED_FEE", "fixed-fee-erp", id="star-matches-anything"),
        pytest.param("audit", "US", "TIME_AND_MATERIALS", "legacy-erp", id="no-match-uses-the-default"),
    ],
)
def test_first_matching_rule_names_the_erp_target(business_unit, region, billing_type, target) -> None:
    assert parse_routing(RULES).target(business_unit, region, billing_type) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('[[rule]]\nregion = "EU"\nerp_target = "x"\n', "no default", id="default-is-required"),
        pytest.param('default = "x"\n[[rule]]\nregion = "EU"\n', "invalid rules", id="rule-needs-a-target"),
        pytest.param(
            'default = "x"\n[[rule]]\nzone = "EU"\nerp_target = "y"\n',
            "invalid rules",
            id="unknown-selector-is-an-error",
        ),
        pytest.param("default = ", "not valid TOML", id="malformed-file"),
    ],
)
def test_broken_rules_are_a_clear_configuration_error(text, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_routing(text)


def test_the_shipped_routing_file_is_valid() -> None:
    shipped = Path(__file__).parents[3] / "topology" / "routing.toml"
    rules = parse_routing(shipped.read_text())
    assert rules.default and rules.target("any", "EU", "TIME_AND_MATERIALS") == "cloud-erp"
