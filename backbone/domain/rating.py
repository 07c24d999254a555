"""Which contract version and which rate price a piece of work (billing-rules.md §3, §4, §8).

A contract version applies to a work date when it is ACTIVE and covers that date; among those the
highest version wins, so an amendment changes only the dates it covers. A rate card line matches when
every selector it sets equals the entry's value; the most specific line wins (4·worker + 2·task +
1·role), an earlier line breaks ties, and the contract's default rate is the fallback.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal

from backbone.domain.models import ContractStatus, ContractVersion, RateCardLine

_ACTIVE = ContractStatus.ACTIVE
"""Read once (it is read per entry): `Enum.MEMBER` is slow in Python 3.11 (docs/core-performance.md)."""


def covers(version: ContractVersion, work_date: date) -> bool:
    """Whether `version` applies to work done on `work_date` (terminated versions cover nothing)."""
    if version.status != _ACTIVE or work_date < version.effective_from:
        return False
    return version.effective_to is None or work_date <= version.effective_to


def select_contract_version(versions: Iterable[ContractVersion], work_date: date) -> ContractVersion | None:
    """The highest covering version, or None when no version covers the date (→ NO_CONTRACT)."""
    # One pass instead of filter-then-max (it runs for every entry). On equal keys the first version
    # stays, as with max(); contract_id only breaks ties between two contracts of one project, which the
    # model does not expect.
    best: ContractVersion | None = None
    for version in versions:
        if covers(version, work_date) and (
            best is None or (version.version, version.contract_id) > (best.version, best.contract_id)
        ):
            best = version
    return best


def specificity(line: RateCardLine) -> int:
    """How specific a rate card line is: 4·[worker set] + 2·[task set] + 1·[role set]."""
    return 4 * (line.worker_id is not None) + 2 * (line.task_id is not None) + (line.role is not None)


def matches(line: RateCardLine, worker_id: str, role: str | None, task_id: str | None) -> bool:
    """Whether every selector the line sets equals the entry's value (unset selectors match anything)."""
    return (
        (line.worker_id is None or line.worker_id == worker_id)
        and (line.role is None or line.role == role)
        and (line.task_id is None or line.task_id == task_id)
    )


def resolve_rate(version: ContractVersion, worker_id: str, role: str | None, task_id: str | None) -> Decimal | None:
    """The hourly rate for this work under `version`, or None when nothing applies (→ NO_RATE)."""
    best: RateCardLine | None = None
    for line in version.rate_card:
        # strictly greater: on equal scores the earlier line keeps its place
        if matches(line, worker_id, role, task_id) and (best is None or specificity(line) > specificity(best)):
            best = line
    if best is not None:
        return best.hourly_rate
    return version.default_hourly_rate


def contract_cap(versions: Iterable[ContractVersion], contract_id: str) -> Decimal | None:
    """The not-to-exceed of a contract: the figure on its highest version (None means uncapped)."""
    highest: ContractVersion | None = None
    for version in versions:  # one pass, first of equal versions stays (as with max())
        if version.contract_id == contract_id and (highest is None or version.version > highest.version):
            highest = version
    return highest.not_to_exceed if highest is not None else None
