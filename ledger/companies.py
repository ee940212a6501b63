"""Creditor entities."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.i18n import N_
from ledger import audit
from ledger.disputes import ensure_default_reasons
from ledger.banking import BankDetailsError, normalize_bic, normalize_iban
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
    try:
        if fields.get("iban"):
            fields["iban"] = normalize_iban(str(fields["iban"]))
        if fields.get("bic"):
            fields["bic"] = normalize_bic(str(fields["bic"]), iban=fields.get("iban") or None)  # type: ignore[arg-type]
    except BankDetailsError as error:
        raise CompanyError(str(error)) from None
    if session.scalar(select(Company.id).where(Company.code == code)) is not None:
        raise CompanyError(f"company {code!r} already exists")
    company = Company(code=code, name=name.strip(), base_currency=currency, country=country, timezone=timezone, **fields)
    session.add(company)
    session.flush()
    # Debtors must pick a reason to dispute: a company without any could never be disputed with.
    ensure_default_reasons(session, company)
    return company


# --- settings edited in the back-office ---------------------------------------------------------

MAX_LOGO_BYTES = 512 * 1024
MAX_LOGO_SIDE = 4000
LOGO_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
METHODS = ("card", "instant_transfer", "direct_debit", "bank_transfer")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")
_PERCENT = re.compile(r"^\d{1,2}([.,]\d{1,2})?$")


@dataclass(frozen=True)
class Problem:
    """A bad field: its form name, a message id and the values that fill it."""

    field: str
    message: str
    values: dict[str, object] = dataclass_field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.field}: " + (self.message % self.values if self.values else self.message)


class SettingsRejected(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def check_logo(content: bytes) -> str:
    """The MIME type of a PNG or JPEG logo, judged from its content (never its name); raises
    SettingsRejected otherwise."""
    from PIL import Image, UnidentifiedImageError

    if len(content) > MAX_LOGO_BYTES:
        raise SettingsRejected([Problem("logo", N_("The logo is larger than %(size)s KB."),
                                        {"size": MAX_LOGO_BYTES // 1024})])
    try:
        with Image.open(io.BytesIO(content)) as image:
            kind = image.format
            width, height = image.size
            image.verify()  # reads the whole file: a truncated or forged image fails here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        kind = None
    if kind not in LOGO_TYPES:
        raise SettingsRejected([Problem("logo", N_("The logo must be a PNG or JPEG image."))])
    if width > MAX_LOGO_SIDE or height > MAX_LOGO_SIDE:
        raise SettingsRejected([Problem("logo", N_("The logo is larger than %(side)s pixels on a side."),
                                        {"side": MAX_LOGO_SIDE})])
    return LOGO_TYPES[kind]


def settings_state(company: Company) -> dict[str, Any]:
    """What the settings page edits, as the audit trail records it (the logo by its digest)."""
    return {
        "name": company.name,
        "brand_color": company.brand_color,
        "logo": hashlib.sha256(company.logo).hexdigest()[:16] if company.logo else None,
        "iban": company.iban,
        "bic": company.bic,
        "address": company.address,
        "support_email": company.support_email,
        "collections_email": company.collections_email,
        "reminder_from": company.reminder_from,
        "reminder_hour": company.reminder_hour,
        "reminders_enabled": company.reminders_enabled,
        "reminders_need_approval": company.reminders_need_approval,
        "reminder_gap_days": company.reminder_gap_days,
        "disabled_methods": sorted(company.disabled_methods or []),
        "default_discount_bps": company.default_discount_bps,
        "default_discount_days": company.default_discount_days,
        "allow_partial_payments": company.allow_partial_payments,
        "promise_horizon_days": company.promise_horizon_days,
        "promise_grace_days": company.promise_grace_days,
        "link_lifetime_days": company.link_lifetime_days,
        "transfer_expiry_days": company.transfer_expiry_days,
        "base_currency": company.base_currency,
        "timezone": company.timezone,
        "country": company.country,
    }


def _whole(form: Mapping[str, str], name: str, low: int, high: int, problems: list[Problem]) -> int | None:
    text = (form.get(name) or "").strip()
    if not text.isdigit() or not low <= int(text) <= high:
        problems.append(Problem(name, N_("Enter a whole number from %(low)s to %(high)s."),
                                {"low": low, "high": high}))
        return None
    return int(text)


def _email(form: Mapping[str, str], name: str, problems: list[Problem]) -> str | None:
    text = (form.get(name) or "").strip()
    if not text:
        return None
    if len(text) > 254 or not _EMAIL.match(text):
        problems.append(Problem(name, N_("%(value)s is not an email address."), {"value": text}))
    return text


def update_settings(session: Session, company: Company, form: Mapping[str, str], *, logo: bytes | None = None,
                    remove_logo: bool = False, actor: str) -> dict[str, Any]:
    """Apply the settings form all-or-nothing: every bad field is named in SettingsRejected and
    nothing changes; otherwise the changed fields are audited (before/after) and returned.

    Checkboxes: `method_<m>` present means the method is offered, `allow_partial_payments`
    present means partial payments are allowed."""
    problems: list[Problem] = []
    wanted: dict[str, Any] = {}

    name = (form.get("name") or "").strip()
    if not name or len(name) > 200:
        problems.append(Problem("name", N_("Enter a name of 1 to 200 characters.")))
    wanted["name"] = name
    color = (form.get("brand_color") or "").strip()
    if not _COLOR.match(color):
        problems.append(Problem("brand_color", N_("%(value)s is not a colour like #1d4f91."), {"value": color}))
    wanted["brand_color"] = color.lower()

    iban = (form.get("iban") or "").strip()
    if iban:
        try:
            iban = normalize_iban(iban)
        except BankDetailsError as error:
            problems.append(Problem("iban", error.message, error.values))
            iban = ""
    wanted["iban"] = iban or None
    bic = (form.get("bic") or "").strip()
    if bic:
        try:
            bic = normalize_bic(bic, iban=iban or None)
        except BankDetailsError as error:
            problems.append(Problem("bic", error.message, error.values))
    wanted["bic"] = bic or None
    address = (form.get("address") or "").strip()
    if len(address) > 1000:
        problems.append(Problem("address", N_("The address is longer than %(count)s characters."), {"count": 1000}))
    wanted["address"] = address or None
    for field_name in ("support_email", "collections_email", "reminder_from"):
        wanted[field_name] = _email(form, field_name, problems)
    wanted["reminder_hour"] = _whole(form, "reminder_hour", 0, 23, problems)
    # The reminder switches come with a marker field: a form without them leaves them as they are
    # (a checkbox left unticked sends nothing, which must not read as "off" from an older form).
    if form.get("reminder_settings"):
        wanted["reminders_enabled"] = bool(form.get("reminders_enabled"))
        wanted["reminders_need_approval"] = bool(form.get("reminders_need_approval"))
        wanted["reminder_gap_days"] = _whole(form, "reminder_gap_days", 0, 90, problems)

    wanted["disabled_methods"] = [m for m in METHODS if not form.get(f"method_{m}")]
    percent = (form.get("default_discount_percent") or "").strip().removesuffix("%").strip()
    days = (form.get("default_discount_days") or "").strip()
    wanted["default_discount_bps"] = wanted["default_discount_days"] = None
    if percent or days:
        bps = None
        if not _PERCENT.match(percent) or not 0 < Decimal(percent.replace(",", ".")) < 100:
            problems.append(Problem("default_discount_percent",
                                    N_("Enter a percentage above 0 and below 100, with at most 2 decimals.")))
        else:
            bps = int(Decimal(percent.replace(",", ".")).scaleb(2))
        wanted["default_discount_bps"] = bps
        wanted["default_discount_days"] = _whole(form, "default_discount_days", 1, 365, problems)
    wanted["allow_partial_payments"] = bool(form.get("allow_partial_payments"))
    wanted["promise_horizon_days"] = _whole(form, "promise_horizon_days", 1, 365, problems)
    wanted["promise_grace_days"] = _whole(form, "promise_grace_days", 0, 60, problems)
    wanted["link_lifetime_days"] = _whole(form, "link_lifetime_days", 1, 365, problems)
    if "transfer_expiry_days" in form:  # a form from before this field leaves it as it is
        wanted["transfer_expiry_days"] = _whole(form, "transfer_expiry_days", 1, 90, problems)

    currency = (form.get("base_currency") or "").strip()
    try:
        wanted["base_currency"] = check_currency(currency)
    except CurrencyError:
        problems.append(Problem("base_currency", N_("%(value)s is not a currency code like EUR."), {"value": currency}))
    timezone = (form.get("timezone") or "").strip()
    try:
        ZoneInfo(timezone)
        wanted["timezone"] = timezone
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(Problem("timezone", N_("%(value)s is not a timezone like Europe/Paris."), {"value": timezone}))
    country = (form.get("country") or "").strip().upper()
    if len(country) != 2 or country not in Locale("en").territories:
        problems.append(Problem("country", N_("%(value)s is not a country code like FR."), {"value": country}))
    wanted["country"] = country

    logo_mime = None
    if logo:
        try:
            logo_mime = check_logo(logo)
        except SettingsRejected as rejected:
            problems.extend(rejected.problems)
    if problems:
        raise SettingsRejected(problems)

    before = settings_state(company)
    for key, value in wanted.items():
        setattr(company, key, value)
    if logo:
        company.logo, company.logo_mime = logo, logo_mime
    elif remove_logo:
        company.logo = company.logo_mime = None
    after = settings_state(company)
    changed = [key for key in after if before[key] != after[key]]
    if changed:
        audit.record(session, actor_type="user", actor=actor, action="company.settings_changed",
                     entity_type="company", entity_id=company.id, company_id=company.id,
                     before={k: before[k] for k in changed}, after={k: after[k] for k in changed})
    session.flush()
    return {k: after[k] for k in changed}



def set_reminders(session: Session, company: Company, enabled: bool, *, actor_type: str = "user",
                  actor: str | None = None, need_approval: bool | None = None) -> bool:
    """Switch the company's reminders on or off (and, unless None, approval before sending), on
    the audit trail; False when nothing changed."""
    before = {"reminders_enabled": company.reminders_enabled,
              "reminders_need_approval": company.reminders_need_approval}
    company.reminders_enabled = enabled
    if need_approval is not None:
        company.reminders_need_approval = need_approval
    after = {"reminders_enabled": company.reminders_enabled,
             "reminders_need_approval": company.reminders_need_approval}
    changed = [key for key in after if before[key] != after[key]]
    if not changed:
        return False
    audit.record(session, actor_type=actor_type, actor=actor, action="company.settings_changed",
                 entity_type="company", entity_id=company.id, company_id=company.id,
                 before={k: before[k] for k in changed}, after={k: after[k] for k in changed})
    session.flush()
    return True
