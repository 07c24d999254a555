"""Money arithmetic of billing-rules.md §5: minor units, minute rounding, line and cost amounts.

Everything is `Decimal`; a float never touches an amount. Each amount is rounded exactly once, at the
end, half up to its currency's ISO 4217 minor units (looked up in a table, because "× 100" is wrong
for yen and dinars alike).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from functools import lru_cache

from backbone.domain.models import RoundingMode

ZERO = Decimal(0)
"""Nothing: what a ledger's amounts start at (the ids write this very object's text without formatting it)."""

DEFAULT_MINOR_UNITS = 2
"""USD, EUR, GBP, CHF and most other currencies."""

MINOR_UNITS: dict[str, int] = {
    # zero decimals
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    # three decimals
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    # four decimals (units of account)
    **dict.fromkeys(("CLF", "UYW"), 4),
}
"""ISO 4217 currencies whose minor units differ from the default of 2."""

_WIDE = 60
"""Working precision: wide enough that only the final quantize ever rounds."""

_CONTEXT = Context(prec=_WIDE, rounding=ROUND_HALF_UP)
_TOO_MANY_UNITS = 10**_WIDE
"""Where `quantize` in `_CONTEXT` raises: an amount whose minor units need more digits than the precision."""
"""One shared context passed to each operation: `localcontext()` per call costs more than the arithmetic."""


def minor_units(currency: str) -> int:
    """Decimal places of `currency` under ISO 4217 (2 unless the table says otherwise)."""
    return MINOR_UNITS.get(currency.upper(), DEFAULT_MINOR_UNITS)


@lru_cache(maxsize=256)
def _quantum(currency: str) -> Decimal:
    """The smallest amount of `currency` (0.01 EUR, 1 JPY, 0.001 KWD); a handful of currencies, cached."""
    return Decimal(1).scaleb(-minor_units(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half up to the minor units of `currency`."""
    return amount.quantize(_quantum(currency), rounding=ROUND_HALF_UP, context=_CONTEXT)


_UP, _DOWN, _NEAREST = RoundingMode.UP, RoundingMode.DOWN, RoundingMode.NEAREST
"""Read once: in Python 3.11 `Enum.MEMBER` goes through the enum metaclass's `__getattr__` hook, ~0.3 µs a
read, and the core read some twenty per entry (docs/core-performance.md, "Ninth session")."""


def _divide_rounded(numerator: int, denominator: int, mode: RoundingMode) -> int:
    """numerator / denominator rounded to a whole number, exactly, in integers (denominator > 0).

    NEAREST is half up, i.e. half away from zero like Decimal's ROUND_HALF_UP; UP and DOWN are
    ceiling and floor, which is what `//` does on either side of zero.
    """
    if mode == _UP:
        return -(-numerator // denominator)
    if mode == _DOWN:
        return numerator // denominator
    half_up = (2 * abs(numerator) + denominator) // (2 * denominator)
    return half_up if numerator >= 0 else -half_up


def round_minutes(duration_seconds: int, increment: int, mode: RoundingMode) -> int:
    """Billable minutes: the exact minutes rounded to a multiple of `increment` (NEAREST is half up).

    seconds / 60 / increment in integers: the rule's Decimal arithmetic gives the same whole steps,
    without building three Decimals per entry.
    """
    if increment < 1:
        raise ValueError(f"a rounding increment must be at least one minute, got {increment}")
    if mode not in _MODES:  # a membership test, not RoundingMode(mode): the enum call costs more than the sum
        raise ValueError(f"{mode!r} is not a rounding mode")
    return _divide_rounded(duration_seconds, 60 * increment, mode) * increment


_MODES = frozenset(RoundingMode)
"""The rounding modes; plain strings like "UP" are members too, as RoundingMode is a StrEnum."""


def line_amount(minutes: int, hourly_rate: Decimal, discount_percent: Decimal, currency: str) -> Decimal:
    """HALF_UP(minutes × rate × (100 − discount) / 6000): one rounding, at the end, per line.

    Computed in integers (`_rounded_minor`): both decimals are exact fractions, so the amount in minor
    units is one exact integer division rounded half up. Decimal's 60-digit division of a quotient that
    rarely terminates (÷ 6000) was most of an entry's pricing cost; the result is the same Decimal.
    """
    rate, rate_scale = hourly_rate.as_integer_ratio()
    share, share_scale = (_HUNDRED - discount_percent).as_integer_ratio()
    negative = hourly_rate.is_signed() ^ (share < 0) ^ (minutes < 0)
    return _rounded_minor(abs(minutes * rate * share), rate_scale * share_scale * 6000, negative, currency)


def _rounded_minor(numerator: int, denominator: int, negative: bool, currency: str) -> Decimal:
    """±numerator / denominator (both ≥ 0) rounded half up to the minor units of `currency`, as a Decimal
    with exactly those places: what `round_money` gives for the exact quotient, signed zero included
    (Decimal keeps the sign of a product that rounds to zero, and its text shows it)."""
    places = minor_units(currency)
    units = (2 * numerator * 10**places + denominator) // (2 * denominator)
    if units >= _TOO_MANY_UNITS:
        raise InvalidOperation(f"an amount of {units} minor units does not fit {_WIDE} digits")  # as quantize
    if units == 0 and negative:
        return Decimal((1, (0,), -places))
    return _CONTEXT.multiply(Decimal(-units if negative else units), _QUANTA[places])  # exact: places' exponent


_QUANTA = {places: Decimal(1).scaleb(-places) for places in {DEFAULT_MINOR_UNITS, *MINOR_UNITS.values()}}
"""The smallest amount with so many decimals: units × it is the amount, with exactly that exponent."""


def cost_minutes(duration_seconds: int) -> int:
    """Minutes that carry cost: the exact minutes rounded half up to whole minutes."""
    return _divide_rounded(duration_seconds, 60, _NEAREST)


def cost_amount(duration_seconds: int, cost_rate: Decimal, cost_currency: str) -> Decimal:
    """HALF_UP(cost_minutes × cost_rate / 60) in the minor units of the cost currency (in integers, as
    `line_amount`)."""
    minutes = cost_minutes(duration_seconds)
    rate, rate_scale = cost_rate.as_integer_ratio()
    negative = cost_rate.is_signed() ^ (minutes < 0)
    return _rounded_minor(abs(minutes * rate), rate_scale * 60, negative, cost_currency)


def hours(billable_minutes: int) -> Decimal:
    """Hours shown to people: billable minutes / 60 to 4 decimals."""
    return _CONTEXT.divide(Decimal(billable_minutes), _SIXTY).quantize(
        Decimal("0.0001"), rounding=ROUND_HALF_UP, context=_CONTEXT
    )


_HUNDRED, _SIXTY, _SIX_THOUSAND = Decimal(100), Decimal(60), Decimal(6000)
