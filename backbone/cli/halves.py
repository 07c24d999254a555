"""A large input validated in two halves at once: the second by a forked process, the first by this one.

`backbone emit`'s first pass (parse, check, Avro-encode, spool) is pure Python on one core while the
machine has two; it was two thirds of a 100,000-line emit's CPU (docs/benchmarks.md, "Seventh session").
`in_halves` cuts a regular file at the start of the line nearest its middle and hands the second half to a
child process that validates it into its own spool and rejects file, with the line numbers it would have
had (the lines before the cut are counted), while this process validates the first half. Nothing is
published until both have finished, and the records are published first half first, so the published
bytes, their order, every rejection and its line number are what one pass gives. Inputs below
`PARALLEL_BYTES`, and systems without `fork` or `/proc/self/fd` (reopening the input with its own file
offset), take one pass.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from backbone.forked_call import ForkedCall, empty_file

PARALLEL_BYTES = 4 << 20
"""Inputs at least this large are validated in two halves (a fork costs a few milliseconds)."""
_CHUNK = 1 << 20


@dataclass
class HalfOutcome:
    """What the child's half gave: lines spooled, rejections (counted, the first shown, all in a file)."""

    valid: int = 0
    rejected: int = 0
    problems: int = 0
    shown: list[str] = field(default_factory=list)


Validate = Callable[[IO[bytes], IO[bytes], Path | None, int], HalfOutcome]
"""validate(input, spool, rejects file or None, lines before the input's first): validates every line."""


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
    """The child process validating the second half, from fork to outcome (`backbone.forked_call`)."""

    def __init__(self, handle: IO[bytes], offset: int, lines_before: int, validate: Validate, keep_rejects: bool):
        self.spool = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it (`close`)
        self.rejects_path = empty_file(".rejects.jsonl") if keep_rejects else None
        # Its own open file description: a forked child would otherwise share this one's file offset.
        second = open(f"/proc/self/fd/{handle.fileno()}", "rb")  # noqa: SIM115 - closed below and in the child

        def validate_second() -> HalfOutcome:
            outcome = validate(second, self.spool, self.rejects_path, lines_before)
            self.spool.flush()
            return outcome

        second.seek(offset)
        self._child = ForkedCall(validate_second, "validating the second half")
        second.close()

    def outcome(self) -> HalfOutcome:
        """Waits for the child; its outcome, or raises what failed in it."""
        outcome = self._child.result()
        self.spool.seek(0)
        return outcome

    def close(self) -> None:
        """Stops the child if it still runs (this process failed first) and removes its files."""
        self._child.stop()
        self.spool.close()
        if self.rejects_path is not None:
            self.rejects_path.unlink(missing_ok=True)


def copy_into(source: Path, target: IO[bytes]) -> None:
    """Appends the child's rejects file to this process's."""
    with source.open("rb") as lines:
        while chunk := lines.read(_CHUNK):
            target.write(chunk)
