"""Exact conversions between decimal amounts and integer minor units, by ISO 4217.

Stripe counts money in integer minor units of the currency: cents for EUR and USD, whole yen for JPY,
fils (thousandths) for KWD and BHD. `to_minor_units` refuses an amount finer than its currency allows
instead of rounding it: the billing engine must receive exactly what the backbone priced. The table of
minor units is `backbone.domain.money.minor_units`, the one the pricing rules round with.
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext

from backbone.domain.money import minor_units

_DECIMAL = re.compile(r"^-?[0-9]{1,15}(\.[0-9]{1,4})?$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


class AmountError(ValueError):
    """An amount or currency that cannot be represented exactly."""


def check_currency(currency: str) -> str:
    if not _CURRENCY.match(currency):
        raise AmountError(f"{currency!r} is not a three-letter ISO 4217 currency code")
    return currency


def to_minor_units(amount: Decimal, currency: str) -> int:
    """`amount` in integer minor units of `currency`; AmountError when that is not exact."""
    places = minor_units(check_currency(currency))
    with localcontext(prec=60):
        scaled = amount.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{amount} {currency.upper()} has more than {places} decimal places")
    return int(scaled)


def from_minor_units(units: int, currency: str) -> Decimal:
    """The decimal amount of `units` minor units of `currency`, with exactly its decimal places."""
    places = minor_units(check_currency(currency))
    return Decimal(units).scaleb(-places).quantize(Decimal(1).scaleb(-places))


_PLACES: dict[str, int] = {}
"""Minor units of the currencies seen, after their code was checked once."""


def minor_units_text(units: int, currency: str) -> str:
    """`str(from_minor_units(units, currency))`, by integer arithmetic: every item a billing simulator
    answers shows its amount this way, and the decimal arithmetic was a few per cent of its CPU."""
    places = _PLACES.get(currency)
    if places is None:
        places = _PLACES[currency] = minor_units(check_currency(currency))
    if places == 0:
        return str(units)
    whole, fraction = divmod(abs(units), 10**places)
    return f"{'-' if units < 0 else ''}{whole}.{fraction:0{places}d}"


def parse_decimal(text: str) -> Decimal:
    """A decimal string (`"-150.00"`): at most 15 integer digits and 4 decimals; floats never get here."""
    if not _DECIMAL.match(text):
        raise AmountError(f'{text!r} is not a decimal string like "150.00" or "-12.5"')
    return Decimal(text)


def fits_currency(amount: Decimal, currency: str) -> bool:
    """True when `amount` has no more decimal places than `currency`'s minor units (written with at most
    that many decimals, it does without the conversion's decimal context)."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -minor_units(check_currency(currency)):
        return True
    try:
        to_minor_units(amount, currency)
    except AmountError:
        return False
    return True
