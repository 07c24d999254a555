"""`backbone emit <event-type> <file|->`: publish canonical JSON lines to the event type's topic.

All or nothing, in constant memory. The first pass reads the input line by line, validates each line
and Avro-encodes the valid events into a spool file (a temporary file of length-prefixed records);
only when the whole input is valid (or `--skip-invalid` is given) does the second pass produce the
spooled records, so nothing is parsed or encoded twice and nothing is published from an input that
is refused. A line is parsed with orjson and written by the event type's compiled line writer
(`backbone.kafka.compiled_writer`) when that can vouch for it, else validated through the model, which
names every problem; the bytes are the same either way. The second pass produces without a Python
callback per record (a bulk emitter hears of failures only). A file of 4 MiB or more is validated in two
halves at once, the second by a forked child (`backbone.cli.halves`), with the line numbers, rejections
and published records of one pass. Meanwhile the producer connects and asks whether the topic exists and
what its schema id is (`backbone.cli.connecting`), showing what went wrong only if the input is valid.
By default one invalid line means nothing
is published (exit 2, each problem printed as `line N: field: reason`); `--skip-invalid` publishes the
valid lines and writes the rejected ones, with their reasons, to `--rejects FILE` (for a file the
default is `FILE.rejects.jsonl`; for standard input and pipes there is no default: the rejects are only
counted and shown unless `--rejects` is given).

Hostile input is a clear error, never a traceback: a binary file is refused up front, a line longer
than `--max-line-bytes` or not UTF-8 is an invalid line (read in bounded pieces), and standard input,
a FIFO or a character device is spooled to a temporary file first.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from itertools import chain
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
import orjson

from backbone.cli import halves
from backbone.cli.connecting import EarlyConnection
from backbone.domain.models import INPUT_EVENTS
from backbone.errors import InvalidInputError
from producers.jsonl import MAX_LINE_BYTES, ParsedEvent, Rejection, event_class, iter_raw_lines, parse_raw_line
from producers.spool import LENGTHS, spooled

if TYPE_CHECKING:
    from backbone.domain.models import Event
    from backbone.kafka.compiled_writer import LineWriter, Written
    from backbone.kafka.serde import TopicSerde
    from backbone.kafka.topics import Topic
    from producers.emitter import Emitter

Spooled = tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]

SHOWN_PROBLEMS = 50
PROGRESS_EVERY = 100_000
SNIFF_BYTES = 8192
COPY_CHUNK = 1 << 20


@click.command()
@click.argument("event_type", metavar="EVENT_TYPE", type=click.Choice(sorted(INPUT_EVENTS)))
@click.argument("source", metavar="FILE|-")
@click.option("--skip-invalid", is_flag=True, help="Publish the valid lines; write rejected lines to --rejects.")
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where rejected lines go, with reasons [default with --skip-invalid: FILE.rejects.jsonl; "
    "none for standard input or a pipe].",
)
@click.option("--topic", help="Publish to this topic instead of the catalog topic of EVENT_TYPE.")
@click.option(
    "--max-line-bytes",
    type=click.IntRange(min=1024),
    default=MAX_LINE_BYTES,
    show_default=True,
    help="A longer line is rejected without being read into memory.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on standard error.")
def emit(
    event_type: str,
    source: str,
    skip_invalid: bool,
    rejects_path: Path | None,
    topic: str | None,
    max_line_bytes: int,
    quiet: bool,
) -> None:
    """Publish canonical JSON lines (one EVENT_TYPE event per line) from FILE, or standard input.

    Events without an event_id get one derived from their content, so emitting the same file
    twice publishes duplicates that every consumer ignores.
    """
    started = time.monotonic()
    from backbone.kafka.topics import topic_for

    target = topic_for(event_type)
    if topic:
        target = dataclasses.replace(target, name=topic)
    rejects = _Rejects(rejects_path or (_default_rejects(source) if skip_invalid else None))
    with _readable(source) as handle, tempfile.TemporaryFile() as spool, ExitStack() as stack:
        spools: list[IO[bytes]] = [spool]
        connection = _Connection(target, stack)
        try:
            valid = _validate_all(handle, event_type, target, spools, connection, rejects, max_line_bytes, quiet)
        finally:
            rejects.close()
        if rejects.count:
            _report_rejections(rejects, valid, skip_invalid)
        spool.seek(0)
        records = chain.from_iterable(spooled(part, event_type) for part in spools)
        published = _publish(connection.ready() if valid else None, target, records, valid, quiet)
    seconds = time.monotonic() - started
    rate = published / seconds if seconds > 0 else 0.0
    click.echo(f"published {published}, rejected {rejects.count}, {seconds:.2f} s, {rate:,.0f} records/s")


def _validate_all(
    handle: IO[bytes],
    event_type: str,
    topic: Topic,
    spools: list[IO[bytes]],
    connection: _Connection,
    rejects: _Rejects,
    max_line_bytes: int,
    quiet: bool,
) -> int:
    """Validate every line into `spools[0]`, or a large file in two halves at once (`halves`): the second
    half's spool is appended to `spools` and its rejections to `rejects`, after the first half's. The
    `connection` starts once the child is forked (it must not inherit a producer's threads)."""
    from backbone.kafka.serde import TopicSerde
    from producers.emitter import line_writer

    event_cls = event_class(event_type)
    serde = TopicSerde(topic, registry=None)  # type: ignore[arg-type]  # Avro bodies only: no registry needed
    lines = _Lines(event_cls, line_writer(event_cls), serde, max_line_bytes)
    where = halves.cut(handle) if halves.can_split(handle) else None
    if where is None:
        connection.start()
        return _validate(handle, lines, spools[0], rejects, quiet)
    offset, lines_before = where

    def second_half(part: IO[bytes], spool: IO[bytes], path: Path | None, before: int) -> halves.HalfOutcome:
        its_rejects = _Rejects(path)
        try:
            valid = _validate(part, lines, spool, its_rejects, True, before)
        finally:
            its_rejects.close()
        return halves.HalfOutcome(valid, its_rejects.count, its_rejects.problems, its_rejects.shown)

    second = connection.stack.enter_context(
        closing(halves.SecondHalf(handle, offset, lines_before, second_half, rejects.path is not None))
    )
    connection.start()
    valid = _validate(halves.FirstPart(handle, offset), lines, spools[0], rejects, quiet)  # type: ignore[arg-type]
    outcome = second.outcome()
    rejects.absorb(outcome, second.rejects_path)
    spools.append(second.spool)
    return valid + outcome.valid


@dataclasses.dataclass(frozen=True)
class _Lines:
    """How lines of one event type are validated and written (built once, before any fork)."""

    event_cls: type[Event]
    writer: LineWriter | None
    serde: TopicSerde
    max_line_bytes: int


def _validate(
    handle: IO[bytes], lines: _Lines, spool: IO[bytes], rejects: _Rejects, quiet: bool, before: int = 0
) -> int:
    """Validate and encode every line; spool the valid ones, hand the rest to `rejects`. Returns the count spooled.

    A line the compiled writer vouches for is written straight from its parsed JSON; any other line
    is validated through the model, which accepts it or says exactly why not (`_through_model`).
    `before` counts the input's lines before `handle`'s first (its second half's)."""
    event_cls, serde, writer = lines.event_cls, lines.serde, lines.writer
    loads, pack, write = orjson.loads, LENGTHS.pack, spool.write
    valid = 0
    for item in iter_raw_lines(handle, lines.max_line_bytes, before):
        if isinstance(item, Rejection):
            rejects.add(item)
            continue
        number, raw = item
        outcome = _written(writer, raw, loads) or _through_model(raw, number, event_cls, serde)
        if outcome is None:  # a blank line
            continue
        if isinstance(outcome, Rejection):
            rejects.add(outcome)
            continue
        key, body, source, correlation = outcome
        write(pack(len(key), len(body), len(source), len(correlation)) + key + body + source + correlation)
        valid += 1
        if not quiet and valid % PROGRESS_EVERY == 0:
            click.echo(f"validated {valid} lines", err=True)
    return valid


def _written(writer: LineWriter | None, raw: bytes, loads: Callable[[bytes], Any]) -> Written | None:
    """The line as the compiled writer writes it; None when it cannot vouch for it (or is not JSON)."""
    try:
        return writer(loads(raw)) if writer is not None else None
    except orjson.JSONDecodeError:
        return None


def _through_model(raw: bytes, number: int, event_cls: type[Event], serde: TopicSerde) -> Written | Rejection | None:
    """A line the full way: validated into the model (every problem named), then encoded; None when blank."""
    from producers.emitter import encode_for_spool

    parsed = parse_raw_line(raw, number, event_cls)
    if parsed is None or isinstance(parsed, Rejection):
        return parsed
    try:
        key, body, headers = encode_for_spool(parsed.event, serde)
    except InvalidInputError as error:
        return _unencodable(parsed, error)
    values = dict(headers)
    return key, body, _as_bytes(values.get("source_system")), _as_bytes(values.get("correlation_id"))


def _unencodable(item: ParsedEvent, error: InvalidInputError) -> Rejection:
    from producers.jsonl import WHOLE_RECORD, Problem

    return Rejection(item.line, "", (Problem(WHOLE_RECORD, str(error)),))


def _as_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else value.encode("utf-8")


class _Rejects:
    """Rejected lines: counted, the first few kept to show, every one streamed to the rejects file if any."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.count = path, 0
        self.shown: list[str] = []
        self.problems = 0
        self._out: IO[bytes] | None = None

    def add(self, rejection: Rejection) -> None:
        self.count += 1
        messages = rejection.messages()
        self.problems += len(messages)
        room = SHOWN_PROBLEMS - len(self.shown)
        if room > 0:
            self.shown += messages[:room]
        if self.path is not None:
            if self._out is None:
                self._out = self._open(self.path)
            self._out.write(orjson.dumps(rejection.to_json()) + b"\n")

    @staticmethod
    def _open(path: Path) -> IO[bytes]:
        try:
            return path.open("wb")
        except OSError as error:
            raise InvalidInputError(f"cannot write the rejects file {path}: {error.strerror}") from None

    def absorb(self, outcome: halves.HalfOutcome, path: Path | None) -> None:
        """The rejections of the input's second half (`halves`), after this half's own."""
        self.count += outcome.rejected
        self.problems += outcome.problems
        self.shown += outcome.shown[: max(0, SHOWN_PROBLEMS - len(self.shown))]
        if outcome.rejected and path is not None and self.path is not None:
            if self._out is None:
                self._out = self._open(self.path)
            halves.copy_into(path, self._out)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


def _report_rejections(rejects: _Rejects, valid: int, skip_invalid: bool) -> None:
    for message in rejects.shown:
        click.echo(message, err=True)
    if rejects.problems > len(rejects.shown):
        click.echo(f"... and {rejects.problems - len(rejects.shown)} more problems", err=True)
    if rejects.path is not None:
        click.echo(f"wrote {rejects.count} rejected lines with reasons to {rejects.path}", err=True)
    elif skip_invalid:
        click.echo(f"{rejects.count} rejected lines were not kept (use --rejects FILE to keep them)", err=True)
    if not skip_invalid:
        raise InvalidInputError(
            f"{rejects.count} of {rejects.count + valid} lines are invalid; nothing was published",
            hint="fix them, or use --skip-invalid to publish the valid lines and write the rejected ones to a file",
        )


def _default_rejects(source: str) -> Path | None:
    """`FILE.rejects.jsonl` next to a regular file; nothing for standard input or a pipe (no stray files)."""
    if source == "-":
        return None
    try:
        regular = stat.S_ISREG(os.stat(source).st_mode)
    except OSError:
        return None
    return Path(f"{source}.rejects.jsonl") if regular else None


class _Connection:
    """The `EarlyConnection` of one emit: started during validation, closed with the command (`stack`)."""

    def __init__(self, topic: Topic, stack: ExitStack) -> None:
        self.topic, self.stack = topic, stack
        self._early: EarlyConnection | None = None

    def start(self) -> None:
        self._early = self.stack.enter_context(closing(EarlyConnection(self.topic)))

    def ready(self) -> Emitter:
        if self._early is None:  # validation ended before it began (an unreadable input raises instead)
            self.start()
        assert self._early is not None
        return self._early.ready()


def _publish(emitter: Emitter | None, topic: Topic, records: Iterator[Spooled], total: int, quiet: bool) -> int:
    """Produces the spooled records with the early connection's emitter (none when there is nothing to send)."""
    show = (
        (lambda sent, delivered: click.echo(f"sent {sent}/{total}, delivered {delivered}", err=True))
        if not quiet
        else None
    )
    if emitter is None or total == 0:
        return 0
    return emitter.publish_encoded(topic, records, progress=show).published


class _readable:
    """The input as a seekable binary file: a regular file itself; standard input, a FIFO or a device
    spooled to a temporary file. A file that looks binary (a NUL byte in its first 8 KiB) is refused."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        self._handle = self._open()
        head = self._handle.read(SNIFF_BYTES)
        self._handle.seek(0)
        if b"\x00" in head.removeprefix(b"\xef\xbb\xbf"):
            name = "standard input" if self.source == "-" else self.source
            offset = head.index(b"\x00")
            hint = "emit reads JSON Lines (UTF-8 text); a UTF-16 file can be converted with iconv -f UTF-16 -t UTF-8"
            self._handle.close()
            raise InvalidInputError(
                f"{name} is a binary file, not JSON Lines (a NUL byte at offset {offset})", hint=hint
            )
        return self._handle

    def _open(self) -> IO[bytes]:
        if self.source == "-":
            return _spool_stream(sys.stdin.buffer)
        try:
            mode = os.stat(self.source).st_mode
            if stat.S_ISDIR(mode):
                raise InvalidInputError(f"{self.source} is a directory, not a file")
            handle = open(self.source, "rb")  # noqa: SIM115 - closed in __exit__
        except OSError as error:
            raise InvalidInputError(f"cannot read {self.source}: {error.strerror}") from error
        if stat.S_ISREG(mode):
            return handle
        with handle:  # a FIFO or a device: it can be read once only
            return _spool_stream(handle)

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.close()


def _spool_stream(stream: IO[bytes]) -> IO[bytes]:
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned open
    while chunk := stream.read(COPY_CHUNK):
        spool.write(chunk)
    spool.seek(0)
    return spool
