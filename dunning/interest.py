"""Statutory late-payment charges between businesses, France and the United Kingdom.

France (Code de commerce, article L441-10): interest is due from the day after the due date,
without any reminder being needed, at the European Central Bank's rate for its most recent
main refinancing operation plus 10 percentage points (when the contract sets no other rate);
the ECB rate used is the one in force on 1 January for the first half of a year and on
1 July for the second half. Every invoice paid late also carries a fixed 40 € recovery
indemnity (article D441-5).

United Kingdom (Late Payment of Commercial Debts (Interest) Act 1998): statutory interest at
the Bank of England base rate plus 8 percentage points, the "reference rate" being the base
rate in force on 31 December (for the half-year from 1 January) or 30 June (for the one from
1 July); and a fixed sum of compensation per debt: £40 under £1,000, £70 from £1,000 to
£9,999.99, £100 from £10,000.

The central bank rates are data, with the day each took effect (`data/reference_rates.csv`),
never constants here: a rate change is one line in that file. The rate an invoice bears is
the one of the half-year its due date falls in (the UK Act fixes it so; for France we take
the same reading).

Interest on one invoice = open amount × rate × days late / 365, in minor units, rounded half
up; integers only, never floats.
"""

from __future__ import annotations

import csv
from bisect import bisect_right
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from ledger.money import Money
from ledger.statement import days_overdue

RATES_FILE = Path(__file__).resolve().parent / "data" / "reference_rates.csv"
DAYS_PER_YEAR = 365
RECOVERY_INDEMNITY = Money(40_00, "EUR")  # France: per invoice paid late, whatever its currency
# UK fixed compensation: (debt below this many pence, compensation in pence); the last band has no ceiling.
UK_COMPENSATION_BANDS: tuple[tuple[int | None, int], ...] = ((1_000_00, 40_00), (10_000_00, 70_00), (None, 100_00))


@dataclass(frozen=True)
class Law:
    """A country's statutory late-payment regime."""

    country: str
    reference_rate: str  # a rate name of the rates file
    margin_bps: int  # percentage points over the reference rate, in basis points
    first_half_reference: tuple[int, int]  # (month, day) whose rate applies from 1 January
    second_half_reference: tuple[int, int]  # (month, day) whose rate applies from 1 July
    reference_in_previous_year: bool  # 31 December of the year before, for the UK


LAWS: dict[str, Law] = {
    "FR": Law("FR", "ecb_mro", 1_000, (1, 1), (7, 1), False),
    "GB": Law("GB", "boe_base", 800, (12, 31), (6, 30), True),
}


class UnknownRate(LookupError):
    pass


@lru_cache(maxsize=1)
def _rates() -> dict[str, tuple[list[date], list[int]]]:
    """Rate name -> (days each value took effect, ascending; values in basis points)."""
    found: dict[str, list[tuple[date, int]]] = {}
    with RATES_FILE.open(encoding="utf-8") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        for row in rows:
            bps = int((Decimal(row["percent"]) * 100).to_integral_exact())
            found.setdefault(row["rate"], []).append((date.fromisoformat(row["effective_from"]), bps))
    return {name: ([d for d, _ in sorted(values)], [b for _, b in sorted(values)]) for name, values in found.items()}


def reference_rate_bps(name: str, on: date) -> int:
    """The value of central bank rate `name` in force on `on`."""
    days, values = _rates().get(name, ([], []))
    index = bisect_right(days, on) - 1
    if index < 0:
        raise UnknownRate(f"no {name} rate known on {on.isoformat()}")
    return values[index]


def law_of(country: str) -> Law | None:
    return LAWS.get(country.upper())


def _reference_day(law: Law, due_date: date) -> date:
    if due_date.month <= 6:
        month, day = law.first_half_reference
        return date(due_date.year - 1 if law.reference_in_previous_year else due_date.year, month, day)
    month, day = law.second_half_reference
    return date(due_date.year, month, day)


def statutory_rate_bps(country: str, due_date: date) -> int | None:
    """The statutory annual rate for an invoice due on `due_date`; None where we know no law."""
    law = law_of(country)
    if law is None:
        return None
    return reference_rate_bps(law.reference_rate, _reference_day(law, due_date)) + law.margin_bps


def fixed_compensation(country: str, open_amount: Money) -> Money | None:
    """The fixed recovery sum one late invoice carries; None where the law sets none for it."""
    match country.upper():
        case "FR":
            return RECOVERY_INDEMNITY
        case "GB" if open_amount.currency == "GBP":
            # The Act's bands are in pounds: an invoice in another currency is not banded here.
            for ceiling, pence in UK_COMPENSATION_BANDS:
                if ceiling is None or open_amount.minor < ceiling:
                    return Money(pence, "GBP")
    return None


def late_interest(open_amount: Money, days: int, rate_bps: int) -> Money:
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
    rate_bps: int
    interest: Money  # in the invoice's currency
    indemnity: Money | None  # the fixed sum (40 EUR in France; £40/£70/£100 in the UK), if any


def late_charges(open_amount: Money, due_date: date, today: date, country: str = "FR") -> LateCharges | None:
    """The interest and the fixed sum due on one invoice; None when it is not late or no law applies."""
    days = days_overdue(due_date, today)  # from the day after the due date: paid on it is 0 days late
    rate_bps = statutory_rate_bps(country, due_date)
    if days <= 0 or open_amount.minor <= 0 or rate_bps is None:
        return None
    return LateCharges(days_late=days, rate_bps=rate_bps, interest=late_interest(open_amount, days, rate_bps),
                       indemnity=fixed_compensation(country, open_amount))


def rate_percent(rate_bps: int) -> str:
    """'12.15' for 1215 bps: for sentences, formatted by the caller's locale if needed."""
    whole, rest = divmod(rate_bps, 100)
    return f"{whole}.{rest:02d}" if rest else str(whole)
