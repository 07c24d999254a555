"""billing-rules.md §5 as hand-worked literals: discounts, half-up ties and currency scale.

Every expected value below was worked out by hand from the rule (the working is in each case's id or
comment), never computed with the code under test. Each case is checked twice: against
`backbone.domain.money` and against the independent `reference_pricing`, so the reference that the
interleaving test trusts is itself held to the same literals. The ties are chosen where half-even
rounding would land on the other side (the digit before the 5 is even), and scale is compared as
text ("16200", "5.556"), because `Decimal("16200.00") == Decimal("16200")`.
"""

from decimal import Decimal

import pytest
import reference_pricing as ref

from backbone.domain.models import RoundingMode
from backbone.domain.money import cost_amount, cost_minutes, line_amount, round_minutes

D = Decimal


@pytest.mark.parametrize(
    ("minutes", "rate", "discount", "currency", "amount"),
    [
        # discount before the single rounding: 3 × 150.10 × 90 / 6000 = 6.7545 → 6.75;
        # rounding the gross first gives 7.505 → 7.51, × 0.9 = 6.759 → 6.76
        pytest.param(3, "150.10", "10", "EUR", "6.75", id="discount-is-applied-before-the-only-rounding"),
        # 60 × 100 × 66.6667 / 6000 = 66.6667 → 66.67
        pytest.param(60, "100", "33.3333", "EUR", "66.67", id="four-decimal-discount-rounds-once"),
        # 60 × 150 × 90 / 6000 = 135
        pytest.param(60, "150.00", "10", "EUR", "135.00", id="ten-percent-discount-on-an-hour"),
        pytest.param(60, "150.00", "100", "EUR", "0.00", id="full-discount-is-zero-at-currency-scale"),
        # 1 × 150.30 / 60 = 2.505 → 2.51 (half-even: 2.50)
        pytest.param(1, "150.30", "0", "EUR", "2.51", id="half-up-tie-after-even-cent-rounds-up"),
        # 9 × 150.50 / 60 = 22.575 → 22.58 (half-down: 22.57)
        pytest.param(9, "150.50", "0", "EUR", "22.58", id="half-up-tie-after-odd-cent-rounds-up"),
        # 62 × 150 × 87.5 / 6000 = 135.625 → 135.63 (half-even: 135.62)
        pytest.param(62, "150", "12.5", "EUR", "135.63", id="half-up-tie-with-discount-after-even-cent"),
        # 3 × 12010 / 60 = 600.5 → 601 (half-even: 600)
        pytest.param(3, "12010", "0", "JPY", "601", id="jpy-zero-decimals-half-up-tie-after-even-yen"),
        # 6 × 250 × 50 / 6000 = 12.5 → 13 (half-even: 12)
        pytest.param(6, "250", "50", "JPY", "13", id="jpy-zero-decimals-half-up-tie-with-discount"),
        # 90 × 12000 × 90 / 6000 = 16200
        pytest.param(90, "12000", "10", "JPY", "16200", id="jpy-worked-example-has-no-decimals"),
        pytest.param(60, "12000", "0", "JPY", "12000", id="jpy-whole-hour-has-no-decimals"),
        # 10 × 33.333 / 60 = 5.5555 → 5.556
        pytest.param(10, "33.333", "0", "KWD", "5.556", id="kwd-worked-example-has-three-decimals"),
        # 6 × 20.005 / 60 = 2.0005 → 2.001 (half-even: 2.000)
        pytest.param(6, "20.005", "0", "KWD", "2.001", id="kwd-three-decimals-half-up-tie-after-even-fils"),
        pytest.param(60, "12", "0", "KWD", "12.000", id="kwd-whole-amount-keeps-three-decimals"),
        # 60 × 10.001 × 50 / 6000 = 5.0005 → 5.001 (half-even: 5.000)
        pytest.param(60, "10.001", "50", "BHD", "5.001", id="bhd-three-decimals-half-up-tie-with-discount"),
        # 30 × 7.30 / 60 = 3.65 → 3.650
        pytest.param(30, "7.30", "0", "BHD", "3.650", id="bhd-two-decimal-result-is-shown-with-three"),
        # 7 × 100 × 87.5 / 6000 = 10.2083.. → 10.21
        pytest.param(7, "100", "12.5", "USD", "10.21", id="usd-two-decimals-below-half-rounds-down"),
        # the working precision must hold every digit until the one rounding: 60 × r × 100 / 6000 = r
        pytest.param(
            60,
            "1234567890123456789012345678.9",
            "0",
            "EUR",
            "1234567890123456789012345678.90",
            id="a-29-digit-amount-is-still-rounded-only-once",
        ),
        # 3 × r × 90 / 6000 = r × 0.045 = 55555555055555555505555555.5505 → .55
        pytest.param(
            3,
            "1234567890123456789012345678.9",
            "10",
            "EUR",
            "55555555055555555505555555.55",
            id="a-29-digit-rate-with-discount-is-rounded-only-once",
        ),
    ],
)
def test_line_amount_matches_the_hand_worked_figure(
    minutes: int, rate: str, discount: str, currency: str, amount: str
) -> None:
    produced = line_amount(minutes, D(rate), D(discount), currency)
    assert str(produced) == amount
    assert str(ref.line_amount(minutes, D(rate), D(discount), currency)) == amount


@pytest.mark.parametrize(
    ("seconds", "increment", "mode", "minutes"),
    [
        # 150 s = 2.5 min → 3 (half-even: 2)
        pytest.param(150, 1, RoundingMode.NEAREST, 3, id="nearest-2.5-min-rounds-up-to-3"),
        # 3630 s = 60.5 min → 61 (half-even: 60)
        pytest.param(3630, 1, RoundingMode.NEAREST, 61, id="nearest-60.5-min-rounds-up-to-61"),
        # 2250 s = 37.5 min = 2.5 increments of 15 → 3 → 45 (half-even: 30)
        pytest.param(2250, 15, RoundingMode.NEAREST, 45, id="nearest-2.5-increments-round-up-to-45"),
        # 2249 s = 37.48 min = 2.499 increments → 2 → 30
        pytest.param(2249, 15, RoundingMode.NEAREST, 30, id="nearest-just-below-half-rounds-down"),
        # 3601 s = 60.02 min = 10.003 increments of 6 → 11 → 66
        pytest.param(3601, 6, RoundingMode.UP, 66, id="up-is-ceiling-for-one-second-over"),
        # 3599 s = 59.98 min = 9.997 increments of 6 → 9 → 54
        pytest.param(3599, 6, RoundingMode.DOWN, 54, id="down-is-floor-for-one-second-under"),
        pytest.param(2250, 15, RoundingMode.DOWN, 30, id="down-drops-half-an-increment"),
        pytest.param(2250, 15, RoundingMode.UP, 45, id="up-raises-half-an-increment"),
    ],
)
def test_billable_minutes_match_the_hand_worked_figure(
    seconds: int, increment: int, mode: RoundingMode, minutes: int
) -> None:
    assert round_minutes(seconds, increment, mode) == minutes
    assert ref.billable_minutes(seconds, increment, mode) == minutes


@pytest.mark.parametrize(
    ("seconds", "minutes"),
    [
        pytest.param(29, 0, id="cost-under-half-a-minute-is-zero-minutes"),
        pytest.param(30, 1, id="cost-0.5-min-rounds-up-to-1"),
        pytest.param(150, 3, id="cost-2.5-min-rounds-up-to-3"),
        pytest.param(3630, 61, id="cost-60.5-min-rounds-up-to-61"),
        pytest.param(3689, 61, id="cost-61.48-min-rounds-down-to-61"),
    ],
)
def test_cost_minutes_are_half_up_whole_minutes(seconds: int, minutes: int) -> None:
    assert cost_minutes(seconds) == minutes
    assert ref.cost_minutes(seconds) == minutes


@pytest.mark.parametrize(
    ("seconds", "rate", "currency", "amount"),
    [
        # 150 s → 3 min (half-even would say 2 → 2.00); 3 × 60 / 60 = 3.00
        pytest.param(150, "60.00", "EUR", "3.00", id="cost-of-2.5-min-is-3-min"),
        # 3630 s → 61 min; 61 × 60 / 60 = 61.00
        pytest.param(3630, "60.00", "EUR", "61.00", id="cost-of-60.5-min-is-61-min"),
        # 60 s → 1 min; 1 × 150.30 / 60 = 2.505 → 2.51
        pytest.param(60, "150.30", "GBP", "2.51", id="cost-amount-half-up-tie-after-even-penny"),
        # 150 s → 3 min; 3 × 7000 / 60 = 350
        pytest.param(150, "7000", "JPY", "350", id="cost-in-yen-has-no-decimals"),
        # 360 s → 6 min; 6 × 20.005 / 60 = 2.0005 → 2.001
        pytest.param(360, "20.005", "KWD", "2.001", id="cost-in-dinar-half-up-tie-has-three-decimals"),
        # 3600 s → 60 min; 60 × r / 60 = r, every digit kept until the one rounding
        pytest.param(
            3600,
            "1234567890123456789012345678.9",
            "EUR",
            "1234567890123456789012345678.90",
            id="cost-of-a-29-digit-rate-is-rounded-only-once",
        ),
    ],
)
def test_cost_amount_matches_the_hand_worked_figure(seconds: int, rate: str, currency: str, amount: str) -> None:
    assert str(cost_amount(seconds, D(rate), currency)) == amount
    assert str(ref.cost_amount(seconds, D(rate), currency)) == amount
