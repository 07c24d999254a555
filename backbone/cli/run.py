"""`backbone run <component>`: long-running processes, each wired from settings and stopped by SIGTERM.

Each component is a subcommand so it can take options of its own (`backbone run topology --workers 3`);
the component's module is imported only when it runs, so `backbone run --help` stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from backbone.observability import configure_logging
from backbone.settings import Settings, load_settings

SIMPLE_COMPONENTS: dict[str, tuple[str, str]] = {
    # component: ("module:function" taking the Settings, help text)
    "registry": ("backbone.registry.service:run", "The schema registry (Confluent REST protocol) on the local broker."),
    "gateway": ("producers.gateway:run_gateway", "The HTTP gateway: canonical events and signed webhooks."),
    "poller": ("producers.poller:run_poller", "Poll the configured time trackers' APIs on an interval."),
}


CONFLUENT_TRANSPORT_REFUSED = (
    "--transport confluent is not usable: faust-streaming 0.15.3's confluent driver does not seek to committed "
    "offsets, has no faust partition assignor and creates no topics, so a worker on it never consumes a record. "
    "Use --transport kafka (the default)."
)


@click.group()
def run() -> None:
    """Run one backbone process in the foreground until SIGTERM or Ctrl-C."""


def _settings_for(component: str) -> Settings:
    settings = load_settings()
    configure_logging(component, level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    return settings


def _simple(component: str, target: str, help_text: str) -> click.Command:
    @click.command(name=component, help=help_text)
    def command() -> None:
        module_name, function = target.split(":")
        getattr(importlib.import_module(module_name), function)(_settings_for(component))

    return command


for _name, (_target, _help) in SIMPLE_COMPONENTS.items():
    run.add_command(_simple(_name, _target, _help))


@run.command()
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Worker processes in one consumer group (each gets a share of the partitions).",
)
@click.option(
    "--app-id",
    default="backbone-topology",
    show_default=True,
    help="faust app id: the consumer group and the prefix of internal and changelog topics.",
)
@click.option(
    "--routing",
    "routing_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="ERP routing rules (TOML); re-read when it changes. Default: topology/routing.toml.",
)
@click.option(
    "--transport",
    type=click.Choice(["kafka", "confluent"]),
    default="kafka",
    show_default=True,
    help="faust's Kafka client: aiokafka (kafka). confluent is refused: faust's confluent driver is incomplete.",
)
def topology(workers: int, app_id: str, routing_path: Path | None, transport: str) -> None:
    """The billing topology: approved time into invoice candidates, posting requests and exceptions.

    Reads ref.* and psa.* topics and the ERP/billing acknowledgments; writes
    billing.invoice-candidates.v1, erp.posting-requests.v1 and ops.exceptions.v1. Prometheus metrics
    are served on BACKBONE_METRICS_PORT (+1 per extra worker) when it is set.
    """
    if transport == "confluent":
        raise click.UsageError(CONFLUENT_TRANSPORT_REFUSED)
    from topology.app import run_topology

    options: dict[str, Any] = {"app_id": app_id, "transport": transport}
    if routing_path is not None:
        options["routing_path"] = routing_path
    run_topology(_settings_for("topology"), workers, **options)
