"""`backbone import`: publish time-tracker and ERP exports as canonical events, the whole file or nothing.

Each subcommand first reads its file through (`producers.importing`): a file that cannot be imported as
a whole (empty, undecodable, another tracker's export, undecidable or contradictory dates) is refused,
and every record is validated before anything is published. By default one rejected record means
nothing is published (exit 2, each problem printed as `line N: field: reason`), as with `backbone emit`;
`--skip-invalid` publishes the valid records and writes the rejected ones with their reasons to a
rejects file. A plain import encodes every accepted event into a spool (temporary files) while it
validates, by the compiled line writers without a model per row (`producers.spool`), and publishes the
spool once the file is valid, with the emitter that checked the topics before the file was read; memory
stays bounded whatever the file's size. A tracker's CSV export of 1 MiB or more is validated in two
processes (`producers.halves`), with the records, rejections and line numbers of one pass. `--dry-run`
and `--period` read the file again for their models (unless it is small enough for the validation pass
to keep them). `--dry-run` prints the canonical JSON
lines instead of publishing.

With `--period FROM..TO` (tracker imports) the file is the tracker's truth for that period, for its
source and `--workspace`: what earlier imports of the period published and the file no longer has is
withdrawn, changed entries get a higher revision, unchanged ones are not published again, and the
events and the import ledger are written in one Kafka transaction (`producers.periods`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, closing
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from backbone.domain.models import Event
from backbone.errors import BackboneError
from producers.halves import SecondHalf, worth_splitting
from producers.importing import (
    KEEP_IN_MEMORY,
    RefusedExportError,
    RejectsFile,
    Validation,
    accepted_events,
    default_rejects_path,
    inspect_export,
    refuse_invalid,
    validate,
)
from producers.parsing import Outcome, ReadOptions, exported_at_of, parse_instant
from producers.spool import Spool

if TYPE_CHECKING:
    from backbone.settings import Settings
    from producers.emitter import Emitter
    from producers.identity import EntryMapper
    from producers.periods import PeriodImport

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
# What each import can publish: a tracker's time entries and approval decisions; one ERP master-data kind.
TRACKER_EVENT_TYPES = ("time-entry", "approval")
ERP_EVENT_TYPES = {"clients": "client", "projects": "project", "workers": "worker", "contracts": "contract"}


def _read_options(path: Path, exported_at: str | None, date_order: str | None, timezone: str) -> ReadOptions:
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
            default=None,
            help="Order of slashed dates like 10/03/2024 (the export's user setting). Default: found in the "
            "file's dates (a day or month above 12 decides); a file whose dates all read both ways needs it.",
        ),
        click.option(
            "--encoding",
            metavar="NAME",
            help="The file's text encoding (e.g. cp1252, latin-1). Default: a byte-order mark, else UTF-8, "
            "else detected.",
        ),
        click.option("--timezone", default="UTC", show_default=True, help="Zone of API instants' work dates."),
        click.option("--dry-run", is_flag=True, help="Print canonical JSON lines instead of publishing."),
        click.option(
            "--skip-invalid",
            is_flag=True,
            help="Publish the valid records; write the rejected ones with their reasons to --rejects.",
        ),
        click.option(
            "--rejects",
            "rejects_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Where --skip-invalid writes rejected records [default: FILE.rejects.jsonl].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _tracker_command(name: str, reader_path: str) -> click.Command:
    @click.command(
        name=name,
        help=f"Import a {name.title()} export (detailed CSV, .xlsx or API JSON) as time entries and approvals; "
        "the whole file is validated before anything is published.",
    )
    @click.argument("file", type=FILE)
    @_common_options
    @click.option(
        "--identity",
        "identity_file",
        type=FILE,
        help="Identity table (CSV or JSON): kind,attribute,value,canonical_id[,source][,client] "
        "(client: the row maps only that client's project).",
    )
    @click.option("--project-code-is-id", is_flag=True, help="The tracker's project code is the ERP project id.")
    @click.option("--worker-email-is-id", is_flag=True, help="The tracker's user email is the worker id.")
    @click.option(
        "--period",
        metavar="FROM..TO",
        help="The file is the tracker's truth for these work dates (e.g. 2024-03-01..2024-03-31): entries an "
        "earlier import of the period published and the file lacks are withdrawn; rows outside it are rejected.",
    )
    @click.option(
        "--workspace",
        default="default",
        show_default=True,
        help="The tracker workspace (or account) the export comes from; --period reconciles per source and workspace.",
    )
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
        date_order: str | None,
        encoding: str | None,
        timezone: str,
        dry_run: bool,
        skip_invalid: bool,
        rejects_path: Path | None,
        identity_file: Path | None,
        project_code_is_id: bool,
        worker_email_is_id: bool,
        period: str | None,
        workspace: str,
        unmapped: str,
    ) -> None:
        from producers.identity import EntryMapper, IdentityMap, IdentityRules
        from producers.periods import Period, PeriodImport, Scope

        rules = IdentityRules(project_code_is_id=project_code_is_id, worker_email_is_id=worker_email_is_id)
        try:
            identity = IdentityMap.from_file(identity_file, rules) if identity_file else IdentityMap(rules=rules)
        except (OSError, ValueError) as error:
            raise BackboneError(f"identity table {identity_file}: {error}") from error
        mapper = EntryMapper(identity, unmapped)  # type: ignore[arg-type]
        reader = _load(reader_path)
        options = _read_options(file, exported_at, date_order, timezone)
        run_import(
            file,
            name,
            options,
            lambda settled: reader(file, settled, mapper),
            encoding=encoding,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            rejects_path=rejects_path,
            period=PeriodImport(Scope(name, workspace), Period.parse(period)) if period else None,
            mapper=mapper,
            in_halves=True,
        )

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
    date_order: str | None,
    encoding: str | None,
    timezone: str,
    dry_run: bool,
    skip_invalid: bool,
    rejects_path: Path | None,
    source: str,
    defaults: tuple[str, ...],
) -> None:
    """Import ERP master data (NetSuite/D365-style CSV or JSON): clients, projects, workers, contracts."""
    from producers.erp import read_erp

    pairs = dict(_pair(item) for item in defaults)
    options = _read_options(file, exported_at, date_order, timezone)
    run_import(
        file,
        "erp",
        options,
        lambda settled: read_erp(file, kind, settled, source=source, defaults=pairs),  # type: ignore[arg-type]
        encoding=encoding,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        rejects_path=rejects_path,
        publishes=(ERP_EVENT_TYPES[kind],),
    )


def _pair(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise BackboneError(f"--set {item!r} is not FIELD=VALUE")
    return name.strip(), value.strip()


def run_import(
    file: Path,
    importer: str,
    options: ReadOptions,
    read: Callable[[ReadOptions], Iterator[Outcome]],
    *,
    encoding: str | None = None,
    dry_run: bool = False,
    skip_invalid: bool = False,
    rejects_path: Path | None = None,
    period: PeriodImport | None = None,
    settings: Settings | None = None,
    publishes: Sequence[str] = TRACKER_EVENT_TYPES,
    mapper: EntryMapper | None = None,
    in_halves: bool = False,
) -> None:
    """Refuse a file that is wrong, or publish (print) its events: validated whole before the first one.

    `publishes` names the event types the file can hold; their topics are checked before the file is read,
    so a missing topic or an unreachable broker is said at once, not after minutes of validation. A plain
    import (no period, not a dry run) encodes the events into a spool while validating (`mapper`, the one
    `read` maps with, then writes them without a model per row) and publishes the spool with the emitter
    that checked the topics; the file is read twice (inspected, validated), not three times. With
    `in_halves` (`read` honours `ReadOptions.part`), a large CSV export is validated in two processes
    (`producers.halves`) with the outcome of one pass.
    """
    if period is not None:
        read = _within(read, period)
    spooling = period is None and not dry_run
    try:
        with ExitStack() as stack:
            halves = spooling and in_halves and worth_splitting(file)
            # A file that may be validated in two processes connects once the child is forked (below): the
            # child must not inherit a producer's threads (`backbone emit` connects after its fork too).
            keep = stack if spooling else None
            emitter = None if dry_run or halves else _preflight(publishes, period, settings, keep)
            inspection = inspect_export(file, options, importer, encoding, halves=halves)
            _echo(inspection.notes)
            if inspection.rows == 0 and period is None:
                click.echo(f"warning: {file} has a header but no records; nothing to import", err=True)
                return
            if inspection.rows == 0 and period is not None:
                click.echo(
                    f"warning: {file} has a header but no records: the tracker has nothing dated in {period.period}, "
                    "so what earlier imports published for the period is withdrawn",
                    err=True,
                )
            spool = stack.enter_context(Spool()) if spooling else None
            if spool is not None and mapper is not None:
                mapper.encode_with(spool.encoder)
            rejects = rejects_path or default_rejects_path(file)
            read_options, second = inspection.options, None
            if spool is not None and inspection.halves is not None:
                first_part, second_part = inspection.halves
                second = stack.enter_context(
                    closing(
                        _second_half(
                            read, dataclasses.replace(read_options, part=second_part), skip_invalid, spool, publishes
                        )
                    )
                )
                read_options = dataclasses.replace(read_options, part=first_part)
            if emitter is None and not dry_run:
                emitter = _preflight(publishes, period, settings, keep)
            checked = _validate(read, read_options, skip_invalid, rejects, spool, second)
            inspection.ensure_unchanged(file)
            if spool is not None:
                assert emitter is not None
                _publish_spool(emitter, [spool] if second is None else [spool, second.spool])
            else:
                events = checked.kept if checked.kept is not None else accepted_events(read(inspection.options))
                if period is not None:
                    _publish_period(events, period, inspection.options.exported_at, dry_run=dry_run, settings=settings)
                else:
                    _print_events(events)
    except RefusedExportError as error:
        _echo(error.problems)
        raise
    done = "printed" if dry_run else "published"
    if period is not None:
        done = "checked (what was published is counted above)" if not dry_run else done
    click.echo(f"{checked.records} records read, {checked.events} events {done}, {checked.rejected} rejected", err=True)


def _preflight(
    event_types: Sequence[str], period: PeriodImport | None, settings: Settings | None, keep: ExitStack | None
) -> Emitter:
    """Kafka reachable and the topics this import publishes to there, before a long validation pass.

    With `keep`, the (bulk) emitter stays open on it, to publish the spool with once the file is valid."""
    from backbone.kafka.topics import BY_EVENT_TYPE
    from backbone.settings import load_settings
    from producers.emitter import Emitter

    topics = {**BY_EVENT_TYPE, **((period.topics or {}) if period is not None else {})}
    required = [topics[event_type] for event_type in event_types]
    if period is not None:
        required.append(period.ledger_topic)
    emitter = Emitter(settings or load_settings(), bulk=keep is not None)
    with ExitStack() as closing:
        closing.enter_context(emitter)
        emitter.ensure_topics(required)
        if keep is not None:
            keep.enter_context(closing.pop_all())
    return emitter


def _within(read: Callable[[ReadOptions], Iterator[Outcome]], period: PeriodImport) -> Callable[..., Iterator[Outcome]]:
    from producers.periods import within

    check = within(period.period)
    return lambda options: check(read(options))


def _publish_period(
    events: Iterable[Event], period: PeriodImport, exported_at: datetime, *, dry_run: bool, settings: Settings | None
) -> None:
    """Reconcile against the scope's import ledger; print (dry run) or publish in one transaction."""
    from backbone.settings import load_settings
    from producers.periods import PeriodPublisher, Reconciliation, read_ledger

    settings = settings or load_settings()
    if dry_run:
        ledger = read_ledger(
            settings.kafka.client_config(),
            period.ledger_topic.name,
            period.ledger_topic.partitions,
            period.scope,
            timeout=30.0,
        )
        _print_events(Reconciliation(period.period, ledger, exported_at).publishable(events))
        return
    with PeriodPublisher(
        settings, period.scope, period.period, topics=period.topics, ledger_topic=period.ledger_topic
    ) as publisher:
        report = publisher.publish(events, exported_at)
    click.echo(
        f"period {period.period} of {period.scope}: published {report.events} events, "
        f"{report.withdrawn} entries withdrawn, {report.unchanged} unchanged ({report.seconds:.1f}s, one transaction)",
        err=True,
    )


def _second_half(
    read: Callable[[ReadOptions], Iterator[Outcome]],
    options: ReadOptions,
    skip_invalid: bool,
    spool: Spool,
    publishes: Sequence[str],
) -> SecondHalf:
    """A child process validating `options.part` of the file, with `spool`'s encoder (the mapper's)."""

    def validate_half(its_spool: Spool, rejects_path: Path) -> tuple[Validation, int]:
        with RejectsFile(rejects_path) as rejects:
            checked = validate(read(options), rejects.write if skip_invalid else None, spool=its_spool)
        return checked, rejects.written

    return SecondHalf(validate_half, spool.encoder, publishes)


def _validate(
    read: Callable[[ReadOptions], Iterator[Outcome]],
    options: ReadOptions,
    skip_invalid: bool,
    rejects_path: Path,
    spool: Spool | None = None,
    second: SecondHalf | None = None,
) -> Validation:
    """Validate the file (its first half, when a `second` process validates the rest); refuse it, or say
    what was rejected."""
    with RejectsFile(rejects_path) as rejects:
        on_rejection = rejects.write if skip_invalid else None
        checked = validate(read(options), on_rejection, keep=KEEP_IN_MEMORY, spool=spool)
        if second is not None:
            checked = second.joined(checked, rejects)
    if not skip_invalid:
        refuse_invalid(checked)
    _echo(checked.messages())
    if rejects.written:
        click.echo(f"wrote {rejects.written} rejected records with their reasons to {rejects.path}", err=True)
    return checked


def _echo(lines: Iterable[str]) -> None:
    for line in lines:
        click.echo(line, err=True)


def _print_events(events: Iterable[Event]) -> None:
    from producers.emitter import with_envelope_defaults

    for event in events:
        line = with_envelope_defaults(event).model_dump_json(exclude_none=True)
        sys.stdout.write(f'{{"event_type":"{event.event_type}",{line[1:]}\n')


def _publish_spool(emitter: Emitter, spools: Sequence[Spool]) -> None:
    """Produce the spooled events, event type by event type, each in the file's order (the first half's
    spool first, when two processes validated the file)."""
    from backbone.kafka.topics import BY_EVENT_TYPE

    started, published = time.monotonic(), 0
    event_types = list(dict.fromkeys(event_type for spool in spools for event_type in spool.event_types))
    for event_type in event_types:
        shown = published

        def progress(sent: int, delivered: int, before: int = shown) -> None:
            click.echo(f"{before + sent} sent", err=True)

        records = chain.from_iterable(spool.records(event_type) for spool in spools if event_type in spool.counts)
        report = emitter.publish_encoded(BY_EVENT_TYPE[event_type], records, progress=progress)
        published += report.published
    rate = published / max(time.monotonic() - started, 1e-9)
    click.echo(f"published {published} events ({rate:,.0f}/s)", err=True)


@click.group(name="import")
def import_() -> None:
    """Import time-tracker exports (harvest, toggl, clockify) and ERP master data (erp)."""


import_.add_command(_tracker_command("harvest", "producers.harvest:read_harvest"))
import_.add_command(_tracker_command("toggl", "producers.toggl:read_toggl"))
import_.add_command(_tracker_command("clockify", "producers.clockify:read_clockify"))
import_.add_command(erp)
