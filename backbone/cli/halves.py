"""A large input validated in two halves at once: the second by a forked process, the first by this one.

`backbone emit`'s first pass (parse, check, Avro-encode, spool) is pure Python on one core while the
machine has two; it was two thirds of a 100,000-line emit's CPU (docs/benchmarks.md, "Seventh session").
`in_halves` cuts a regular file at the start of the line nearest its middle and hands the second half to a
child process that validates it into its own spool and rejects file, with the line numbers it would have
had (the lines before the cut are counted), while this process validates the first half. Nothing is
published until both have finished: the child reports its outcome, then waits for an order. Only once
this process has seen both halves valid does it send one (`SecondHalf.order`), and the child runs its
`follow_up` with it (`emit` publishes half of the topic's partitions there, reading both halves' spools
in file order) and reports the result (`SecondHalf.result`); without an order the child just exits. So
the published bytes, each partition's order, every rejection and its line number are what one pass
gives. Inputs below `PARALLEL_BYTES`, and systems without `fork` or `/proc/self/fd` (reopening a file
with its own file offset), take one pass.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PARALLEL_BYTES = 4 << 20
"""Inputs at least this large are validated in two halves (a fork costs a few milliseconds)."""
_CHUNK = 1 << 20
_FRAME = struct.Struct("<Q")
"""A message on a pipe between the halves: its pickle's length, then the pickle."""


@dataclass
class HalfOutcome:
    """What the child's half gave: lines spooled, rejections (counted, the first shown, all in a file)."""

    valid: int = 0
    rejected: int = 0
    problems: int = 0
    shown: list[str] = field(default_factory=list)
    error: BaseException | None = None


@dataclass
class FollowUpResult:
    """What the child's `follow_up` returned, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None


Validate = Callable[[IO[bytes], IO[bytes], Path | None, int], HalfOutcome]
"""validate(input, spool, rejects file or None, lines before the input's first): validates every line."""
FollowUp = Callable[[Any], Any]
"""follow_up(order): what the child does with the order this process sends once both halves are valid."""


def can_split(handle: IO[bytes]) -> bool:
    """Whether `handle` is large enough, and this system able, to validate in halves."""
    if not hasattr(os, "fork") or (os.cpu_count() or 1) < 2 or not Path("/proc/self/fd").is_dir():
        return False
    try:
        return os.fstat(handle.fileno()).st_size >= PARALLEL_BYTES
    except (OSError, ValueError, AttributeError):
        return False


def cut(handle: IO[bytes]) -> tuple[int, int] | None:
    """(offset, lines before it): the start of the first line at or after the middle, and how many lines
    come before it; None when that is the end (one line holds the second half). Leaves `handle` at 0."""
    size = os.fstat(handle.fileno()).st_size
    handle.seek(size // 2)
    while (piece := handle.readline(_CHUNK)) and not piece.endswith(b"\n"):
        pass
    offset = handle.tell()
    handle.seek(0)
    if offset >= size:
        return None
    lines, left = 0, offset
    while left > 0:
        chunk = handle.read(min(_CHUNK, left))
        lines += chunk.count(b"\n")
        left -= len(chunk)
    handle.seek(0)
    return offset, lines


class FirstPart:
    """The first `size` bytes of a binary file, read by line (what follows is the other process's)."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._readline = handle.readline
        self._left = size

    def readline(self, limit: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        line = self._readline(self._left if limit < 0 else min(limit, self._left))
        self._left -= len(line)
        return line


class SecondHalf:
    """The child process validating the second half (and, when ordered, following up), from fork to result."""

    def __init__(
        self,
        handle: IO[bytes],
        offset: int,
        lines_before: int,
        validate: Validate,
        keep_rejects: bool,
        follow_up: FollowUp | None = None,
    ):
        self.spool = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it (`close`)
        self.rejects_path = _empty_file() if keep_rejects else None
        # Its own open file description: a forked child would otherwise share this one's file offset.
        second = open(f"/proc/self/fd/{handle.fileno()}", "rb")  # noqa: SIM115 - closed below and in the child
        second.seek(offset)
        read_end, write_end = os.pipe()
        order_read, order_write = os.pipe() if follow_up is not None else (-1, -1)
        sys.stdout.flush()
        sys.stderr.flush()
        self._pid = os.fork()
        if self._pid == 0:  # the child: validate, say how it went, and leave without running any cleanup
            os.close(read_end)
            if order_write >= 0:
                os.close(order_write)
            child = _Child(validate, follow_up, write_end, order_read)
            child.run(second, self.spool, self.rejects_path, lines_before)
        os.close(write_end)
        if order_read >= 0:
            os.close(order_read)
        second.close()
        self._reports = os.fdopen(read_end, "rb")
        self._orders = os.fdopen(order_write, "wb") if order_write >= 0 else None

    def outcome(self) -> HalfOutcome:
        """Waits for the child's half to be validated; its outcome (`error` set when it failed)."""
        outcome = _receive(self._reports)
        if outcome is None or outcome.error is not None or self._orders is None:
            status = self._reap()
            self._reports.close()
            if outcome is None:
                return HalfOutcome(error=RuntimeError(f"validating the second half failed (exit status {status})"))
        self.spool.seek(0)
        return outcome  # type: ignore[no-any-return]

    def order(self, order: Any) -> None:
        """Has the child run its `follow_up` with `order` (both halves are valid); None lets it exit instead."""
        if self._orders is None:
            raise RuntimeError("this second half was made without a follow-up")
        with self._orders:
            if order is not None:
                self._orders.write(_frame(order))
        self._orders = None

    def result(self) -> FollowUpResult:
        """Waits for the child's follow-up (after `order`); its result, or the error that stopped it."""
        with self._reports:
            result = _receive(self._reports)
        status = self._reap()
        if result is None:
            return FollowUpResult(error=RuntimeError(f"the second process stopped (exit status {status})"))
        return result  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stops the child if it still runs (this process failed first) and removes its files."""
        if self._orders is not None:
            self._orders.close()
            self._orders = None
        if self._pid:
            os.kill(self._pid, signal.SIGKILL)
            self._reap()
        self._reports.close()
        self.spool.close()
        if self.rejects_path is not None:
            self.rejects_path.unlink(missing_ok=True)

    def _reap(self) -> int:
        if not self._pid:
            return 0
        _, status = os.waitpid(self._pid, 0)
        self._pid = 0
        return status


class _Child:
    """The forked side: validates its half, reports, then follows up on an order if one comes."""

    def __init__(self, validate: Validate, follow_up: FollowUp | None, reports: int, orders: int) -> None:
        self._validate, self._follow_up = validate, follow_up
        self._reports, self._orders = reports, orders

    def run(self, second: IO[bytes], spool: IO[bytes], rejects: Path | None, lines_before: int) -> None:
        """Never returns: the child leaves with `os._exit`, running none of the parent's cleanup."""
        code = 0
        try:
            outcome = self._validate(second, spool, rejects, lines_before)
            spool.flush()
        except BaseException as error:
            outcome, code = HalfOutcome(error=error), 1
        with os.fdopen(self._reports, "wb") as reports:
            code = max(code, _send(reports, outcome, lambda error: HalfOutcome(error=error)))
            if code == 0 and self._follow_up is not None:
                code = self._follow(reports)
        os._exit(code)

    def _follow(self, reports: IO[bytes]) -> int:
        with os.fdopen(self._orders, "rb") as orders:
            order = _receive(orders)
        if order is None:  # this process refused the input or had nothing for the child
            return 0
        assert self._follow_up is not None
        try:
            result = FollowUpResult(value=self._follow_up(order))
        except BaseException as error:
            result = FollowUpResult(error=error)
        code = _send(reports, result, lambda error: FollowUpResult(error=error))
        return 1 if code or result.error is not None else 0


def _send(pipe: IO[bytes], message: Any, on_error: Callable[[BaseException], Any]) -> int:
    """Writes `message` framed; an unpicklable one as `on_error` of what went wrong. 1 when it was not sent."""
    try:
        data = _frame(message)
    except Exception as error:
        data = _frame(on_error(RuntimeError(repr(error))))
    try:
        pipe.write(data)
        pipe.flush()
    except OSError:
        return 1
    return 1 if getattr(message, "error", None) is not None else 0


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message)
    return _FRAME.pack(len(data)) + data


def _receive(pipe: IO[bytes]) -> Any:
    """The next framed message on `pipe`; None at its end (the other side left)."""
    head = pipe.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (length,) = _FRAME.unpack(head)
    data = pipe.read(length)
    return pickle.loads(data) if len(data) == length else None


def _empty_file() -> Path:
    descriptor, name = tempfile.mkstemp(suffix=".rejects.jsonl")
    os.close(descriptor)
    return Path(name)


def copy_into(source: Path, target: IO[bytes]) -> None:
    """Appends the child's rejects file to this process's."""
    with source.open("rb") as lines:
        while chunk := lines.read(_CHUNK):
            target.write(chunk)
