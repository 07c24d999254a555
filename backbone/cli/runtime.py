"""`backbone up`, `down`, `status` and `topics`: the local runtime from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from backbone.runtime.local import LocalRuntime
from backbone.settings import load_settings

if TYPE_CHECKING:
    from backbone.runtime.supervisor import ChildStatus


@click.command()
@click.option(
    "--registry-replicas",
    type=click.IntRange(1, 9),
    default=None,
    help="Schema registry instances to run (one leads, the others follow and take over). "
    "Default: BACKBONE_SCHEMA_REGISTRY_REPLICAS, else 1.",
)
def up(registry_replicas: int | None) -> None:
    """Start Kafka, the schema registry and PostgreSQL locally (or use the configured ones).

    Resolves the Kafka broker jars with Maven on first use (cached outside the work tree),
    formats storage once, waits until every service answers, creates the catalog's topics
    and registers the schemas. Running it twice is harmless. Data lives in BACKBONE_DATA_DIR
    (default ./.backbone) and survives `backbone down`. The registry's users are created on
    the first run; `up` prints where their passwords are.
    """
    settings = load_settings()
    if registry_replicas is not None:
        registry = settings.registry.model_copy(update={"replicas": registry_replicas})
        settings = settings.model_copy(update={"registry": registry})
    runtime = LocalRuntime(settings)
    runtime.up(say=click.echo)
    _migrate_read_model(runtime.settings.postgres.conninfo())
    click.echo("backbone is up; `backbone status` shows it, `backbone down` stops it")


def _migrate_read_model(conninfo: str) -> None:
    """The sink's schema (BACKBONE_SINK_DB_SCHEMA), so its tables and views exist before it first runs."""
    from backbone.runtime.postgres import answers
    from consumers.postgres.sink import SinkSettings, apply_sink_migrations

    schema = SinkSettings().db_schema
    if not answers(conninfo):
        click.echo(f"sink      skipped     schema {schema}: PostgreSQL does not answer")
        return
    applied = apply_sink_migrations(conninfo, schema)
    click.echo(f"sink      schema {schema}, {len(applied)} migrations applied")


@click.command()
def down() -> None:
    """Stop a running `backbone run all` group, then the services `backbone up` started (data is kept)."""
    from backbone.cli.group import group_home
    from backbone.runtime.supervisor import stop_group

    settings = load_settings()
    if stop_group(group_home(settings.runtime.data_dir)):
        click.echo("group     stopped (backbone run all and its children)")
    LocalRuntime(settings).down(say=click.echo)


@click.command()
def status() -> None:
    """Show which services run and where. Exits 1 when one is not running."""
    settings = load_settings()
    statuses = LocalRuntime(settings).status()
    for service in statuses:
        click.echo(service.line())
    children = _group_status(settings.runtime.data_dir)
    down = any(s.state in ("stopped", "unavailable", "degraded") for s in statuses)
    if down or any(c.state != "running" for c in children):
        sys.exit(1)


def _group_status(data_dir: Path) -> list[ChildStatus]:
    """The children of a running `backbone run all` (pid, uptime, restarts); none when it does not run."""
    from backbone.cli.group import group_home
    from backbone.runtime.supervisor import group_status

    children = group_status(group_home(data_dir))
    if children is None:
        return []
    click.echo(f"group     running     {len(children)} children (backbone run all)")
    for child in children:
        click.echo(child.line())
    return [c for c in children if c.state != "skipped"]


@click.group()
def topics() -> None:
    """Manage the catalog's topics."""


@topics.command("apply")
def topics_apply() -> None:
    """Create the catalog's missing topics and report drift (exit 1 on drift)."""
    from backbone.kafka.admin import apply_topics

    settings = load_settings()
    report = apply_topics(LocalRuntime(settings).admin(), replication_factor=settings.kafka.replication_factor)
    click.echo(f"{len(report.created)} created, {len(report.unchanged)} unchanged, {len(report.drift)} drift")
    for name in report.created:
        click.echo(f"  created {name}")
    for problem in report.drift:
        click.echo(f"  drift: {problem}")
    if report.drift:
        sys.exit(1)


@topics.command("list")
def topics_list() -> None:
    """Print the catalog: topic, partitions, cleanup policy, key and event type."""
    from backbone.kafka.topics import ALL_TOPICS

    for topic in ALL_TOPICS:
        policy = "compact" if topic.compacted else "delete"
        click.echo(f"{topic.name:<36} {topic.partitions:>2}  {policy:<8} key={topic.key_field or '-'}")
