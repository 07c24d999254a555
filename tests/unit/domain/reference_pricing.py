"""A second, deliberately plain pricing of billing-rules.md §1–§5 and §8, kept only to check the first.

Tests that compare `backbone/domain` against its own functions prove order independence, not correct
money. This module is the independent side of that comparison, so it shares no code with
`backbone.domain`: it reads fields of the canonical models and nothing else. Its arithmetic is exact
(`fractions.Fraction`) with one hand-written half-up rounding at the very end, so a mistake in how the
production code uses `Decimal` contexts, quantize modes or rounding order cannot hide in both places.
Amounts still leave as `Decimal` at the currency's scale; a float never appears. It favours being
obviously right over being short or fast: read it next to the rules, line by line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction

from backbone.domain.models import ApprovalDecision, ContractVersion, Project, TimeEntry, Worker

MINOR_UNITS_NAMED_BY_THE_RULES: dict[str, int] = {
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "VND": 0,
    "BHD": 3,
    "KWD": 3,
    "JOD": 3,
    "OMR": 3,
    "TND": 3,
}
"""§5 names these; every other currency the tests use (USD, EUR, GBP, CHF) has 2."""


# --- §5 arithmetic ---------------------------------------------------------------------------------


def half_up(value: Fraction) -> int:
    """The nearest whole number; an exact half goes away from zero (2.5 → 3, never the even 2)."""
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude


def to_money(value: Fraction, currency: str) -> Decimal:
    """`value` rounded half up to the currency's minor units, as a Decimal carrying exactly that scale."""
    places = MINOR_UNITS_NAMED_BY_THE_RULES.get(currency, 2)
    units = half_up(value * 10**places)
    digits = tuple(int(d) for d in str(abs(units)))
    return Decimal((1 if units < 0 else 0, digits, -places))


def billable_minutes(duration_seconds: int, increment: int, mode: str) -> int:
    """Exact minutes to a multiple of the increment: NEAREST half up, UP ceiling, DOWN floor."""
    increments = Fraction(duration_seconds, 60 * increment)
    if mode == "NEAREST":
        whole = half_up(increments)
    elif mode == "UP":
        whole = math.ceil(increments)
    elif mode == "DOWN":
        whole = math.floor(increments)
    else:
        raise ValueError(f"unknown rounding mode {mode!r}")
    return whole * increment


def line_amount(minutes: int, hourly_rate: Decimal, discount_percent: Decimal, currency: str) -> Decimal:
    """minutes × rate × (100 − discount) / 6000, exactly, then one half-up rounding."""
    exact = Fraction(minutes) * Fraction(hourly_rate) * (100 - Fraction(discount_percent)) / 6000
    return to_money(exact, currency)


def cost_minutes(duration_seconds: int) -> int:
    """Exact minutes, half up to whole minutes (150 s is 2.5 min → 3)."""
    return half_up(Fraction(duration_seconds, 60))


def cost_amount(duration_seconds: int, cost_rate: Decimal, cost_currency: str) -> Decimal:
    """cost_minutes × cost_rate / 60, one half-up rounding to the cost currency."""
    return to_money(cost_minutes(duration_seconds) * Fraction(cost_rate) / 60, cost_currency)


# --- §3 contract version, §4 rate -------------------------------------------------------------------


def applicable_version(versions: Iterable[ContractVersion], work_date: date) -> ContractVersion | None:
    """The highest ACTIVE version whose [effective_from, effective_to] (open end when null) holds the date."""
    best: ContractVersion | None = None
    for version in versions:
        if version.status != "ACTIVE" or work_date < version.effective_from:
            continue
        if version.effective_to is not None and work_date > version.effective_to:
            continue
        if best is None or version.version > best.version:
            best = version
    return best


def hourly_rate(version: ContractVersion, worker_id: str, role: str | None, task_id: str | None) -> Decimal | None:
    """The most specific matching line (4·worker + 2·task + 1·role, earlier line on ties), else the default."""
    scored = []
    for position, line in enumerate(version.rate_card):
        if line.worker_id is not None and line.worker_id != worker_id:
            continue
        if line.role is not None and line.role != role:
            continue
        if line.task_id is not None and line.task_id != task_id:
            continue
        score = (4 if line.worker_id is not None else 0) + (2 if line.task_id is not None else 0)
        score += 1 if line.role is not None else 0
        scored.append((-score, position, line.hourly_rate))
    if scored:
        return min(scored)[2]
    return version.default_hourly_rate


# --- §8 cap arithmetic -------------------------------------------------------------------------------


def contract_cap(versions: Iterable[ContractVersion], contract_id: str) -> Decimal | None:
    """The not_to_exceed written on the contract's highest version (None: uncapped)."""
    own = sorted((v for v in versions if v.contract_id == contract_id), key=lambda v: v.version)
    return own[-1].not_to_exceed if own else None


def cut_to_cap(worths: Sequence[Decimal], cap: Decimal) -> list[tuple[Decimal, Decimal]]:
    """(billed, at risk) per entry, billing in the given order: each takes what the cap still leaves."""
    remaining = cap
    cut = []
    for worth in worths:
        billed = min(worth, max(Decimal(0), remaining))
        remaining -= billed
        cut.append((billed, worth - billed))
    return cut


# --- §1 and §2: what an entry is worth ----------------------------------------------------------------


def billed_revision(revisions: Iterable[TimeEntry], decisions: Iterable[ApprovalDecision]) -> TimeEntry | None:
    """The highest seen revision whose last decision is APPROVED; None when deleted or nothing approved."""
    seen = {}
    for revision in revisions:
        if revision.deleted:
            return None
        seen[revision.revision] = revision
    last_decision = {}
    for decision in decisions:  # in arrival order, which Kafka keeps per entry
        last_decision[decision.revision] = decision.decision
    approved = [n for n, d in last_decision.items() if d == "APPROVED" and n in seen]
    return seen[max(approved)] if approved else None


@dataclass(frozen=True)
class Expected:
    """What an entry should be worth (uncapped) and cost; `contract_id` names the contract it bills under."""

    worth: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    contract_id: str | None = None
    currency: str | None = None


def expected_money(
    entry: TimeEntry | None,
    workers: dict[str, Worker],
    projects: dict[str, Project],
    versions: Iterable[ContractVersion],
) -> Expected:
    """§2's checks in order, then §3–§5. A failure at steps 1–3 leaves nothing; at 4–7 only the cost."""
    if entry is None or entry.deleted:
        return Expected()
    worker = workers.get(entry.worker_id)
    project = projects.get(entry.project_id)
    if worker is None or project is None or project.status != "ACTIVE":
        return Expected()
    cost = cost_amount(entry.duration_seconds, worker.cost_rate, worker.cost_currency)
    if not entry.billable or project.billing_type != "TIME_AND_MATERIALS":
        return Expected(cost=cost)
    version = applicable_version((v for v in versions if v.project_id == entry.project_id), entry.work_date)
    if version is None or not version.tax_code:
        return Expected(cost=cost)
    rate = hourly_rate(version, worker.worker_id, worker.role, entry.task_id)
    if rate is None:
        return Expected(cost=cost)
    minutes = billable_minutes(entry.duration_seconds, version.rounding_increment_minutes, version.rounding_mode)
    worth = line_amount(minutes, rate, version.discount_percent, version.currency)
    return Expected(worth=worth, cost=cost, contract_id=version.contract_id, currency=version.currency)
