"""billing-rules.md §5: minor units, minute rounding, line and cost amounts (Decimal only)."""

from decimal import Decimal

import pytest

from backbone.domain.models import RoundingMode
from backbone.domain.money import cost_amount, cost_minutes, hours, line_amount, minor_units, round_minutes

D = Decimal


@pytest.mark.parametrize(
    ("currency", "units"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("CHF", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("ISK", 0),
        ("CLP", 0),
        ("VND", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("JOD", 3),
        ("OMR", 3),
        ("TND", 3),
    ],
    ids=lambda v: str(v),
)
def test_minor_units_follow_iso_4217_table(currency: str, units: int) -> None:
    assert minor_units(currency) == units


@pytest.mark.parametrize(
    ("seconds", "increment", "mode", "minutes"),
    [
        pytest.param(3725, 1, RoundingMode.NEAREST, 62, id="worked-example-3725s-nearest-1min-is-62"),
        pytest.param(3725, 15, RoundingMode.UP, 75, id="worked-example-3725s-up-15min-is-75"),
        pytest.param(3725, 15, RoundingMode.DOWN, 60, id="worked-example-3725s-down-15min-is-60"),
        pytest.param(3725, 15, RoundingMode.NEAREST, 60, id="nearest-15-rounds-62min-down"),
        pytest.param(90, 1, RoundingMode.NEAREST, 2, id="nearest-is-half-up-at-exactly-half"),
        pytest.param(89, 1, RoundingMode.NEAREST, 1, id="nearest-below-half-rounds-down"),
        pytest.param(450, 15, RoundingMode.NEAREST, 15, id="nearest-half-increment-rounds-up"),
        pytest.param(3600, 15, RoundingMode.UP, 60, id="up-keeps-exact-multiples"),
        pytest.param(3601, 15, RoundingMode.UP, 75, id="up-is-ceiling"),
        pytest.param(0, 6, RoundingMode.UP, 0, id="zero-duration-is-zero-minutes"),
        pytest.param(359, 6, RoundingMode.DOWN, 0, id="down-is-floor"),
    ],
)
def test_billable_minutes_round_to_the_increment(
    seconds: int, increment: int, mode: RoundingMode, minutes: int
) -> None:
    assert round_minutes(seconds, increment, mode) == minutes


def test_a_rounding_increment_below_one_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one minute"):
        round_minutes(60, 0, RoundingMode.UP)


@pytest.mark.parametrize(
    ("minutes", "rate", "discount", "currency", "amount"),
    [
        pytest.param(62, "150.00", "0", "EUR", "155.00", id="worked-example-62min-at-150-is-155.00"),
        pytest.param(75, "150.00", "0", "EUR", "187.50", id="worked-example-75min-up-is-187.50"),
        pytest.param(60, "150.00", "0", "EUR", "150.00", id="worked-example-60min-down-is-150.00"),
        pytest.param(90, "12000", "10", "JPY", "16200", id="worked-example-jpy-zero-minor-units-with-discount"),
        pytest.param(10, "33.333", "0", "KWD", "5.556", id="worked-example-kwd-three-minor-units-half-up"),
        pytest.param(1, "0.30", "0", "EUR", "0.01", id="half-cent-rounds-up-once-at-the-end"),
        pytest.param(7, "100", "12.5", "USD", "10.21", id="fractional-discount-rounds-once"),
        pytest.param(1, "100", "0", "JPY", "2", id="jpy-rounds-1.67-to-whole-yen"),
        pytest.param(0, "150", "0", "EUR", "0.00", id="zero-minutes-is-zero"),
    ],
)
def test_line_amount_rounds_half_up_once_to_minor_units(
    minutes: int, rate: str, discount: str, currency: str, amount: str
) -> None:
    result = line_amount(minutes, D(rate), D(discount), currency)
    assert result == D(amount)
    assert result.as_tuple().exponent == -minor_units(currency)


@pytest.mark.parametrize(
    ("seconds", "rate", "currency", "minutes", "amount"),
    [
        pytest.param(3725, "60.00", "EUR", 62, "62.00", id="cost-minutes-half-up-62"),
        pytest.param(3690, "60.00", "EUR", 62, "62.00", id="cost-half-minute-rounds-up"),
        pytest.param(3689, "45.50", "EUR", 61, "46.26", id="cost-amount-half-up-to-cents"),
        pytest.param(5400, "7000", "JPY", 90, "10500", id="cost-in-yen-has-no-decimals"),
        pytest.param(600, "20.001", "KWD", 10, "3.334", id="cost-in-dinar-has-three-decimals"),
    ],
)
def test_cost_amount_uses_whole_minutes_and_the_cost_currency(
    seconds: int, rate: str, currency: str, minutes: int, amount: str
) -> None:
    assert cost_minutes(seconds) == minutes
    assert cost_amount(seconds, D(rate), currency) == D(amount)


@pytest.mark.parametrize(("minutes", "shown"), [(62, "1.0333"), (75, "1.2500"), (1, "0.0167")], ids=str)
def test_hours_are_shown_to_four_decimals(minutes: int, shown: str) -> None:
    assert hours(minutes) == D(shown)
