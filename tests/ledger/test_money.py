from __future__ import annotations

import pytest

from ledger.money import AmountError, CurrencyError, Money, decimals


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("1234.56", "EUR", 123456),
        ("1 234,56", "EUR", 123456),
        ("1.234,56", "EUR", 123456),
        ("1,234.56", "USD", 123456),
        ("12", "EUR", 1200),
        ("1500", "JPY", 1500),
        ("12.345", "KWD", 12345),
        ("0,5", "TND", 500),
    ],
)
def test_parse_respects_each_currencys_decimals(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(("text", "currency"), [("12.5", "JPY"), ("1.234", "EUR"), ("abc", "EUR"), ("", "EUR"),
                                                 ("NaN", "EUR"), ("Infinity", "EUR")])
def test_parse_refuses_what_it_cannot_represent(text: str, currency: str) -> None:
    with pytest.raises(AmountError):
        Money.parse(text, currency)


def test_unknown_currency_is_refused() -> None:
    for code in ("XYZ", "EURO", "", "12€"):
        with pytest.raises(CurrencyError):
            Money(1, code)


def test_currencies_are_never_mixed() -> None:
    with pytest.raises(CurrencyError):
        Money(1, "EUR") + Money(1, "GBP")
    with pytest.raises(TypeError):
        Money(1.5, "EUR")  # type: ignore[arg-type]


def test_decimals_and_formatting_by_locale() -> None:
    assert (decimals("EUR"), decimals("JPY"), decimals("KWD")) == (2, 0, 3)
    nbsp = lambda s: s.replace("\u202f", " ").replace("\u00a0", " ")  # noqa: E731
    assert nbsp(Money(123456, "EUR").format("fr_FR")) == "1 234,56 €"
    assert Money(123456, "GBP").format("en_GB") == "£1,234.56"
    assert nbsp(Money(1500, "JPY").format("fr_FR")) == "1 500 JPY"


def test_percent_rounds_half_up_in_minor_units() -> None:
    assert Money(1234_56, "EUR").percent_bps(200) == Money(2469, "EUR")
    assert Money(25, "EUR").percent_bps(200) == Money(1, "EUR")  # 0.5 → 1
    assert Money(24, "EUR").percent_bps(200) == Money(0, "EUR")
