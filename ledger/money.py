"""Money as integer minor units of one currency; Decimal only at the edges."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import format_currency, get_currency_precision, is_currency

from kernel.i18n import N_, format_money
from kernel.user_error import UserError


class CurrencyError(UserError):
    """A currency code that is not one (callers catch it to say which field held it)."""


class AmountError(UserError):
    """Text that is not an amount in the currency (callers catch it to say which field held it)."""


@lru_cache(maxsize=512)
def check_currency(code: str) -> str:
    """The upper-cased ISO 4217 code, or CurrencyError naming it."""
    normalized = (code or "").strip().upper()
    if len(normalized) != 3 or not normalized.isalpha() or not is_currency(normalized):
        raise CurrencyError(N_("unknown currency %(value)s"), value=repr(code))
    return normalized


@lru_cache(maxsize=512)
def decimals(currency: str) -> int:
    """Minor-unit digits of a currency (EUR 2, JPY 0, KWD 3)."""
    return get_currency_precision(check_currency(currency))


@dataclass(frozen=True, order=False)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise TypeError(f"Money.minor must be an int, got {type(self.minor).__name__}")
        object.__setattr__(self, "currency", check_currency(self.currency))

    @classmethod
    def zero(cls, currency: str) -> "Money":
        return cls(0, currency)

    @classmethod
    def parse(cls, text: str, currency: str) -> "Money":
        """Parse '1234.56', '1 234,56' or '1234' in the currency's precision.

        A value with more decimals than the currency has is refused, never rounded.
        """
        currency = check_currency(currency)
        raw = (text or "").strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
        if not raw:
            raise AmountError(N_("amount is empty"))
        if "," in raw and "." in raw:
            # The last separator is the decimal one; the other groups thousands.
            if raw.rfind(",") > raw.rfind("."):
                raw = raw.replace(".", "").replace(",", ".")
            else:
                raw = raw.replace(",", "")
        else:
            raw = raw.replace(",", ".")
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise AmountError(N_("%(value)s is not an amount"), value=repr(text)) from None
        if not value.is_finite():
            raise AmountError(N_("%(value)s is not an amount"), value=repr(text))
        places = decimals(currency)
        scaled = value.scaleb(places)
        if scaled != scaled.to_integral_value():
            raise AmountError(N_("%(value)s has more than %(places)s decimals for %(currency)s"), value=repr(text),
                              places=places, currency=currency)
        return cls(int(scaled), currency)

    def to_decimal(self) -> Decimal:
        return Decimal(self.minor).scaleb(-decimals(self.currency))

    def format(self, locale: str = "en") -> str:
        return format_currency(self.to_decimal(), self.currency, locale=locale)

    def _same(self, other: "Money") -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyError(N_("cannot combine %(currency)s with %(other)s"), currency=self.currency,
                                other=other.currency)

    def __add__(self, other: "Money") -> "Money":
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: "Money") -> "Money":
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> "Money":
        return Money(-self.minor, self.currency)

    def __lt__(self, other: "Money") -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: "Money") -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: "Money") -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: "Money") -> bool:
        self._same(other)
        return self.minor >= other.minor

    def __bool__(self) -> bool:
        return self.minor != 0

    def percent_bps(self, bps: int) -> "Money":
        """bps/10000 of this amount, rounded half up to the minor unit."""
        numerator = self.minor * bps
        quotient, remainder = divmod(abs(numerator), 10_000)
        if remainder * 2 >= 10_000:
            quotient += 1
        return Money(quotient if numerator >= 0 else -quotient, self.currency)

    def __str__(self) -> str:
        return f"{self.to_decimal()} {self.currency}"

    def localized(self, language: str) -> str:
        """As a message shows it to a reader of `language` (kernel.user_error)."""
        return format_money(self, language)
