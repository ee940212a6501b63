from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.orm import Session

from ledger.models import Checkout, Company, Customer, Invoice
from tests import factories
from tests.portal.conftest import app, client  # noqa: F401 - the portal's TestClient fixtures


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    """Every test of this package runs on SQLite and on PostgreSQL."""
    return both_databases_session_factory


@pytest.fixture
def company(session: Session) -> Company:
    return factories.company(session, name="Durand Industrie SAS", iban="FR7630006000011234567890189",
                             bic="AGRIFRPPXXX")


@pytest.fixture
def customer(session: Session, company: Company) -> Customer:
    return factories.customer(session, company, language="fr")


@pytest.fixture
def invoices(session: Session, customer: Customer) -> list[Invoice]:
    """Overdue 1 234,56 €, due later 500,00 € with 2 % until 12 December, not yet due 318,40 €."""
    return [
        factories.invoice(session, customer, total_minor=1234_56, number="F-1", due_date=date(2026, 11, 1)),
        factories.invoice(session, customer, total_minor=500_00, number="F-2", due_date=date(2026, 12, 20),
                          discount_bps=200, discount_until=date(2026, 12, 12)),
        factories.invoice(session, customer, total_minor=318_40, number="F-3", due_date=date(2026, 12, 24)),
    ]


def start(session: Session, checkout: Checkout) -> Checkout:
    """What the provider's start does to a new checkout, without calling a provider: a transfer gets
    its RF reference (the bank-transfer provider itself), a card or bank flow its provider reference.
    A started checkout locks its invoices; one never started is a draft the next checkout supersedes."""
    if checkout.method == "bank_transfer":
        from payments.bank_transfer import BankTransferProvider

        BankTransferProvider().start(session, checkout, None, "")  # type: ignore[arg-type]  # settings unused
    elif checkout.provider_ref is None:
        checkout.provider = "stripe" if checkout.method == "card" else "gocardless"
        checkout.provider_ref = f"started-{checkout.id}-{checkout.attempt}"
        session.flush()
    return checkout
