"""French late-payment charges between professionals (Code de commerce, article L441-10).

The rule: late-payment interest is due from the day after the due date, without any reminder
being needed, at the rate the contract sets (never below three times the legal interest rate)
or, when it sets none, at the European Central Bank's rate for its most recent main
refinancing operation plus 10 percentage points. The ECB rate used is the one in force on
1 January for the first half of a year and on 1 July for the second half. On top of it,
every invoice paid late carries a fixed 40 € recovery indemnity (article D441-5).

Assumption, to check every half-year: the last ECB main refinancing rate we know of is
2.15 % (in force since 11 June 2025), so the default annual rate is 12.15 %. A company whose
terms set another rate, or a newer ECB rate, changes `LATE_PAYMENT_RATE_BPS` (a company
setting when the back-office can edit it).

Interest on one invoice = open amount × rate × days late / 365, in minor units, rounded half
up; integers only, never floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ledger.money import Money
from ledger.statement import days_overdue

ECB_MAIN_REFINANCING_RATE_BPS = 215  # 2.15 %, in force on 1 July 2025
STATUTORY_MARGIN_BPS = 1_000  # "majoré de 10 points de pourcentage"
LATE_PAYMENT_RATE_BPS = ECB_MAIN_REFINANCING_RATE_BPS + STATUTORY_MARGIN_BPS  # 12.15 % a year
RECOVERY_INDEMNITY = Money(40_00, "EUR")  # per invoice paid late, whatever its currency
DAYS_PER_YEAR = 365


def late_interest(open_amount: Money, days: int, rate_bps: int = LATE_PAYMENT_RATE_BPS) -> Money:
    """open × rate × days / 365, rounded half up to the minor unit of the invoice's currency."""
    if days <= 0 or open_amount.minor <= 0:
        return Money.zero(open_amount.currency)
    numerator = open_amount.minor * rate_bps * days
    denominator = 10_000 * DAYS_PER_YEAR
    quotient, remainder = divmod(numerator, denominator)
    if remainder * 2 >= denominator:
        quotient += 1
    return Money(quotient, open_amount.currency)


@dataclass(frozen=True)
class LateCharges:
    """What one late invoice owes on top of its open amount."""

    days_late: int
    interest: Money  # in the invoice's currency
    indemnity: Money  # always 40 EUR


def late_charges(open_amount: Money, due_date: date, today: date,
                 rate_bps: int = LATE_PAYMENT_RATE_BPS) -> LateCharges | None:
    """The interest and the indemnity due on one invoice; None when it is not late."""
    days = days_overdue(due_date, today)  # from the day after the due date: paid on it is 0 days late
    if days <= 0 or open_amount.minor <= 0:
        return None
    return LateCharges(days_late=days, interest=late_interest(open_amount, days, rate_bps),
                       indemnity=RECOVERY_INDEMNITY)


def rate_percent(rate_bps: int = LATE_PAYMENT_RATE_BPS) -> str:
    """'12.15' for 1215 bps: for sentences, formatted by the caller's locale if needed."""
    whole, rest = divmod(rate_bps, 100)
    return f"{whole}.{rest:02d}" if rest else str(whole)
