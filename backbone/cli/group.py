"""`backbone run all`: the topology, the delivery connectors, the sink and the simulators as one group.

Which processes make the group is decided here, as data (`ChildSpec`s for
`backbone.runtime.supervisor`): the topology, the sink, the billing connector, one ERP connector per
routing target and, with `--simulators`, the billing simulator and one ERP simulator per routing
target, each on its own port, with the connectors pointed at them. Routing targets are the default
and every rule's `erp_target` of the routing file the topology uses (`topology/routing.toml` unless
`--routing`). A child whose `backbone run` command this build lacks is skipped and reported instead
of being started and failing in a loop; `--children FILE` replaces the whole list (TOML:
`[[child]] name, argv, env, tier`). README.md ("Running everything") describes each process.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from backbone.domain.routing import parse_routing
from backbone.errors import ConfigurationError
from backbone.runtime.supervisor import ChildSpec, Supervisor, SupervisorSettings

SIMULATORS_TIER = 0
"""Started first and stopped last: the connectors talk to them."""
PROCESSES_TIER = 1


@dataclass(frozen=True)
class GroupOptions:
    routing_path: Path
    simulators: bool = False
    simulator_port: int = 8090
    app_id: str = "backbone-topology"
    without: frozenset[str] = frozenset()
    metrics_port: int | None = None


def backbone_command(*args: str) -> tuple[str, ...]:
    """argv of `backbone <args>` with this interpreter (works without the console script on PATH)."""
    return (sys.executable, "-m", "backbone.cli", *args)


def routing_targets(path: Path) -> list[str]:
    """The ERP targets postings can be routed to: the default first, then each rule's, once each."""
    try:
        rules = parse_routing(path.read_text(encoding="utf-8"), source=str(path))
    except OSError as error:
        raise ConfigurationError(f"cannot read the routing file {path}: {error}", hint="pass --routing FILE") from error
    targets = [rules.default, *(rule.erp_target for rule in rules.rules)]
    return list(dict.fromkeys(targets))


def plan_group(options: GroupOptions, available: Collection[str]) -> tuple[list[ChildSpec], dict[str, str]]:
    """The group's children, and those skipped (name -> why): excluded by `--without`, or whose
    `backbone run` command is not in `available`."""
    targets = routing_targets(options.routing_path)
    simulators: list[ChildSpec] = []
    urls: dict[str, str] = {}
    if options.simulators:
        # the simulators' own defaults and README's examples: first ERP 8090, billing 8091, next ERPs 8092…
        billing_port = options.simulator_port + 1
        simulators.append(_run("billing-sim", ("billing-sim", "--port", str(billing_port)), SIMULATORS_TIER))
        urls["billing"] = f"http://127.0.0.1:{billing_port}"
        for index, target in enumerate(targets):
            port = options.simulator_port + (index + 1 if index else 0)
            simulators.append(
                _run(f"erp-sim:{target}", ("erp-sim", "--name", target, "--port", str(port)), SIMULATORS_TIER)
            )
            urls[target] = f"http://127.0.0.1:{port}"
    processes = [
        _run("topology", ("topology", "--routing", str(options.routing_path), "--app-id", options.app_id)),
        _run("sink", ("sink",)),
        _run("billing-connector", ("billing-connector", *_url_option(urls.get("billing")))),
        *(_erp_connector(target, urls.get(target)) for target in targets),
    ]
    children, skipped = [], {}
    for spec in simulators + processes:
        command = spec.argv[4]
        if spec.name in options.without or command in options.without:
            skipped[spec.name] = "excluded by --without"
        elif command not in available:
            skipped[spec.name] = f"`backbone run {command}` does not exist in this build"
        else:
            children.append(spec)
    return _with_metrics_ports(children, options.metrics_port), skipped


def _run(
    name: str, args: tuple[str, ...], tier: int = PROCESSES_TIER, env: Mapping[str, str] | None = None
) -> ChildSpec:
    return ChildSpec(name, backbone_command("run", *args), dict(env or {}), tier)


def _erp_connector(target: str, url: str | None) -> ChildSpec:
    return _run(f"erp-connector:{target}", ("erp-connector", "--target", target, *_url_option(url)))


def _url_option(url: str | None) -> tuple[str, ...]:
    """`--url` of a connector whose system is a simulator of the group; else the connector's settings decide."""
    return ("--url", url) if url else ()


def _with_metrics_ports(children: list[ChildSpec], base: int | None) -> list[ChildSpec]:
    """Each child its own metrics port (the supervisor keeps `base`), so they do not collide."""
    if base is None:
        return children
    return [
        ChildSpec(spec.name, spec.argv, {**spec.env, "BACKBONE_METRICS_PORT": str(base + i)}, spec.tier)
        for i, spec in enumerate(children, start=1)
    ]


def children_from_file(path: Path) -> list[ChildSpec]:
    """`--children FILE`: `[[child]]` tables with `name`, `argv` (list), optional `env` and `tier`."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        return [
            ChildSpec(str(c["name"]), tuple(str(a) for a in c["argv"]), dict(c.get("env", {})), int(c.get("tier", 1)))
            for c in document.get("child", [])
        ]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(
            f"{path}: not a children file ({error})", hint='each [[child]] needs name = "..." and argv = ["..."]'
        ) from error


# --- the command ------------------------------------------------------------------------------------------


@click.command(name="all")
@click.option("--simulators", is_flag=True, help="Also run billing-sim and one erp-sim per routing target.")
@click.option(
    "--routing",
    "routing_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="ERP routing rules: the topology's, and which ERP connectors (and simulators) run.",
)
@click.option("--simulator-port", type=click.IntRange(1, 65000), default=8090, show_default=True,
              help="First ERP simulator here, billing-sim on the next port, other ERPs after.")  # fmt: skip
@click.option("--app-id", default="backbone-topology", show_default=True, help="The topology's app id.")
@click.option("--without", multiple=True, help="Leave out a child (name or command, e.g. sink); repeatable.")
@click.option("--children", "children_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Run these children instead ([[child]] name, argv, env, tier in TOML).")  # fmt: skip
@click.option("--grace-seconds", type=click.FloatRange(0), default=20.0, show_default=True,
              help="On stop, how long a child has after SIGTERM before SIGKILL.")  # fmt: skip
@click.option("--initial-backoff", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="Seconds before a child that exited is restarted; doubles per exit.")  # fmt: skip
@click.option("--max-backoff", type=click.FloatRange(0.01), default=30.0, show_default=True,
              help="Longest wait before a restart.")  # fmt: skip
def run_all(**flags: Any) -> None:
    """The whole chain as one supervised group: topology, connectors, sink (and simulators).

    A child that exits is restarted with backoff and reported (log line and
    backbone_supervisor_* metrics); Ctrl-C or SIGTERM stops every child (SIGTERM, then SIGKILL after
    --grace-seconds). `backbone status` lists the children. Exit status: 0 stopped cleanly, 1 a child
    had to be killed, 78 nothing could run. Child logs: <BACKBONE_DATA_DIR>/group/<child>.log.
    """
    from backbone.cli.run import _settings_for, run
    from backbone.observability import serve_metrics

    settings = _settings_for("supervisor")
    if flags["children_file"] is not None:
        children, skipped = children_from_file(flags["children_file"]), dict[str, str]()
    else:
        from topology.app import DEFAULT_ROUTING

        options = GroupOptions(
            routing_path=flags["routing_path"] or DEFAULT_ROUTING,
            simulators=flags["simulators"],
            simulator_port=flags["simulator_port"],
            app_id=flags["app_id"],
            without=frozenset(flags["without"]),
            metrics_port=settings.runtime.metrics_port,
        )
        children, skipped = plan_group(options, set(run.commands))
    serve_metrics(settings.runtime.metrics_port)
    supervisor = Supervisor(
        children,
        group_home(settings.runtime.data_dir),
        settings=SupervisorSettings(
            grace_seconds=flags["grace_seconds"],
            initial_backoff=flags["initial_backoff"],
            max_backoff=max(flags["max_backoff"], flags["initial_backoff"]),
        ),
        skipped=skipped,
    )
    for name, reason in skipped.items():
        click.echo(f"skipped   {name}: {reason}", err=True)
    sys.exit(supervisor.run())


def group_home(data_dir: Path) -> Path:
    """Where the group keeps its state, pid and child logs."""
    return data_dir.resolve() / "group"
