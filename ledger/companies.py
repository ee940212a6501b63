"""Creditor entities."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.models import Company
from ledger.money import CurrencyError, check_currency

CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


class CompanyError(ValueError):
    pass


def create_company(
    session: Session,
    *,
    code: str,
    name: str,
    currency: str,
    country: str = "FR",
    timezone: str = "Europe/Paris",
    **fields: object,
) -> Company:
    if not CODE_PATTERN.match(code):
        raise CompanyError(f"company code {code!r} must be 1-32 letters, digits, '-' or '_'")
    if not name.strip():
        raise CompanyError("company name is empty")
    try:
        currency = check_currency(currency)
    except CurrencyError as error:
        raise CompanyError(str(error)) from None
    country = country.strip().upper()
    if country not in Locale("en").territories or len(country) != 2:
        raise CompanyError(f"unknown country code {country!r}")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise CompanyError(f"unknown timezone {timezone!r}") from None
    if session.scalar(select(Company.id).where(Company.code == code)) is not None:
        raise CompanyError(f"company {code!r} already exists")
    company = Company(code=code, name=name.strip(), base_currency=currency, country=country, timezone=timezone, **fields)
    session.add(company)
    session.flush()
    return company
