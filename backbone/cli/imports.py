"""`backbone import`: publish time-tracker and ERP exports as canonical events.

Each subcommand streams its file through the connector's parser, publishes the accepted events with
the `Emitter` (returning only once the broker has them), prints every rejected record as
`line N: reason` on stderr, and ends with a summary. Rejections make the exit code 2 after the rest
was published, so scripts notice. `--dry-run` prints the canonical JSON lines instead of publishing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from backbone.domain.models import Event
from backbone.errors import BackboneError, InvalidInputError
from producers.parsing import ImportReport, Outcome, ReadOptions, exported_at_of, parse_instant

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _read_options(path: Path, exported_at: str | None, date_order: str, timezone: str) -> ReadOptions:
    try:
        taken = parse_instant(exported_at) if exported_at else exported_at_of(path)
    except ValueError as error:
        raise BackboneError(f"--exported-at: {error}", hint="give an instant like 2024-11-01T08:00:00Z") from None
    return ReadOptions(exported_at=taken, date_order=date_order, timezone=timezone)  # type: ignore[arg-type]


def _common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--exported-at",
            help="When the export was taken (RFC 3339); revisions of rows without "
            "an update time derive from it. Default: the file's modification time.",
        ),
        click.option(
            "--date-order",
            type=click.Choice(["MDY", "DMY", "YMD"]),
            default="MDY",
            show_default=True,
            help="Order of slashed dates like 10/03/2024 (the export's user setting). ISO dates always work.",
        ),
        click.option("--timezone", default="UTC", show_default=True, help="Zone of API instants' work dates."),
        click.option("--dry-run", is_flag=True, help="Print canonical JSON lines instead of publishing."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _tracker_command(name: str, reader_path: str) -> click.Command:
    @click.command(
        name=name, help=f"Import a {name.title()} export (detailed CSV or API JSON) as time entries and approvals."
    )
    @click.argument("file", type=FILE)
    @_common_options
    @click.option(
        "--identity",
        "identity_file",
        type=FILE,
        help="Identity table (CSV or JSON): kind,attribute,value,canonical_id[,source].",
    )
    @click.option("--project-code-is-id", is_flag=True, help="The tracker's project code is the ERP project id.")
    @click.option("--worker-email-is-id", is_flag=True, help="The tracker's user email is the worker id.")
    @click.option(
        "--unmapped",
        type=click.Choice(["publish", "report"]),
        default="publish",
        show_default=True,
        help="publish: unmapped people/projects keep source ids (the topology raises UNKNOWN_*); "
        "report: reject those rows with their line numbers.",
    )
    def command(
        file: Path,
        exported_at: str | None,
        date_order: str,
        timezone: str,
        dry_run: bool,
        identity_file: Path | None,
        project_code_is_id: bool,
        worker_email_is_id: bool,
        unmapped: str,
    ) -> None:
        from producers.identity import EntryMapper, IdentityMap, IdentityRules

        rules = IdentityRules(project_code_is_id=project_code_is_id, worker_email_is_id=worker_email_is_id)
        try:
            identity = IdentityMap.from_file(identity_file, rules) if identity_file else IdentityMap(rules=rules)
        except (OSError, ValueError) as error:
            raise BackboneError(f"identity table {identity_file}: {error}") from error
        mapper = EntryMapper(identity, unmapped)  # type: ignore[arg-type]
        reader = _load(reader_path)
        options = _read_options(file, exported_at, date_order, timezone)
        run_import(reader(file, options, mapper), dry_run=dry_run)

    return command


def _load(target: str) -> Callable[..., Iterator[Outcome]]:
    import importlib

    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]


@click.command(name="erp")
@click.option("--kind", type=click.Choice(["clients", "projects", "workers", "contracts"]), required=True)
@click.argument("file", type=FILE)
@_common_options
@click.option("--source", default="erp", show_default=True, help="source_system of the events (netsuite, d365...).")
@click.option(
    "--set",
    "defaults",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Value for a required field the export lacks, e.g. --set region=EMEA (repeatable).",
)
def erp(
    kind: str,
    file: Path,
    exported_at: str | None,
    date_order: str,
    timezone: str,
    dry_run: bool,
    source: str,
    defaults: tuple[str, ...],
) -> None:
    """Import ERP master data (NetSuite/D365-style CSV or JSON): clients, projects, workers, contracts."""
    from producers.erp import read_erp

    pairs = dict(_pair(item) for item in defaults)
    options = _read_options(file, exported_at, date_order, timezone)
    run_import(read_erp(file, kind, options, source=source, defaults=pairs), dry_run=dry_run)  # type: ignore[arg-type]


def _pair(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise BackboneError(f"--set {item!r} is not FIELD=VALUE")
    return name.strip(), value.strip()


def run_import(outcomes: Iterable[Outcome], *, dry_run: bool) -> ImportReport:
    """Publish (or print) the accepted events, then report rejections and the summary."""
    report = ImportReport()
    events = report.events_of(outcomes)
    if dry_run:
        _print_events(events)
    else:
        _publish(events)
    for rejection in report.rejections:
        click.echo(f"rejected {rejection}", err=True)
    click.echo(report.summary(), err=True)
    if report.rejections:
        raise InvalidInputError(
            f"{len(report.rejections)} of {report.records} records were rejected (listed above); "
            f"the other {report.records - len(report.rejections)} were {'printed' if dry_run else 'published'}",
            hint="fix the rejected records (or the options, e.g. --date-order) and import the file again; "
            "re-importing is harmless because event ids derive from the payload",
        )
    return report


def _print_events(events: Iterable[Event]) -> None:
    from producers.emitter import with_envelope_defaults

    for event in events:
        line = with_envelope_defaults(event).model_dump_json(exclude_none=True)
        sys.stdout.write(f'{{"event_type":"{event.event_type}",{line[1:]}\n')


def _publish(events: Iterable[Event]) -> None:
    from backbone.settings import load_settings
    from producers.emitter import Emitter

    with Emitter(load_settings()) as emitter:
        result = emitter.publish(events, progress=lambda sent, done: click.echo(f"{sent} sent", err=True))
    click.echo(f"published {result.published} events ({result.records_per_second:,.0f}/s)", err=True)


@click.group(name="import")
def import_() -> None:
    """Import time-tracker exports (harvest, toggl, clockify) and ERP master data (erp)."""


import_.add_command(_tracker_command("harvest", "producers.harvest:read_harvest"))
import_.add_command(_tracker_command("toggl", "producers.toggl:read_toggl"))
import_.add_command(_tracker_command("clockify", "producers.clockify:read_clockify"))
import_.add_command(erp)
