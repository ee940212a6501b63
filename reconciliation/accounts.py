"""A company's bank accounts: statements are booked to the company whose account they name."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.i18n import N_
from kernel.user_error import UserError
from ledger import audit
from ledger.banking import normalize_bic, normalize_iban
from ledger.models import BankAccount, Company
from ledger.money import CurrencyError, check_currency


def company_by_code(session: Session, code: str) -> Company:
    company = session.scalar(select(Company).where(Company.code == code))
    if company is None:
        raise UserError(N_("No company has the code %(code)s."), code=code)
    return company


def add_account(
    session: Session,
    company_code: str,
    *,
    iban: str,
    bic: str | None = None,
    currency: str | None = None,
    label: str | None = None,
    actor: str | None = None,
) -> BankAccount:
    """Register an account of the company; its currency defaults to the company's.

    The first account also becomes the company's transfer details (the IBAN the portal shows)
    when none were set."""
    company = company_by_code(session, company_code)
    iban = normalize_iban(iban)
    bic = normalize_bic(bic, iban=iban) if bic else None
    try:
        currency = check_currency(currency or company.base_currency)
    except CurrencyError:
        raise UserError(N_("%(value)s is not an ISO 4217 currency code."), value=currency) from None
    existing = session.scalar(select(BankAccount).where(BankAccount.iban == iban))
    if existing is not None:
        owner = session.get_one(Company, existing.company_id)
        raise UserError(N_("The account %(iban)s is already registered to company %(code)s."),
                                  iban=iban, code=owner.code)
    account = BankAccount(company_id=company.id, iban=iban, bic=bic, currency=currency,
                          label=(label or "").strip() or None, active=True)
    session.add(account)
    if not company.iban:
        company.iban, company.bic = iban, bic
    session.flush()
    audit.record(session, actor_type="user" if actor else "system", actor=actor or "cli",
                 action="bank_account.added", entity_type="company", entity_id=company.id,
                 after={"iban": iban, "bic": bic, "currency": currency})
    return account


def list_accounts(session: Session, company_code: str) -> list[BankAccount]:
    company = company_by_code(session, company_code)
    return list(session.scalars(select(BankAccount).where(BankAccount.company_id == company.id)
                                .order_by(BankAccount.id)))


def account_for_iban(session: Session, iban: str) -> BankAccount | None:
    """The registered account, or one made from a company's own transfer details (Company.iban)."""
    account = session.scalar(select(BankAccount).where(BankAccount.iban == iban))
    if account is not None:
        return account
    company = session.scalar(select(Company).where(Company.iban == iban))
    if company is None:
        return None
    account = BankAccount(company_id=company.id, iban=iban, bic=company.bic, currency=company.base_currency,
                          label=None, active=True)
    session.add(account)
    session.flush()
    return account


def set_account_active(session: Session, account_id: int, company_ids: list[int] | None, active: bool,
                       actor: str) -> BankAccount:
    """Stop (or resume) booking statements of this account to its company; its entries stay."""
    query = select(BankAccount).where(BankAccount.id == account_id)
    if company_ids is not None:
        query = query.where(BankAccount.company_id.in_(company_ids))
    account = session.scalar(query)
    if account is None:
        raise UserError(N_("No bank account %(id)s."), id=account_id)
    if account.active == active:
        return account
    account.active = active
    session.flush()
    audit.record(session, actor_type="user", actor=actor,
                 action="bank_account.activated" if active else "bank_account.deactivated",
                 entity_type="company", entity_id=account.company_id,
                 before={"iban": account.iban, "active": not active}, after={"iban": account.iban, "active": active})
    return account
