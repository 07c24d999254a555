"""An import's validation pass in two processes: a forked child validates the records after the middle.

The validation pass of `backbone import` (read, map, encode into a spool) is Python on one core, most of
an import's time (docs/imports.md, "Speed"), on a machine with two. As `backbone emit` does
(`backbone.cli.halves`), a large CSV export is cut where a record starts near its middle (found by the
inspection pass, `producers.importing.inspect_export`); a child forked here validates the second half into
spool files made before the fork and into its own rejects file, while this process validates the first.
Records keep the line numbers they have in the whole file, and the child numbers identical rows as one
pass would: before its own rows it counts the identity keys of the first half's rows
(`producers.parsing.numbering`: a key a row, not a whole mapping), so the third identical row is the third
on whichever side of the cut it is. Nothing is published until both halves are done, and the first half's
records are published first and its rejections written first: the bytes, their order, the rejects file
and every line number are what one pass gives. Files below `PARALLEL_BYTES`, systems without `fork`,
workbooks, JSON and encodings whose line ends are not single bytes take one pass.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from producers.importing import RejectsFile, Validation, joined
from producers.spool import EventEncoder, Spool

PARALLEL_BYTES = 1 << 20
"""Files at least this large are validated in two processes: about 8,000 rows, most of a second of work,
where a fork and the child's count of the first half's keys cost a few hundredths."""

ValidateHalf = Callable[[Spool, Path], tuple[Validation, int]]
"""validate(spool, rejects path): the second half validated into `spool`; its totals and rejects written."""


def worth_splitting(path: Path) -> bool:
    """Whether `path` is large enough, and this system able, to validate in two processes."""
    if not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        return False
    try:
        return path.stat().st_size >= PARALLEL_BYTES
    except OSError:
        return False


@dataclass
class HalfOutcome:
    """What the child's half gave: its totals, the records it spooled per event type, its rejects written."""

    checked: Validation | None = None
    spooled: dict[str, int] = field(default_factory=dict)
    rejects_written: int = 0
    error: BaseException | None = None


class SecondHalf:
    """The child process validating the second half of an import, from fork to outcome.

    `event_types` are those the import can publish: the child spools into files made for them here."""

    def __init__(self, validate: ValidateHalf, encoder: EventEncoder, event_types: Sequence[str]) -> None:
        files = {event_type: tempfile.TemporaryFile() for event_type in event_types}  # noqa: SIM115 - the spool closes them
        self.spool = Spool(encoder, files)
        self.rejects_path = _empty_file()
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self._pid = os.fork()
        if self._pid == 0:  # the child: validate, say how it went, and leave without running any cleanup
            os.close(read_end)
            _run_child(validate, self.spool, set(event_types), self.rejects_path, write_end)
        os.close(write_end)
        self._outcome = os.fdopen(read_end, "rb")

    def joined(self, first: Validation, rejects: RejectsFile) -> Validation:
        """Both halves' totals, once the child is done: its spooled records adopted into `spool`, its
        rejections after `first`'s (and appended to `rejects`). Raises what failed in the child."""
        outcome = self._wait()
        if outcome.error is not None:
            raise outcome.error
        assert outcome.checked is not None
        self.spool.adopt(outcome.spooled)
        rejects.append(self.rejects_path, outcome.rejects_written)
        return joined(first, outcome.checked)

    def _wait(self) -> HalfOutcome:
        with self._outcome:
            data = self._outcome.read()
        _, status = os.waitpid(self._pid, 0)
        self._pid = 0
        if not data:
            return HalfOutcome(error=RuntimeError(f"validating the second half failed (exit status {status})"))
        outcome: HalfOutcome = pickle.loads(data)
        return outcome

    def close(self) -> None:
        """Stops the child if it still runs (this process failed first) and removes its files."""
        if self._pid:
            os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
            self._pid = 0
            self._outcome.close()
        self.spool.close()
        self.rejects_path.unlink(missing_ok=True)


def _run_child(validate: ValidateHalf, spool: Spool, given: set[str], rejects: Path, out: int) -> None:
    code = 0
    try:
        checked, written = validate(spool, rejects)
        spool.flush()
        if set(spool.counts) - given:
            raise RuntimeError(f"the second half spooled {sorted(set(spool.counts) - given)}, which it had no file for")
        outcome = HalfOutcome(checked, dict(spool.counts), written)
    except BaseException as error:
        outcome, code = HalfOutcome(error=error), 1
    try:
        data = pickle.dumps(outcome)
    except Exception as error:
        data, code = pickle.dumps(HalfOutcome(error=RuntimeError(repr(error)))), 1
    with os.fdopen(out, "wb") as pipe:
        pipe.write(data)
    os._exit(code)


def _empty_file() -> Path:
    descriptor, name = tempfile.mkstemp(suffix=".rejects.jsonl")
    os.close(descriptor)
    return Path(name)
