"""`backbone emit <event-type> <file|->`: publish canonical JSON lines to the event type's topic.

Every line is validated before anything is sent. By default one invalid line means nothing is
published (exit 2, each problem printed as `line N: field: reason`); `--skip-invalid` publishes the
valid lines and writes the rejected ones, with their reasons, to a rejects file. Inputs up to
`KEEP_IN_MEMORY` lines are parsed once; larger ones are validated in a first pass and parsed again
while publishing, so memory stays bounded (standard input is spooled to a temporary file for that).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click
import orjson

from backbone.domain.models import INPUT_EVENTS, Event
from backbone.errors import InvalidInputError
from backbone.settings import load_settings
from producers.jsonl import ParsedEvent, Rejection, iter_jsonl

KEEP_IN_MEMORY = 200_000
SHOWN_PROBLEMS = 50
PROGRESS_EVERY = 10_000


@click.command()
@click.argument("event_type", metavar="EVENT_TYPE", type=click.Choice(sorted(INPUT_EVENTS)))
@click.argument("source", metavar="FILE|-")
@click.option("--skip-invalid", is_flag=True, help="Publish the valid lines; write rejected lines to --rejects.")
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where --skip-invalid writes rejected lines with reasons [default: FILE.rejects.jsonl, "
    "or EVENT_TYPE.rejects.jsonl for standard input].",
)
@click.option("--topic", help="Publish to this topic instead of the catalog topic of EVENT_TYPE.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on standard error.")
def emit(
    event_type: str,
    source: str,
    skip_invalid: bool,
    rejects_path: Path | None,
    topic: str | None,
    quiet: bool,
) -> None:
    """Publish canonical JSON lines (one EVENT_TYPE event per line) from FILE, or standard input.

    Events without an event_id get one derived from their content, so emitting the same file
    twice publishes duplicates that every consumer ignores.
    """
    started = time.monotonic()
    with _replayable(source) as handle:
        valid, rejections, kept = _validate(handle, event_type, quiet)
        if rejections:
            _report_rejections(rejections, valid, skip_invalid)
            if skip_invalid:
                _write_rejects(rejections, rejects_path or _default_rejects(source, event_type))
        events = kept if kept is not None else _events(handle, event_type)
        published = _publish(event_type, topic, events, valid, quiet)
    seconds = time.monotonic() - started
    rate = published / seconds if seconds > 0 else 0.0
    click.echo(f"published {published}, rejected {len(rejections)}, {seconds:.2f} s, {rate:,.0f} records/s")


def _validate(handle: IO[str], event_type: str, quiet: bool) -> tuple[int, list[Rejection], list[Event] | None]:
    """(valid count, rejections, the valid events when few enough to keep) after one pass."""
    kept: list[Event] | None = []
    rejections: list[Rejection] = []
    valid = 0
    for item in iter_jsonl(handle, event_type):
        if isinstance(item, Rejection):
            rejections.append(item)
            continue
        valid += 1
        if kept is not None:
            kept.append(item.event)
            if len(kept) > KEEP_IN_MEMORY:
                kept = None  # too many to hold: parse again while publishing
        if not quiet and valid % (PROGRESS_EVERY * 10) == 0:
            click.echo(f"validated {valid} lines", err=True)
    return valid, rejections, kept


def _events(handle: IO[str], event_type: str) -> Iterator[Event]:
    handle.seek(0)
    for item in iter_jsonl(handle, event_type):
        if isinstance(item, ParsedEvent):
            yield item.event


def _report_rejections(rejections: list[Rejection], valid: int, skip_invalid: bool) -> None:
    messages = [message for rejection in rejections for message in rejection.messages()]
    for message in messages[:SHOWN_PROBLEMS]:
        click.echo(message, err=True)
    if len(messages) > SHOWN_PROBLEMS:
        click.echo(f"... and {len(messages) - SHOWN_PROBLEMS} more problems", err=True)
    if not skip_invalid:
        raise InvalidInputError(
            f"{len(rejections)} of {len(rejections) + valid} lines are invalid; nothing was published",
            hint="fix them, or use --skip-invalid to publish the valid lines and write the rejected ones to a file",
        )


def _write_rejects(rejections: list[Rejection], path: Path) -> None:
    with path.open("wb") as out:
        for rejection in rejections:
            out.write(orjson.dumps(rejection.to_json()) + b"\n")
    click.echo(f"wrote {len(rejections)} rejected lines with reasons to {path}", err=True)


def _default_rejects(source: str, event_type: str) -> Path:
    return Path(f"{event_type}.rejects.jsonl") if source == "-" else Path(f"{source}.rejects.jsonl")


def _publish(
    event_type: str, topic_name: str | None, events: Iterator[Event] | list[Event], total: int, quiet: bool
) -> int:
    # Imported here so that validation errors never wait for confluent-kafka to load.
    from backbone.kafka.topics import topic_for
    from producers.emitter import Emitter

    topic = topic_for(event_type)
    if topic_name:
        topic = dataclasses.replace(topic, name=topic_name)
    show = (
        (lambda sent, delivered: click.echo(f"sent {sent}/{total}, delivered {delivered}", err=True))
        if not quiet
        else None
    )
    with Emitter(load_settings(), topics={event_type: topic}) as emitter:
        if total == 0:
            return 0
        emitter.ensure_topic(topic)
        return emitter.publish(events, progress=show).published


class _replayable:
    """The input as a seekable text file: the file itself, or standard input spooled to a temp file."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._handle: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        if self.source != "-":
            try:
                self._handle = open(self.source, encoding="utf-8-sig")
            except OSError as error:
                raise InvalidInputError(f"cannot read {self.source}: {error.strerror}") from error
        else:
            self._handle = tempfile.TemporaryFile("w+", encoding="utf-8")
            shutil.copyfileobj(sys.stdin, self._handle)
            self._handle.seek(0)
        return self._handle

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.close()
