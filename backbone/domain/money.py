"""Money arithmetic of billing-rules.md §5: minor units, minute rounding, line and cost amounts.

Everything is `Decimal`; a float never touches an amount. Each amount is rounded exactly once, at the
end, half up to its currency's ISO 4217 minor units (looked up in a table, because "× 100" is wrong
for yen and dinars alike).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext

from backbone.domain.models import RoundingMode

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


def minor_units(currency: str) -> int:
    """Decimal places of `currency` under ISO 4217 (2 unless the table says otherwise)."""
    return MINOR_UNITS.get(currency.upper(), DEFAULT_MINOR_UNITS)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half up to the minor units of `currency`."""
    with localcontext(prec=_WIDE):
        return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


_MINUTE_ROUNDING = {
    RoundingMode.NEAREST: ROUND_HALF_UP,
    RoundingMode.UP: ROUND_CEILING,
    RoundingMode.DOWN: ROUND_FLOOR,
}


def round_minutes(duration_seconds: int, increment: int, mode: RoundingMode) -> int:
    """Billable minutes: the exact minutes rounded to a multiple of `increment` (NEAREST is half up)."""
    if increment < 1:
        raise ValueError(f"a rounding increment must be at least one minute, got {increment}")
    with localcontext(prec=_WIDE):
        steps = Decimal(duration_seconds) / 60 / increment
        whole_steps = steps.quantize(Decimal(1), rounding=_MINUTE_ROUNDING[RoundingMode(mode)])
    return int(whole_steps) * increment


def line_amount(minutes: int, hourly_rate: Decimal, discount_percent: Decimal, currency: str) -> Decimal:
    """HALF_UP(minutes × rate × (100 − discount) / 6000): one rounding, at the end, per line."""
    with localcontext(prec=_WIDE):
        exact = Decimal(minutes) * hourly_rate * (100 - discount_percent) / 6000
    return round_money(exact, currency)


def cost_minutes(duration_seconds: int) -> int:
    """Minutes that carry cost: the exact minutes rounded half up to whole minutes."""
    with localcontext(prec=_WIDE):
        return int((Decimal(duration_seconds) / 60).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def cost_amount(duration_seconds: int, cost_rate: Decimal, cost_currency: str) -> Decimal:
    """HALF_UP(cost_minutes × cost_rate / 60) in the minor units of the cost currency."""
    with localcontext(prec=_WIDE):
        exact = Decimal(cost_minutes(duration_seconds)) * cost_rate / 60
    return round_money(exact, cost_currency)


def hours(billable_minutes: int) -> Decimal:
    """Hours shown to people: billable minutes / 60 to 4 decimals."""
    with localcontext(prec=_WIDE):
        return (Decimal(billable_minutes) / 60).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
