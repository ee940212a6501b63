"""What staff type in an amount field (a dispute's credit, a scenario's minimum, a bank match's
amount per invoice), read one way: `Money.parse` in the currency's precision, or None."""

from __future__ import annotations

from ledger.money import AmountError, Money


def typed_amount(text: str, currency: str) -> Money | None:
    """The amount typed (`1 234,56`, `1234.56`...); None when it is not one in `currency`, so the
    page says which field and what to type in its own words."""
    try:
        return Money.parse(text, currency)
    except AmountError:
        return None
