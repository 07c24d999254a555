"""Finding an export's date order in its own dates, so that a day-first file is never read month-first.

Trackers write dates in the exporting user's order (`15/10/2024` or `10/15/2024`). A date with a
component above 12 decides the order: `25/03/2024` can only be day-first. `DateOrderEvidence` collects,
over one whole file, which dates are day-first only, month-first only, or could be either, and
`resolve` then either settles the order or refuses the file: dates that contradict each other or the
order given (`--date-order`), or a file whose every date could be read both ways and no order given.
It never guesses: a guessed order swaps day and month of every date up to the 12th without a trace.
Dates that are impossible in both orders (`13/15/2024`) are not evidence; the row is rejected later.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from producers.parsing import PARSED_KEPT, DateOrder

SLASHED = re.compile(r"^\s*(\d{1,2})[/-](\d{1,2})[/-](\d{2}|\d{4})\s*$")
DATE_COLUMN = re.compile(r"date|(effective|valid)[\s_]*(from|to)")
SHOWN = 20
Reading = Literal["DMY", "MDY", "either", "same", "neither"]
NAMES = {"DMY": "day-first (DD/MM/YYYY)", "MDY": "month-first (MM/DD/YYYY)"}


class DateOrderError(ValueError):
    """The file's dates do not settle one order; `problems` are `line N: field: reason` lines."""

    def __init__(self, message: str, problems: list[str], hint: str) -> None:
        super().__init__(message)
        self.problems = problems
        self.hint = hint


@functools.lru_cache(maxsize=PARSED_KEPT)
def reading_of(text: str) -> Reading | None:
    """How a slashed date with the year last can be read; None for anything else (ISO, dotted).

    Remembered per text, as the date parsers are: an export repeats its dates, and reading them was
    most of the inspection pass of a file with slashed dates."""
    match = SLASHED.match(text)
    if not match:
        return None
    first, second, year = int(match[1]), int(match[2]), int(match[3])
    year = year + 2000 if year < 100 else year
    day_first, month_first = _valid(year, second, first), _valid(year, first, second)
    if day_first and month_first:
        return "same" if first == second else "either"
    if day_first:
        return "DMY"
    return "MDY" if month_first else "neither"


def _valid(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def is_date_column(name: str) -> bool:
    """Columns whose values are dates in the export's order (normalised header names)."""
    return bool(DATE_COLUMN.search(name))


@dataclass(frozen=True)
class Sighting:
    line: int
    column: str
    text: str


@dataclass
class DateOrderEvidence:
    """What one file's dates say about its order (counts, and the first sightings of each kind)."""

    sightings: dict[str, list[Sighting]] = field(default_factory=lambda: {"DMY": [], "MDY": [], "either": []})
    counts: dict[str, int] = field(default_factory=lambda: {"DMY": 0, "MDY": 0, "either": 0})

    def add(self, line: int, column: str, text: str) -> None:
        reading = reading_of(text)
        if reading not in self.counts:
            return
        assert reading is not None
        self.counts[reading] += 1
        if len(self.sightings[reading]) < SHOWN:
            self.sightings[reading].append(Sighting(line, column, text.strip()))

    def resolve(self, given: DateOrder | None) -> DateOrder | None:
        """The order to read the file in (None: it has no slashed dates), or `DateOrderError`."""
        if given is not None:
            self._refuse_contradictions(given, f"--date-order {given}")
            return given
        day_first, month_first = self.counts["DMY"], self.counts["MDY"]
        if day_first and month_first:
            majority: DateOrder = "DMY" if day_first >= month_first else "MDY"
            count = max(day_first, month_first)
            self._refuse_contradictions(
                majority, f"the {count} {NAMES[majority].split()[0]} dates elsewhere in the file"
            )
        if day_first or month_first:
            return "DMY" if day_first else "MDY"
        if self.counts["either"]:
            example = self.sightings["either"][0]
            raise DateOrderError(
                f"all {self.counts['either']} slashed dates could be day-first or month-first "
                f"(e.g. line {example.line}: {example.column}: {example.text!r}); nothing was imported",
                [],
                "pass --date-order DMY (day first) or --date-order MDY (month first), as the export's settings say",
            )
        return None

    def _refuse_contradictions(self, order: DateOrder, authority: str) -> None:
        # Under YMD every year-last date contradicts; otherwise the dates that fit only the other order.
        others = ["DMY", "MDY", "either"] if order == "YMD" else ["MDY" if order == "DMY" else "DMY"]
        count = sum(self.counts[other] for other in others)
        if not count:
            return
        wrong = sorted(((s, other) for other in others for s in self.sightings[other]), key=lambda pair: pair[0].line)
        problems = [
            f"line {s.line}: {s.column}: {s.text!r} {_can_only_be(other)}, contradicting {authority}"
            for s, other in wrong
        ]
        if count > len(problems):
            problems.append(f"... and {count - len(problems)} more such dates")
        raise DateOrderError(
            f"{count} dates contradict the date order {order}; nothing was imported",
            problems,
            "the file mixes date orders or the order is wrong: fix those rows (or --date-order) and import again",
        )


def _can_only_be(reading: str) -> str:
    return f"can only be {NAMES[reading]}" if reading in NAMES else "has the year last"
