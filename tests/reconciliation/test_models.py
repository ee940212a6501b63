"""What the schema itself guarantees for bank reconciliation, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger.models import BankEntry, BankStatement, Payment
from reconciliation.accounts import add_account
from tests import factories


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    return both_databases_session_factory


def _entry(statement: BankStatement, key: str, **fields: object) -> BankEntry:
    values: dict[str, object] = dict(statement_id=statement.id, company_id=statement.company_id,
                                     account_id=statement.account_id, booking_date=date(2026, 11, 25),
                                     value_date=date(2026, 11, 25), amount_minor=100_00, currency="EUR",
                                     credit_debit="CRDT", identity_key=key, warnings=[])
    values.update(fields)
    return BankEntry(**values)


def _statement(session: Session) -> BankStatement:
    company = factories.company(session)
    account = add_account(session, company.code, iban="FR7630006000011234567890189")
    statement = BankStatement(company_id=company.id, account_id=account.id, file_name="s.xml", file_sha256="0" * 64,
                              format="camt.053.001.02", warnings=[])
    session.add(statement)
    session.flush()
    return statement


def test_an_entry_identity_is_unique_within_its_account(session: Session) -> None:
    statement = _statement(session)
    session.add(_entry(statement, "R|2026-11-25|10000|EUR|REF-1"))
    session.flush()
    with pytest.raises(IntegrityError):
        with session.begin_nested():
            session.add(_entry(statement, "R|2026-11-25|10000|EUR|REF-1"))
            session.flush()


def test_entry_states_are_the_known_ones(session: Session) -> None:
    statement = _statement(session)
    for state in ("unmatched", "suggested", "matched", "ignored", "debit"):
        session.add(_entry(statement, f"key-{state}", state=state))
    session.flush()
    with pytest.raises(IntegrityError):
        with session.begin_nested():
            session.add(_entry(statement, "key-paid", state="paid"))
            session.flush()


@pytest.mark.parametrize("method", ["bank_transfer", "cheque", "bill_of_exchange", "cash", "set_off"])
def test_payments_recorded_from_the_bank_or_by_staff_take_their_methods(session: Session, method: str) -> None:
    customer = factories.customer(session, factories.company(session))
    session.add(Payment(customer_id=customer.id, provider="bank", provider_ref=f"ref-{method}", method=method,
                        amount_minor=10_00, currency="EUR", status="succeeded", received_on=date(2026, 11, 25)))
    session.flush()


def test_an_unknown_payment_method_is_still_refused(session: Session) -> None:
    customer = factories.customer(session, factories.company(session))
    with pytest.raises(IntegrityError):
        with session.begin_nested():
            session.add(Payment(customer_id=customer.id, provider="bank", provider_ref="x", method="barter",
                                amount_minor=10_00, currency="EUR", status="succeeded"))
            session.flush()


def test_an_entry_is_of_its_statements_account_and_company(session: Session) -> None:
    """One foreign key (migration 0039_bank) to the statement with its account and company: an entry
    naming another account or company than its statement's, or no statement, is refused."""
    statement = _statement(session)
    other = factories.company(session)
    other_account = add_account(session, other.code, iban="FR7610107001011234567890129")
    session.add(_entry(statement, "key-own"))
    session.flush()
    for key, fields in (("key-company", {"company_id": other.id}), ("key-account", {"account_id": other_account.id}),
                        ("key-statement", {"statement_id": statement.id + 1_000})):
        with pytest.raises(IntegrityError):
            with session.begin_nested():
                session.add(_entry(statement, key, **fields))
                session.flush()
