"""Small builders for test data; each flushes so ids exist."""

from __future__ import annotations

import itertools
from datetime import date

from sqlalchemy.orm import Session

from ledger.companies import create_company
from ledger.models import Company, Contact, Customer, Invoice, InvoiceKind

_seq = itertools.count(1)


def company(session: Session, code: str | None = None, **fields: object) -> Company:
    n = next(_seq)
    values: dict[str, object] = {
        "code": code or f"CO{n}",
        "name": f"Company {n}",
        "base_currency": "EUR",
        "country": "FR",
        "timezone": "Europe/Paris",
        # A company as it is once someone switched its reminders on (new ones start off).
        "reminders_enabled": True,
    }
    values.update(fields)
    # Through the one service that creates companies, so tests get what production gets
    # (default dispute reasons among it).
    return create_company(session, code=str(values.pop("code")), name=str(values.pop("name")),
                          currency=str(values.pop("base_currency")), country=str(values.pop("country")),
                          timezone=str(values.pop("timezone")), **values)


def customer(
    session: Session,
    company: Company,
    ref: str | None = None,
    language: str = "fr",
    email: str | None = None,
    **fields: object,
) -> Customer:
    n = next(_seq)
    customer = Customer(company=company, ref=ref or f"C{n:05d}", name=f"Customer {n}", language=language, **fields)
    session.add(customer)
    session.flush()
    session.add(
        Contact(customer_id=customer.id, email=email or f"ap{n}@example.com", language=language, is_primary=True)
    )
    session.flush()
    session.refresh(customer)
    return customer


def invoice(
    session: Session,
    customer: Customer,
    total_minor: int = 100_00,
    currency: str = "EUR",
    number: str | None = None,
    issue_date: date = date(2026, 10, 1),
    due_date: date = date(2026, 10, 31),
    kind: InvoiceKind = InvoiceKind.invoice,
    open_minor: int | None = None,
    **fields: object,
) -> Invoice:
    n = next(_seq)
    invoice = Invoice(
        company_id=customer.company_id,
        customer_id=customer.id,
        kind=kind.value,
        number=number or f"F{n:06d}",
        issue_date=issue_date,
        due_date=due_date,
        currency=currency,
        total_minor=total_minor,
        open_minor=total_minor if open_minor is None else open_minor,
        **fields,
    )
    session.add(invoice)
    session.flush()
    return invoice
