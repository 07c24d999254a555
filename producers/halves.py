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
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backbone.forked_call import ForkedCall, empty_file
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

    checked: Validation
    spooled: dict[str, int] = field(default_factory=dict)
    rejects_written: int = 0


class SecondHalf:
    """The child process validating the second half of an import, from fork to outcome
    (`backbone.forked_call`).

    `event_types` are those the import can publish: the child spools into files made for them here."""

    def __init__(self, validate: ValidateHalf, encoder: EventEncoder, event_types: Sequence[str]) -> None:
        files = {event_type: tempfile.TemporaryFile() for event_type in event_types}  # noqa: SIM115 - the spool closes them
        self.spool = Spool(encoder, files)
        self.rejects_path = empty_file(".rejects.jsonl")
        given = set(event_types)

        def validate_second() -> HalfOutcome:
            checked, written = validate(self.spool, self.rejects_path)
            self.spool.flush()
            if set(self.spool.counts) - given:
                unknown = sorted(set(self.spool.counts) - given)
                raise RuntimeError(f"the second half spooled {unknown}, which it had no file for")
            return HalfOutcome(checked, dict(self.spool.counts), written)

        self._child = ForkedCall(validate_second, "validating the second half")

    def joined(self, first: Validation, rejects: RejectsFile) -> Validation:
        """Both halves' totals, once the child is done: its spooled records adopted into `spool`, its
        rejections after `first`'s (and appended to `rejects`). Raises what failed in the child."""
        outcome = self._child.result()
        self.spool.adopt(outcome.spooled)
        rejects.append(self.rejects_path, outcome.rejects_written)
        return joined(first, outcome.checked)

    def close(self) -> None:
        """Stops the child if it still runs (this process failed first) and removes its files."""
        self._child.stop()
        self.spool.close()
        self.rejects_path.unlink(missing_ok=True)
