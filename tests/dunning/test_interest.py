"""French late-payment interest and the 40 € recovery indemnity (Code de commerce L441-10)."""

from __future__ import annotations

from datetime import date

import pytest

from dunning import interest
from dunning.interest import RECOVERY_INDEMNITY, late_charges, late_interest
from ledger.money import Money


def test_the_default_rate_is_the_ecb_rate_plus_ten_points() -> None:
    assert interest.LATE_PAYMENT_RATE_BPS == interest.ECB_MAIN_REFINANCING_RATE_BPS + 1_000
    assert interest.rate_percent(1215) == "12.15" and interest.rate_percent(1300) == "13"


@pytest.mark.parametrize(
    ("open_minor", "days", "rate_bps", "expected"),
    [
        (1000_00, 365, 1215, 121_50),  # a whole year at 12.15 %
        (1000_00, 40, 1215, 13_32),  # 13.3150… rounds up
        (1234_56, 55, 1215, 22_60),  # 22.6030…
        (100, 1, 1215, 0),  # 0.0033 of a cent
        (10_000_00, 30, 1350, 110_96),  # 110.958…
        (73_00, 1, 10_000, 20),  # 0.2000 exactly
        (365_00, 1, 50, 1),  # 0.005 exactly: half up
    ],
)
def test_interest_is_open_times_rate_times_days_over_365_rounded_half_up(
    open_minor: int, days: int, rate_bps: int, expected: int
) -> None:
    assert late_interest(Money(open_minor, "EUR"), days, rate_bps) == Money(expected, "EUR")


def test_interest_keeps_the_invoice_currency_and_its_precision() -> None:
    assert late_interest(Money(1_000_000, "JPY"), 365, 1215) == Money(121_500, "JPY")
    assert late_interest(Money(1_000_000, "KWD"), 73, 1000).currency == "KWD"


def test_interest_uses_integers_only() -> None:
    huge = Money(10**15, "EUR")  # far beyond a float's exact range once multiplied
    result = late_interest(huge, 1000, 1215)
    assert result.minor == (10**15 * 1215 * 1000 * 2 + 10_000 * 365) // (2 * 10_000 * 365)


def test_charges_start_the_day_after_the_due_date() -> None:
    due = date(2026, 10, 31)
    assert late_charges(Money(100_00, "EUR"), due, date(2026, 10, 31)) is None
    assert late_charges(Money(100_00, "EUR"), due, date(2026, 10, 1)) is None
    charges = late_charges(Money(1000_00, "EUR"), due, date(2026, 12, 10))
    assert charges is not None
    assert charges.days_late == 40
    assert charges.interest == Money(13_32, "EUR")
    assert charges.indemnity == RECOVERY_INDEMNITY == Money(40_00, "EUR")


def test_nothing_is_due_on_a_settled_invoice() -> None:
    assert late_charges(Money(0, "EUR"), date(2026, 1, 1), date(2026, 12, 1)) is None
    assert late_interest(Money(0, "EUR"), 10) == Money(0, "EUR")
