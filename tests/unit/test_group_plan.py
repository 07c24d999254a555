"""Which processes `backbone run all` runs: derived from the routing file's targets, connectors pointed at
the simulators, commands this build lacks skipped with a reason, and a children file read as data.
The processes themselves are tests/integration/test_supervisor.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from backbone.cli.group import (
    GroupOptions,
    children_from_file,
    plan_group,
    routing_targets,
)
from backbone.errors import ConfigurationError
from backbone.runtime.supervisor import ChildSpec

EVERY_COMMAND = {"topology", "sink", "billing-connector", "erp-connector", "billing-sim", "erp-sim"}
ROUTING = """
default = "legacy-erp"

[[rule]]
region = "EU"
erp_target = "cloud-erp"

[[rule]]
business_unit = "consulting"
erp_target = "legacy-erp"
"""


@pytest.fixture
def routing(tmp_path: Path) -> Path:
    path = tmp_path / "routing.toml"
    path.write_text(ROUTING)
    return path


def _by_name(children: list[ChildSpec]) -> dict[str, ChildSpec]:
    return {child.name: child for child in children}


def test_routing_targets_are_the_default_then_each_rule_target_once(routing: Path) -> None:
    assert routing_targets(routing) == ["legacy-erp", "cloud-erp"]


def test_without_simulators_the_group_is_topology_sink_and_a_connector_per_system(routing: Path) -> None:
    children, skipped = plan_group(GroupOptions(routing), EVERY_COMMAND)
    assert [c.name for c in children] == [
        "topology", "sink", "billing-connector", "erp-connector:legacy-erp", "erp-connector:cloud-erp",
    ]  # fmt: skip
    assert skipped == {}
    named = _by_name(children)
    assert named["erp-connector:cloud-erp"].argv[-4:] == ("run", "erp-connector", "--target", "cloud-erp")
    assert named["topology"].argv[-4:] == ("--routing", str(routing), "--app-id", "backbone-topology")
    assert all(not c.env for c in children), "no simulator URLs without simulators"


def test_simulators_start_first_on_their_own_ports_and_connectors_point_at_them(routing: Path) -> None:
    children, _ = plan_group(GroupOptions(routing, simulators=True, simulator_port=36110), EVERY_COMMAND)
    named = _by_name(children)
    assert [c.name for c in children[:3]] == ["billing-sim", "erp-sim:legacy-erp", "erp-sim:cloud-erp"]
    assert {c.tier for c in children[:3]} == {0} and {c.tier for c in children[3:]} == {1}
    assert named["erp-sim:legacy-erp"].argv[-5:] == ("erp-sim", "--name", "legacy-erp", "--port", "36110")
    assert named["billing-sim"].argv[-3:] == ("billing-sim", "--port", "36111")
    assert named["erp-sim:cloud-erp"].argv[-5:] == ("erp-sim", "--name", "cloud-erp", "--port", "36112")
    assert named["billing-connector"].argv[-2:] == ("--url", "http://127.0.0.1:36111")
    assert named["erp-connector:legacy-erp"].argv[-4:] == ("--target", "legacy-erp", "--url", "http://127.0.0.1:36110")


def test_a_command_this_build_lacks_is_skipped_with_the_reason(routing: Path) -> None:
    children, skipped = plan_group(GroupOptions(routing), {"topology", "sink"})
    assert [c.name for c in children] == ["topology", "sink"]
    assert skipped["erp-connector:cloud-erp"] == "`backbone run erp-connector` does not exist in this build"
    assert set(skipped) == {"billing-connector", "erp-connector:legacy-erp", "erp-connector:cloud-erp"}


def test_without_leaves_out_a_child_by_name_or_by_command(routing: Path) -> None:
    options = GroupOptions(routing, without=frozenset({"sink", "erp-connector:legacy-erp"}))
    children, skipped = plan_group(options, EVERY_COMMAND)
    assert "sink" not in _by_name(children) and "erp-connector:legacy-erp" not in _by_name(children)
    assert skipped == {"sink": "excluded by --without", "erp-connector:legacy-erp": "excluded by --without"}


def test_with_a_metrics_port_each_child_gets_the_next_one(routing: Path) -> None:
    children, _ = plan_group(GroupOptions(routing, metrics_port=36150), {"topology", "sink"})
    assert [c.env["BACKBONE_METRICS_PORT"] for c in children] == ["36151", "36152"]


def test_a_routing_file_without_a_default_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text('[[rule]]\nerp_target = "cloud-erp"\n')
    with pytest.raises(ConfigurationError, match="no default"):
        plan_group(GroupOptions(path), EVERY_COMMAND)


def test_a_children_file_is_read_as_data(tmp_path: Path) -> None:
    path = tmp_path / "children.toml"
    path.write_text('[[child]]\nname = "echo"\nargv = ["echo", "hi"]\nenv = {A = "1"}\ntier = 0\n')
    assert children_from_file(path) == [ChildSpec("echo", ("echo", "hi"), {"A": "1"}, 0)]


def test_a_children_file_without_argv_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "children.toml"
    path.write_text('[[child]]\nname = "echo"\n')
    with pytest.raises(ConfigurationError, match="argv"):
        children_from_file(path)
