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
and published records of one pass; once both halves are valid, both processes publish, each half of the
topic's partitions (read from both spools in file order, so each partition gets the file's order, from
one producer), and the command fails, naming the partitions, if either did not get every record to the
broker. By default one invalid line means nothing
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
import functools
import os
import stat
import struct
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
from backbone.errors import BackboneError, InvalidInputError
from backbone.settings import load_settings
from backbone.streams.partitioner import murmur2
from producers.jsonl import MAX_LINE_BYTES, ParsedEvent, Rejection, event_class, iter_raw_lines, parse_raw_line

if TYPE_CHECKING:
    from backbone.domain.models import Event
    from backbone.kafka.compiled_writer import LineWriter, Written
    from backbone.kafka.serde import TopicSerde
    from backbone.kafka.topics import Topic
    from producers.emitter import Emitter, Placed, Progress

Spooled = tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]

SHOWN_PROBLEMS = 50
PROGRESS_EVERY = 100_000
SNIFF_BYTES = 8192
COPY_CHUNK = 1 << 20
_LENGTHS = struct.Struct("<IIHH")
"""A spooled record: lengths of key, Avro body, source_system and correlation_id (0: none)."""
_PLACED = struct.Struct("<IIHHI")
"""A record spooled for two publishing processes: the lengths, then its key's murmur2 hash (31 bits), which
gives its partition once the broker has said how many the topic has."""
_HASH_MASK = 0x7FFFFFFF


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
        spools = _Spools([spool])
        try:
            valid = _validate_all(handle, event_type, target, spools, stack, rejects, max_line_bytes, quiet)
        finally:
            rejects.close()
        if rejects.count:
            _report_rejections(rejects, valid, skip_invalid)
        assert spools.connection is not None
        published = _publish(spools.connection, target, event_type, spools, valid, quiet)
    seconds = time.monotonic() - started
    rate = published / seconds if seconds > 0 else 0.0
    click.echo(f"published {published}, rejected {rejects.count}, {seconds:.2f} s, {rate:,.0f} records/s")


@dataclasses.dataclass
class _Spools:
    """The validated records: one spool, or the first and second half's (then `second` is the child process
    that validated the second half and publishes half of the partitions when ordered to)."""

    parts: list[IO[bytes]]
    second: halves.SecondHalf | None = None
    connection: EarlyConnection | None = None

    def connect(self, topic: Topic, stack: ExitStack) -> None:
        """Starts connecting (`EarlyConnection`): after the fork, whose child must not inherit a producer."""
        self.connection = stack.enter_context(closing(EarlyConnection(topic)))


def _validate_all(
    handle: IO[bytes],
    event_type: str,
    topic: Topic,
    spools: _Spools,
    stack: ExitStack,
    rejects: _Rejects,
    max_line_bytes: int,
    quiet: bool,
) -> int:
    """Validate every line into the first spool, or a large file in two halves at once (`halves`): the
    second half's spool is appended to `spools` and its rejections to `rejects`, after the first half's."""
    from backbone.kafka.serde import TopicSerde
    from producers.emitter import line_writer

    event_cls = event_class(event_type)
    serde = TopicSerde(topic, registry=None)  # type: ignore[arg-type]  # Avro bodies only: no registry needed
    lines = _Lines(event_cls, line_writer(event_cls), serde, max_line_bytes)
    where = halves.cut(handle) if halves.can_split(handle) else None
    if where is None:
        spools.connect(topic, stack)
        return _validate(handle, lines, spools.parts[0], rejects, quiet)
    offset, lines_before = where

    def second_half(part: IO[bytes], spool: IO[bytes], path: Path | None, before: int) -> halves.HalfOutcome:
        its_rejects = _Rejects(path)
        try:
            valid = _validate(part, lines, spool, its_rejects, True, before, placed=True)
        finally:
            its_rejects.close()
        return halves.HalfOutcome(valid, its_rejects.count, its_rejects.problems, its_rejects.shown)

    publish_share = functools.partial(_publish_share, topic, event_type)
    second = stack.enter_context(
        closing(halves.SecondHalf(handle, offset, lines_before, second_half, rejects.path is not None, publish_share))
    )
    spools.connect(topic, stack)
    first = halves.FirstPart(handle, offset)
    valid = _validate(first, lines, spools.parts[0], rejects, quiet, placed=True)  # type: ignore[arg-type]
    outcome = second.outcome()
    if outcome.error is not None:
        raise outcome.error
    rejects.absorb(outcome, second.rejects_path)
    spools.parts.append(second.spool)
    spools.second = second
    return valid + outcome.valid


@dataclasses.dataclass(frozen=True)
class _Lines:
    """How lines of one event type are validated and written (built once, before any fork)."""

    event_cls: type[Event]
    writer: LineWriter | None
    serde: TopicSerde
    max_line_bytes: int


def _validate(
    handle: IO[bytes],
    lines: _Lines,
    spool: IO[bytes],
    rejects: _Rejects,
    quiet: bool,
    before: int = 0,
    *,
    placed: bool = False,
) -> int:
    """Validate and encode every line; spool the valid ones, hand the rest to `rejects`. Returns the count spooled.

    A line the compiled writer vouches for is written straight from its parsed JSON; any other line
    is validated through the model, which accepts it or says exactly why not (`_through_model`).
    `before` counts the input's lines before `handle`'s first (its second half's). `placed` spools each
    record with its key's hash (`_PLACED`), for publishing from two processes split by partition."""
    event_cls, serde, writer = lines.event_cls, lines.serde, lines.writer
    loads, pack, write = orjson.loads, _LENGTHS.pack, spool.write
    pack_placed, mask = _PLACED.pack, _HASH_MASK
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
        if placed:
            head = pack_placed(len(key), len(body), len(source), len(correlation), murmur2(key) & mask)
        else:
            head = pack(len(key), len(body), len(source), len(correlation))
        write(head + key + body + source + correlation)
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


def _spooled(spool: IO[bytes], event_type: str) -> Iterator[Spooled]:
    """The spooled records back, with the headers the emitter writes (`event_type`, `source_system`,
    `correlation_id`)."""
    read, size = spool.read, _LENGTHS.size
    type_header = ("event_type", event_type.encode())
    while True:
        lengths = read(size)
        if len(lengths) < size:
            return
        key_len, body_len, source_len, correlation_len = _LENGTHS.unpack(lengths)
        payload = read(key_len + body_len + source_len + correlation_len)
        body_end = key_len + body_len
        headers: list[tuple[str, str | bytes | None]] = [
            type_header,
            ("source_system", payload[body_end : body_end + source_len]),
        ]
        if correlation_len:
            headers.append(("correlation_id", payload[body_end + source_len :]))
        yield payload[:key_len], payload[key_len:body_end], headers


def _placed(spool: IO[bytes], event_type: str, partitions: int, mine: tuple[bool, ...]) -> Iterator[Placed]:
    """The records spooled with their keys' hashes (`_PLACED`) that go to partitions `mine` marks, with their
    partitions and the emitter's headers; the others are skipped unread."""
    read, seek, size, unpack = spool.read, spool.seek, _PLACED.size, _PLACED.unpack
    type_header = ("event_type", event_type.encode())
    while True:
        head = read(size)
        if len(head) < size:
            return
        key_len, body_len, source_len, correlation_len, hashed = unpack(head)
        partition = hashed % partitions
        if not mine[partition]:
            seek(key_len + body_len + source_len + correlation_len, 1)
            continue
        payload = read(key_len + body_len + source_len + correlation_len)
        body_end = key_len + body_len
        headers: list[tuple[str, str | bytes | None]] = [
            type_header,
            ("source_system", payload[body_end : body_end + source_len]),
        ]
        if correlation_len:
            headers.append(("correlation_id", payload[body_end + source_len :]))
        yield partition, payload[:key_len], payload[key_len:body_end], headers


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


def _publish(
    connection: EarlyConnection, topic: Topic, event_type: str, spools: _Spools, total: int, quiet: bool
) -> int:
    show = (
        (lambda sent, delivered: click.echo(f"sent {sent}/{total}, delivered {delivered}", err=True))
        if not quiet
        else None
    )
    if total == 0:
        return 0
    partitions, header = connection.ready()
    if spools.second is None:
        spools.parts[0].seek(0)
        records = chain.from_iterable(_spooled(part, event_type) for part in spools.parts)
        return connection.emitter.publish_encoded(topic, records, progress=show).published
    return _publish_from_both(connection.emitter, topic, event_type, spools, (partitions, header), show)


@dataclasses.dataclass(frozen=True)
class _Share:
    """What one of the two processes publishes: the partitions `mine` marks (of `partitions`), read from
    both halves' spools (the descriptors `spools`, the same in both processes) in file order."""

    partitions: int
    mine: tuple[bool, ...]
    header: bytes
    spools: tuple[int, ...]

    @classmethod
    def split(cls, partitions: int, header: bytes, spools: tuple[int, ...]) -> tuple[_Share, _Share]:
        """This process's share (the even partitions) and the child's (the odd ones)."""
        even = tuple(partition % 2 == 0 for partition in range(partitions))
        odd = tuple(not mine for mine in even)
        return cls(partitions, even, header, spools), cls(partitions, odd, header, spools)

    def names(self) -> str:
        return ", ".join(str(partition) for partition, mine in enumerate(self.mine) if mine)

    def records(self, event_type: str) -> Iterator[Placed]:
        for descriptor in self.spools:
            # Its own open file description: the other process reads the same spools at its own pace.
            with open(f"/proc/self/fd/{descriptor}", "rb") as part:
                yield from _placed(part, event_type, self.partitions, self.mine)


def _publish_from_both(
    emitter: Emitter, topic: Topic, event_type: str, spools: _Spools, where: tuple[int, bytes], show: Progress | None
) -> int:
    """Both processes publish their share of the partitions at once; fails, naming the partitions, when
    either did not get every one of its records to the broker (after its delivery timeout)."""
    from producers.emitter import DeliveryError

    assert spools.second is not None
    for part in spools.parts:
        part.flush()
    partitions, header = where  # the schema id was looked up once, by this process: the child gets it
    ours, theirs = _Share.split(partitions, header, tuple(part.fileno() for part in spools.parts))
    spools.second.order(theirs if any(theirs.mine) else None)
    published, failures = 0, []
    try:
        published = emitter.publish_placed(topic, ours.records(event_type), header, progress=show).published
    except BackboneError as error:
        failures.append(f"partitions {ours.names()}: {error.args[0]}")
    if any(theirs.mine):
        result = spools.second.result()
        if result.error is not None:
            reason = result.error.args[0] if isinstance(result.error, BackboneError) else repr(result.error)
            failures.append(f"partitions {theirs.names()} (the second process): {reason}")
        else:
            published += result.value
    if failures:
        raise DeliveryError(
            "; ".join(failures), hint="delivered records are safe to send again: ids are derived from the payload"
        )
    return published


def _publish_share(topic: Topic, event_type: str, share: _Share) -> int:
    """The child's follow-up (`halves.SecondHalf.order`): publishes its share with its own producer."""
    from producers.emitter import Emitter

    with Emitter(load_settings(), bulk=True) as emitter:
        return emitter.publish_placed(topic, share.records(event_type), share.header).published


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
