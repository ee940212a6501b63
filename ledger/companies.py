"""Creditor entities."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from sqlalchemy import select
from pydantic import BeforeValidator, ValidationInfo, field_validator
from sqlalchemy.orm import Session

from kernel.forms import Form, parse, whole_number
from kernel.i18n import N_
from kernel.user_error import UserError
from ledger import audit
from ledger.disputes import ensure_default_reasons
from ledger.banking import normalize_bic, normalize_iban
from ledger.models import DEBTOR_METHODS, Company, PaymentMethod
from ledger.money import CurrencyError, check_currency

CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


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
        raise UserError(N_("company code %(code)s must be 1-32 letters, digits, '-' or '_'"),
                        code=repr(code)).at(field="code")
    if not name.strip():
        raise UserError(N_("company name is empty")).at(field="name")
    currency = check_currency(currency)
    country = country.strip().upper()
    if country not in Locale("en").territories or len(country) != 2:
        raise UserError(N_("unknown country code %(code)s"), code=repr(country)).at(field="country")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(N_("unknown timezone %(timezone)s"), timezone=repr(timezone)).at(field="timezone") from None
    if fields.get("iban"):
        fields["iban"] = normalize_iban(str(fields["iban"]))
    if fields.get("bic"):
        fields["bic"] = normalize_bic(str(fields["bic"]), iban=fields.get("iban") or None)  # type: ignore[arg-type]
    if session.scalar(select(Company.id).where(Company.code == code)) is not None:
        raise UserError(N_("company %(code)s already exists"), code=repr(code)).at(field="code")
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
METHODS = DEBTOR_METHODS
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")
_PERCENT = re.compile(r"^\d{1,2}([.,]\d{1,2})?$")


@dataclass(frozen=True)
class Logo:
    """An uploaded logo whose content was checked: PNG or JPEG, within the size limits."""

    content: bytes
    mime: str


def check_logo(content: bytes) -> str:
    """The MIME type of a PNG or JPEG logo, judged from its content (never its name); raises
    UserError otherwise."""
    from PIL import Image, UnidentifiedImageError

    if len(content) > MAX_LOGO_BYTES:
        raise UserError(N_("The logo is larger than %(size)s KB."), size=MAX_LOGO_BYTES // 1024).at(field="logo")
    try:
        with Image.open(io.BytesIO(content)) as image:
            kind = image.format
            width, height = image.size
            image.verify()  # reads the whole file: a truncated or forged image fails here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        kind = None
    if kind not in LOGO_TYPES:
        raise UserError(N_("The logo must be a PNG or JPEG image.")).at(field="logo")
    if width > MAX_LOGO_SIDE or height > MAX_LOGO_SIDE:
        raise UserError(N_("The logo is larger than %(side)s pixels on a side."), side=MAX_LOGO_SIDE).at(field="logo")
    return LOGO_TYPES[kind]


def _checked_logo(value: object) -> Logo | None:
    if value is None or isinstance(value, Logo):
        return value
    if not isinstance(value, bytes):
        raise UserError(N_("The logo must be a PNG or JPEG image."))
    return Logo(value, check_logo(value)) if value else None


def _name(value: object) -> str:
    text = str(value or "").strip()
    if not text or len(text) > 200:
        raise UserError(N_("Enter a name of 1 to 200 characters."))
    return text


def _colour(value: object) -> str:
    text = str(value or "").strip()
    if not _COLOR.match(text):
        raise UserError(N_("%(value)s is not a colour like #1d4f91."), value=text)
    return text.lower()


def _optional_email(value: object) -> str | None:
    text = str(value or "").strip()
    if not text:
        return None
    if len(text) > 254 or not _EMAIL.match(text):
        raise UserError(N_("%(value)s is not an email address."), value=text)
    return text


def _address(value: object) -> str | None:
    text = str(value or "").strip()
    if len(text) > 1000:
        raise UserError(N_("The address is longer than %(count)s characters."), count=1000)
    return text or None


def _discount_percent(value: object) -> Decimal | None:
    """None when no discount is asked for; "" (asked for, not given) or a bad percentage is refused."""
    if value is None:
        return None
    text = str(value).strip().removesuffix("%").strip()
    if not _PERCENT.match(text) or not 0 < Decimal(text.replace(",", ".")) < 100:
        raise UserError(N_("Enter a percentage above 0 and below 100, with at most 2 decimals."))
    return Decimal(text.replace(",", "."))


def _currency_code(value: object) -> str:
    text = str(value or "").strip()
    try:
        return check_currency(text)
    except CurrencyError:
        raise UserError(N_("%(value)s is not a currency code like EUR."), value=text) from None


def _timezone(value: object) -> str:
    text = str(value or "").strip()
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(N_("%(value)s is not a timezone like Europe/Paris."), value=text) from None
    return text


def _country(value: object) -> str:
    text = str(value or "").strip().upper()
    if len(text) != 2 or text not in Locale("en").territories:
        raise UserError(N_("%(value)s is not a country code like FR."), value=text)
    return text


def _iban(value: object) -> str | None:
    text = str(value or "").strip()
    return normalize_iban(text) if text else None


class CompanySettings(Form):
    """What the back-office settings form sets, checked: read it with `from_form`, apply it with
    `update_settings`. Field names are the form's, so each problem names its input."""

    name: Annotated[str, BeforeValidator(_name)]
    brand_color: Annotated[str, BeforeValidator(_colour)]
    logo: Annotated[Logo | None, BeforeValidator(_checked_logo)] = None
    remove_logo: bool = False
    iban: Annotated[str | None, BeforeValidator(_iban)] = None
    bic: str | None = None
    address: Annotated[str | None, BeforeValidator(_address)] = None
    support_email: Annotated[str | None, BeforeValidator(_optional_email)] = None
    collections_email: Annotated[str | None, BeforeValidator(_optional_email)] = None
    reminder_from: Annotated[str | None, BeforeValidator(_optional_email)] = None
    reminder_hour: Annotated[int, whole_number(0, 23)]
    # None: the form did not carry the reminder switches, which then stay as they are.
    reminders_enabled: bool | None = None
    reminders_need_approval: bool | None = None
    reminder_gap_days: Annotated[int | None, whole_number(0, 90, optional=True)] = None
    offered_methods: tuple[PaymentMethod, ...] = ()
    default_discount_percent: Annotated[Decimal | None, BeforeValidator(_discount_percent)] = None
    default_discount_days: Annotated[int | None, whole_number(1, 365, optional=True)] = None
    allow_partial_payments: bool = False
    promise_horizon_days: Annotated[int, whole_number(1, 365)]
    promise_grace_days: Annotated[int, whole_number(0, 60)]
    link_lifetime_days: Annotated[int, whole_number(1, 365)]
    # None: a form from before this field leaves the delay as it is.
    transfer_expiry_days: Annotated[int | None, whole_number(1, 90, optional=True)] = None
    base_currency: Annotated[str, BeforeValidator(_currency_code)]
    timezone: Annotated[str, BeforeValidator(_timezone)]
    country: Annotated[str, BeforeValidator(_country)]

    @field_validator("bic", mode="before")
    @classmethod
    def _bic(cls, value: object, info: ValidationInfo) -> str | None:
        text = str(value or "").strip()
        # Of the IBAN's country when the IBAN itself was good.
        return normalize_bic(text, iban=info.data.get("iban")) if text else None

    @property
    def default_discount_bps(self) -> int | None:
        percent = self.default_discount_percent
        return None if percent is None else int(percent.scaleb(2))

    @classmethod
    def from_form(cls, form: Mapping[str, str], *, logo: bytes | None = None) -> CompanySettings:
        """The posted settings form as typed settings, or UserErrors naming every bad field.

        Checkboxes: `method_<m>` present means the method is offered, `allow_partial_payments`
        present means partial payments are allowed. The reminder switches come with a marker
        field: a form without it leaves them as they are (a checkbox left unticked sends
        nothing, which must not read as "off" from an older form). The discount's percentage
        and days go together: both empty is no default discount."""
        data: dict[str, Any] = {name: form.get(name) for name in (
            "name", "brand_color", "iban", "bic", "address", "support_email", "collections_email", "reminder_from",
            "reminder_hour", "promise_horizon_days", "promise_grace_days", "link_lifetime_days", "base_currency",
            "timezone", "country")}
        data["remove_logo"] = bool(form.get("remove_logo"))
        data["logo"] = logo or None
        if form.get("reminder_settings"):
            data["reminders_enabled"] = bool(form.get("reminders_enabled"))
            data["reminders_need_approval"] = bool(form.get("reminders_need_approval"))
            data["reminder_gap_days"] = form.get("reminder_gap_days") or ""
        data["offered_methods"] = tuple(m for m in METHODS if form.get(f"method_{m}"))
        percent = (form.get("default_discount_percent") or "").strip()
        days = (form.get("default_discount_days") or "").strip()
        if percent or days:
            data["default_discount_percent"], data["default_discount_days"] = percent, days
        data["allow_partial_payments"] = bool(form.get("allow_partial_payments"))
        if "transfer_expiry_days" in form:
            data["transfer_expiry_days"] = form.get("transfer_expiry_days") or ""
        return parse(cls, data)


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


def update_settings(session: Session, company: Company, settings: CompanySettings, *, actor: str) -> dict[str, Any]:
    """Apply checked settings (`CompanySettings.from_form`): the changed fields are audited
    (before/after) and returned."""
    wanted: dict[str, Any] = {
        "name": settings.name, "brand_color": settings.brand_color, "iban": settings.iban, "bic": settings.bic,
        "address": settings.address, "support_email": settings.support_email,
        "collections_email": settings.collections_email, "reminder_from": settings.reminder_from,
        "reminder_hour": settings.reminder_hour,
        "disabled_methods": [str(m) for m in METHODS if m not in settings.offered_methods],
        "default_discount_bps": settings.default_discount_bps, "default_discount_days": settings.default_discount_days,
        "allow_partial_payments": settings.allow_partial_payments,
        "promise_horizon_days": settings.promise_horizon_days, "promise_grace_days": settings.promise_grace_days,
        "link_lifetime_days": settings.link_lifetime_days, "base_currency": settings.base_currency,
        "timezone": settings.timezone, "country": settings.country,
    }
    if settings.transfer_expiry_days is not None:
        wanted["transfer_expiry_days"] = settings.transfer_expiry_days
    if settings.reminders_enabled is not None:
        wanted["reminders_enabled"] = settings.reminders_enabled
        wanted["reminders_need_approval"] = bool(settings.reminders_need_approval)
        wanted["reminder_gap_days"] = settings.reminder_gap_days

    before = settings_state(company)
    for key, value in wanted.items():
        setattr(company, key, value)
    if settings.logo is not None:
        company.logo, company.logo_mime = settings.logo.content, settings.logo.mime
    elif settings.remove_logo:
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
