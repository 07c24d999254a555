"""`backbone tail <stream|topic>`: decode a topic and print its events as canonical JSON lines.

The JSON form is the model's own (decimals as strings, instants with Z, every field present), so a
tail's output can be fed back to `backbone emit`. Records that do not decode are reported on standard
error with their topic, partition and offset, and the tail goes on.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import click

from backbone.domain.models import Event
from backbone.errors import BackboneError
from backbone.kafka.topics import resolve_stream
from backbone.observability import configure_logging
from backbone.settings import load_settings

TABLE_WIDTH = 24
ENVELOPE = ("event_id", "occurred_at", "source_system", "correlation_id")


@click.command()
@click.argument("stream", metavar="STREAM|TOPIC")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record (default: only new records).")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Exit 0 after this long with no new record.",
)
@click.option("--max", "max_records", type=click.IntRange(min=1), metavar="N", help="Exit after printing N events.")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "table"]), default="jsonl", show_default=True)
@click.option(
    "--group", help="Consume as this durable consumer group and commit progress (default: a throwaway group)."
)
@click.option("--topic", help="Read this topic instead of the catalog topic of STREAM (same event type).")
def tail(
    stream: str,
    from_beginning: bool,
    idle_timeout: float | None,
    max_records: int | None,
    output_format: str,
    group: str | None,
    topic: str | None,
) -> None:
    """Print the events of STREAM (or a catalog topic name) as canonical JSON lines.

    Streams: invoice-candidates, posting-requests, posting-acks, billing-responses, exceptions,
    client, project, worker, contract, time-entry, approval.
    """
    from consumers.tail import Decoded, Tail, TailOptions

    catalog_topic = _resolve(stream)
    if topic:
        catalog_topic = dataclasses.replace(catalog_topic, name=topic)
    options = TailOptions(from_beginning, idle_timeout, max_records, group)
    write = _jsonl_writer() if output_format == "jsonl" else _table_writer()
    settings = load_settings()
    # standard output carries the events (a tail's output can be fed back to `backbone emit`): every log
    # line of the libraries underneath goes to standard error
    configure_logging("tail", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    try:
        with Tail(settings, catalog_topic, options) as records:
            for item in records.records():
                if isinstance(item, Decoded):
                    write(item.message, item.event)
                else:
                    click.echo(f"undecodable record {item}", err=True)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (`| head`): not an error


def _resolve(stream: str) -> Any:
    try:
        return resolve_stream(stream)
    except KeyError as error:
        raise BackboneError(str(error.args[0])) from None


def _jsonl_writer() -> Callable[[Any, Event], None]:
    out = sys.stdout

    def write(_message: Any, event: Event) -> None:
        out.write(event.model_dump_json() + "\n")
        out.flush()

    return write


def _table_writer() -> Callable[[Any, Event], None]:
    """Fixed-width rows: partition, offset, key and the event's own fields (envelope left out)."""
    state: dict[str, list[Any]] = {}

    def write(message: Any, event: Event) -> None:
        row = event.model_dump(mode="json")
        if "columns" not in state:
            columns = [name for name in row if name not in ENVELOPE and not isinstance(row[name], list)]
            headers = ["partition", "offset", "key", *columns]
            state["columns"] = columns
            state["widths"] = [min(TABLE_WIDTH, max(len(h), 10)) for h in headers]
            click.echo(_cells(headers, state["widths"]))
        values = [message.partition(), message.offset(), event.key, *(row[name] for name in state["columns"])]
        click.echo(_cells(values, state["widths"]))

    return write


def _cells(values: list[Any], widths: list[int]) -> str:
    texts = [_text(value) for value in values]
    cells = [t[: w - 1] + "…" if len(t) > w else t.ljust(w) for t, w in zip(texts, widths, strict=True)]
    return "  ".join(cells).rstrip()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
