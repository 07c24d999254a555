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
    help="The consumer group, the transactional ids' prefix and the prefix of internal and changelog topics.",
)
@click.option(
    "--routing",
    "routing_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="ERP routing rules (TOML); re-read when it changes. Default: topology/routing.toml.",
)
@click.option(
    "--slot",
    type=click.IntRange(0, 63),
    default=None,
    help="First worker slot on this host (default: the first free one). A slot is a stable transactional id.",
)
def topology(workers: int, app_id: str, routing_path: Path | None, slot: int | None) -> None:
    """The billing topology: approved time into invoice candidates, posting requests and exceptions.

    Reads ref.* and psa.* topics and the ERP/billing acknowledgments; writes
    billing.invoice-candidates.v1, erp.posting-requests.v1 and ops.exceptions.v1. Prometheus metrics
    are served on BACKBONE_METRICS_PORT (+1 per extra worker) when it is set.
    """
    from topology.app import run_topology

    options: dict[str, Any] = {"app_id": app_id}
    if slot is not None:
        options["slot" if workers == 1 else "slot_base"] = slot
    if routing_path is not None:
        options["routing_path"] = routing_path
    run_topology(_settings_for("topology"), workers, **options)


# --- simulators of the delivery targets (consumers/simulators) ---------------------------------


def _fault_options(command: Any) -> Any:
    """The fault flags both simulators take; POST /admin/faults changes them at run time."""
    for option in reversed(
        [
            click.option("--error-rate", type=click.FloatRange(0, 1), help="Share of API requests answered 500."),
            click.option("--latency-ms", type=click.IntRange(0), help="Delay before each API request is handled."),
            click.option("--burst", type=click.IntRange(0), help="The first N API requests fail (503)."),
            click.option("--outage-s", type=click.FloatRange(0), help="Every API request gets 503 for S seconds."),
            click.option("--throttle", type=click.IntRange(0), help="The next N API requests get 429."),
            click.option("--throttle-rate", type=click.FloatRange(0, 1), help="Share of API requests answered 429."),
            click.option("--retry-after-s", type=click.IntRange(0), help="Retry-After of the 429 answers."),
            click.option("--slow-first-byte-ms", type=click.IntRange(0), help="Delay of each answer after handling."),
            click.option("--seed", type=int, help="Seed of the random faults, so a run repeats exactly."),
            click.option(
                "--poison", help="API requests whose Idempotency-Key or correlation id contains this fail (500)."
            ),
        ]
    ):
        command = option(command)
    return command


@run.command(name="erp-sim")
@click.option("--name", required=True, help="Instance name, e.g. legacy-erp; its documents live in erp_sim_<name>.")
@click.option("--port", type=int, default=None, help="Port to listen on (BACKBONE_ERP_SIM_PORT, default 8090).")
@click.option("--closed-before", default=None, help="Every period before this date (YYYY-MM-DD) is closed.")
@click.option("--closed-period", "closed_periods", multiple=True, help="A closed month, YYYY-MM (repeatable).")
@click.option("--project", "projects", multiple=True, help="A known project; when given, others are unknown.")
@click.option("--reject-project-pattern", default=None, help="Regex: matching project ids are unknown.")
@click.option("--cost-centre", "cost_centres", multiple=True, help="A known cost centre; others are then refused.")
@click.option(
    "--on-conflict",
    type=click.Choice(["reject", "update"]),
    default=None,
    help="Same externalId with other content: 409 (reject, the default) or update the document.",
)
@_fault_options
def erp_sim(**flags: Any) -> None:
    """An ERP simulator: journal lines like NetSuite / D365 project actuals, upserted by externalId.

    POST /v1/journal-lines, GET /v1/journal-lines[/{externalId}], /admin/faults, /metrics, /healthz.
    Documents are kept in PostgreSQL (BACKBONE_POSTGRES_*), schema erp_sim_<name>. See README.md.
    """
    from consumers.simulators.server import run_erp_sim
    from consumers.simulators.settings import ErpSimSettings, settings_from_flags

    run_erp_sim(_settings_for("erp-sim"), settings_from_flags(ErpSimSettings, flags))


@run.command(name="billing-sim")
@click.option("--port", type=int, default=None, help="Port to listen on (BACKBONE_BILLING_SIM_PORT, default 8091).")
@click.option("--schema", "db_schema", default=None, help="PostgreSQL schema of its documents (default billing_sim).")
@_fault_options
def billing_sim(**flags: Any) -> None:
    """A billing engine simulator: Stripe-shaped invoice items and draft invoices, with Idempotency-Key.

    POST /v1/invoiceitems, GET /v1/invoiceitems[/{id}], GET /v1/invoices?customer=&period=,
    /admin/faults, /metrics, /healthz. Documents are kept in PostgreSQL (BACKBONE_POSTGRES_*). See README.md.
    """
    from consumers.simulators.server import run_billing_sim
    from consumers.simulators.settings import BillingSimSettings, settings_from_flags

    run_billing_sim(_settings_for("billing-sim"), settings_from_flags(BillingSimSettings, flags))


# --- the PostgreSQL read model (consumers/postgres) ---------------------------------------------------


@run.command()
@click.option("--schema", "db_schema", default=None, help="PostgreSQL schema of the read model (default backbone).")
@click.option("--group-id", default=None, help="Consumer group (default backbone-sink); offsets live in sink_offsets.")
@click.option("--topic-prefix", default=None, help="Prefix of every catalog topic name (isolated test topics).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Records per database transaction.")
def sink(**flags: Any) -> None:
    """The PostgreSQL read model: candidates, postings, acks, billing responses, exceptions, dead letters.

    Rows and consumed offsets commit in one database transaction, so a crash or a replay never writes
    a record twice. Migrates its schema at start. Settings: BACKBONE_SINK_* and BACKBONE_POSTGRES_*; see README.md.
    """
    from consumers.postgres.sink import SinkSettings, run_sink

    overrides = {name: value for name, value in flags.items() if value is not None}
    run_sink(_settings_for("sink"), SinkSettings(**overrides))


# --- delivery connectors (consumers/delivery) ------------------------------------------------------


def _connector_options(command: Any) -> Any:
    """Options both delivery connectors take; each overrides its BACKBONE_*_CONNECTOR_* setting."""
    for option in reversed(
        [
            click.option("--max-in-flight", type=click.IntRange(1, 1024), help="HTTP requests in flight at most."),
            click.option("--app-id", default=None, help="Consumer group and transactional id prefix."),
            click.option("--topic-prefix", default=None, help="Prefix of every catalog topic name (isolated tests)."),
            click.option("--slot", type=click.IntRange(0, 63), default=None, help="Worker slot on this host."),
        ]
    ):
        command = option(command)
    return command


def _overrides(flags: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in flags.items() if value is not None and name != "slot"}


@run.command(name="billing-connector")
@click.option("--url", default=None, help="Base URL of the billing engine (BACKBONE_BILLING_CONNECTOR_URL).")
@_connector_options
def billing_connector(**flags: Any) -> None:
    """Deliver invoice candidates to the billing engine; publish its answers to billing.responses.v1.

    Idempotency-Key = candidate id, so a repeated call makes one invoice item; the responses and the
    consumed offsets commit in one Kafka transaction. Transient failures retry with backoff, then go
    to the retry topic and the DLQ; a circuit breaker protects the engine. See docs/delivery.md.
    """
    from consumers.delivery.app import run_billing_connector
    from consumers.delivery.settings import BillingConnectorSettings

    settings = _settings_for("billing-connector")
    run_billing_connector(settings, BillingConnectorSettings(**_overrides(flags)), flags["slot"])


@run.command(name="erp-connector")
@click.option("--target", required=True, help="The routing target to deliver (e.g. legacy-erp, cloud-erp).")
@click.option("--url", default=None, help="Base URL of that ERP (default: BACKBONE_ERP_CONNECTOR_URLS[target]).")
@click.option(
    "--ack-timeout-s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Raise POSTING_ACK_TIMEOUT for a posting not acknowledged after this long (default 300).",
)
@_connector_options
def erp_connector(target: str, url: str | None, **flags: Any) -> None:
    """Deliver one ERP target's posting requests as journal lines; publish erp.posting-acks.v1.

    externalId = posting id, so a repeated call never makes a second document; acks and consumed
    offsets commit in one Kafka transaction. A posting without an ack after --ack-timeout-s raises
    POSTING_ACK_TIMEOUT on ops.exceptions.v1, resolved when the ack comes. See docs/delivery.md.
    """
    from consumers.delivery.app import run_erp_connector
    from consumers.delivery.settings import ErpConnectorSettings

    settings = _settings_for(f"erp-connector:{target}")
    run_erp_connector(settings, ErpConnectorSettings(**_overrides(flags)), target, url, flags["slot"])


# --- the whole chain as one supervised group (backbone/cli/group.py) ----------------------------------

run.add_command(importlib.import_module("backbone.cli.group").run_all)
