"""Statutory late charges: French interest and the 40 € indemnity (Code de commerce L441-10), UK interest
at base rate + 8 points and £40/£70/£100 compensation; the central bank rates from the dated rates file."""

from __future__ import annotations

from datetime import date

import pytest

from dunning import interest
from dunning.interest import RECOVERY_INDEMNITY, late_charges, late_interest
from ledger.money import Money


def test_the_french_rate_is_the_ecb_rate_of_the_half_year_plus_ten_points() -> None:
    assert interest.reference_rate_bps("ecb_mro", date(2025, 6, 10)) == 240
    assert interest.reference_rate_bps("ecb_mro", date(2025, 6, 11)) == 215
    # The rate in force on 1 January serves the first half-year, on 1 July the second.
    assert interest.statutory_rate_bps("FR", date(2025, 3, 31)) == 315 + 1_000  # 1 Jan 2025: 3.15 %
    assert interest.statutory_rate_bps("FR", date(2025, 9, 30)) == 215 + 1_000  # 1 Jul 2025: 2.15 %
    assert interest.statutory_rate_bps("FR", date(2024, 1, 15)) == 450 + 1_000
    assert interest.rate_percent(1215) == "12.15" and interest.rate_percent(1300) == "13"


def test_the_uk_rate_is_the_bank_of_england_base_rate_of_the_half_year_plus_eight_points() -> None:
    # The reference rate is the one in force on 31 December (for January-June) or 30 June (July-December).
    assert interest.statutory_rate_bps("GB", date(2025, 3, 1)) == 475 + 800  # 31 Dec 2024: 4.75 %
    assert interest.statutory_rate_bps("GB", date(2025, 7, 1)) == 425 + 800  # 30 Jun 2025: 4.25 %
    assert interest.statutory_rate_bps("GB", date(2026, 2, 1)) == 400 + 800  # 31 Dec 2025: 4.00 %
    assert interest.statutory_rate_bps("US", date(2026, 2, 1)) is None


@pytest.mark.parametrize(("open_minor", "expected"), [
    (1_00, 40_00), (999_99, 40_00), (1_000_00, 70_00), (9_999_99, 70_00), (10_000_00, 100_00), (250_000_00, 100_00),
])
def test_uk_fixed_compensation_goes_by_the_amount(open_minor: int, expected: int) -> None:
    assert interest.fixed_compensation("GB", Money(open_minor, "GBP")) == Money(expected, "GBP")


def test_uk_charges_on_a_late_invoice() -> None:
    charges = late_charges(Money(2_000_00, "GBP"), date(2026, 3, 1), date(2026, 4, 10), "GB")
    assert charges is not None and charges.days_late == 40 and charges.rate_bps == 1_200
    assert charges.interest == Money(26_30, "GBP")  # 2,000 × 12 % × 40 / 365 = 26.30
    assert charges.indemnity == Money(70_00, "GBP")


def test_a_rate_before_the_first_known_one_is_refused() -> None:
    with pytest.raises(interest.UnknownRate):
        interest.reference_rate_bps("boe_base", date(2019, 1, 1))


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
    assert late_interest(Money(0, "EUR"), 10, 1215) == Money(0, "EUR")
