"""Languages, message catalogs and locale-aware formatting (Babel)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency, get_currency_name, get_currency_precision
from babel.support import NullTranslations, Translations


LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"
# The territory picks number and date conventions: French for fr, British for en (£1,234.56).
FORMAT_LOCALES = {"fr": "fr_FR", "en": "en_GB"}
LOCALE_DIR = Path(__file__).resolve().parent / "locale"


def normalize(language: str | None) -> str:
    code = (language or "").strip().lower()[:2]
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


@lru_cache(maxsize=None)
def translations(language: str) -> NullTranslations:
    return Translations.load(str(LOCALE_DIR), [normalize(language)], domain="messages")


def gettext(language: str, message: str, **values: object) -> str:
    text = translations(language).gettext(message)
    return text % values if values else text


def N_(message: str) -> str:
    """Marks a message for extraction where it is translated later."""
    return message


def negotiate(accept_language: str | None) -> str:
    """The best of our languages for an Accept-Language header."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    weighted = []
    for part in accept_language.split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        weighted.append((quality, tag.strip().lower()[:2]))
    for _, tag in sorted(weighted, key=lambda item: -item[0]):
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE


# Formatting is pure and pages repeat the same amounts and dates (a 200-invoice statement
# formats about a thousand of them): Babel parsing its locale and pattern on every call was
# most of that page's time. Parsed Locale objects are kept, and results are memoized.
@lru_cache(maxsize=None)
def _format_locale(language: str) -> Locale:
    return Locale.parse(FORMAT_LOCALES[normalize(language)])


class _Amount(Protocol):
    """What `format_money` reads of `ledger.money.Money` (the kernel imports no domain package)."""

    @property
    def minor(self) -> int: ...

    @property
    def currency(self) -> str: ...


def format_money(money: _Amount, language: str) -> str:
    return _format_money(money.minor, money.currency, language)


def format_minor(minor: int, currency: str, language: str) -> str:
    """`format_money` of an amount still in minor units: no Money object built per row."""
    return _format_money(minor, currency, language)


@lru_cache(maxsize=16384)
def _format_money(minor: int, currency: str, language: str) -> str:
    amount = Decimal(minor).scaleb(-get_currency_precision(currency))
    return format_currency(amount, currency, locale=_format_locale(language))


@lru_cache(maxsize=8192)
def format_day(day: date, language: str, style: str = "medium") -> str:
    return format_date(day, format=style, locale=_format_locale(language))


@lru_cache(maxsize=4096)
def day_month(day: date, language: str) -> str:
    """'12 December' / '12 décembre', for sentences."""
    return format_date(day, format="d MMMM", locale=_format_locale(language))


def language_name(language: str) -> str:
    """The language's name in itself: 'français', 'English'."""
    name = Locale.parse(language).get_display_name(language) or language
    return name[:1].upper() + name[1:] if language == "en" else name


def currency_name(code: str, language: str) -> str:
    name = get_currency_name(code, locale=FORMAT_LOCALES[normalize(language)])
    return name[:1].upper() + name[1:]
