"""Which tracker wrote an export, told by its header, so that no importer reads another tracker's file.

Toggl's and Clockify's detailed exports share most column names (`Start date`, `User`, `Email`); fed to
the wrong importer, a file would be read with the wrong rules (Clockify's `Duration (h)` ignored, a
wrong id scheme) rather than refused. Each tracker has marker columns no other tracker writes and the
columns its importer cannot do without; `check_signature` refuses a file that is another tracker's
(naming it and the command to use) or that lacks the importer's required columns. A file with the
required columns and no tracker's markers (a trimmed export) is read by the importer it was given to.
"""

from __future__ import annotations

import re
from collections.abc import Collection

TRACKERS = ("harvest", "toggl", "clockify")
# Columns only that tracker's time export has (normalised header names, or full-match patterns).
MARKERS: dict[str, tuple[str, ...]] = {
    "clockify": (
        "duration (h)",
        "duration (decimal)",
        "approval status",
        "date of creation",
        r"billable (rate|amount) \(\w{3}\)",
    ),
    "harvest": ("hours", "billable?", "approved?", "invoiced?", "employee?", "external reference url"),
    "toggl": (r"amount \(\w{3}\)", "duration"),
}
# Columns (any one of each group) without which the importer cannot read a row.
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "harvest": (("date", "spent date"), ("hours",)),
    "toggl": (("start date",), ("start time",)),
    "clockify": (("start date",), ("start time",)),
}


class SignatureError(ValueError):
    """The header is not the importer's tracker's."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def looks_like(header: Collection[str]) -> str | None:
    """The tracker whose time export has this header (normalised names), or None."""
    for tracker in ("clockify", "harvest", "toggl"):  # Toggl's markers are the weakest: checked last
        has_markers = any(any(re.fullmatch(m, name) for name in header) for m in MARKERS[tracker])
        if has_markers and _lacking(tracker, header) == []:
            return tracker
    return None


def _lacking(tracker: str, header: Collection[str]) -> list[str]:
    return [" or ".join(group) for group in REQUIRED[tracker] if not any(name in header for name in group)]


def check_signature(importer: str, header: Collection[str]) -> None:
    """Refuse a header that is another tracker's export, or lacks what `importer` needs.

    `importer` is a tracker name or `erp` (which only refuses tracker exports).
    """
    found = looks_like(header)
    if found is not None and found != importer:
        raise SignatureError(
            f"this looks like a {found.title()} export, not a {importer.title()} one; nothing was imported",
            f"use `backbone import {found}`",
        )
    lacking = _lacking(importer, header) if importer in REQUIRED else []
    if lacking:
        raise SignatureError(
            f"this is not a {importer.title()} detailed time export: it has no {'; no '.join(lacking)} column "
            f"(columns found: {', '.join(header) or 'none'}); nothing was imported",
            f"export the detailed time report from {importer.title()} (CSV or .xlsx) and import that file",
        )
