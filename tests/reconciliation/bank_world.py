"""A company set up the way production does (services the CLI calls), and camt files naming it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.settings import Settings
from ledger.companies import create_company
from ledger.csv_import import import_csv
from ledger.models import Checkout, Company, Customer, Invoice
from payments.registry import provider_for
from payments.checkout import create_checkout
from reconciliation.accounts import add_account
from tests.reconciliation.camt_builder import Doc, Ntry, Stmt, Tx, build

ACME_IBAN = "FR7630006000011234567890189"
OTHER_IBAN = "FR7610107001011234567890129"
MARTIN_IBAN = "FR1420041010050500013M02606"
PETIT_IBAN = "BE71096123456769"

CUSTOMERS = """company;customer_ref;name;email;language;phone;segment
ACME;C-MARTIN;Boulangeries Martin SARL;compta@martin.fr;fr;;
ACME;C-PETIT;Garage Petit SAS;ap@petit.fr;fr;;
OTHER;O-1;Autre Client;ap@autre.fr;fr;;
"""

INVOICES = """company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until,type
ACME,C-MARTIN,F-2026-0468,2026-10-01,2026-10-31,EUR,120.00,,,
ACME,C-MARTIN,F-2026-0469,2026-10-05,2026-11-05,EUR,80.00,,,
ACME,C-PETIT,F-2026-0470,2026-10-10,2026-11-10,EUR,175.00,,,
ACME,C-PETIT,F-2026-0471,2026-11-10,2026-12-10,EUR,1000.00,2,2026-11-30,
OTHER,O-1,F-2026-0472,2026-10-10,2026-11-10,EUR,333.00,,,
"""


@dataclass
class World:
    acme: Company
    other: Company

    def invoice(self, session: Session, number: str) -> Invoice:
        found = session.scalar(select(Invoice).where(Invoice.number == number))
        assert found is not None
        session.refresh(found)
        return found

    def customer(self, session: Session, ref: str) -> Customer:
        found = session.scalar(select(Customer).where(Customer.ref == ref))
        assert found is not None
        return found


def make_world(session: Session) -> World:
    acme = create_company(session, code="ACME", name="Acme SAS", currency="EUR")
    other = create_company(session, code="OTHER", name="Other SAS", currency="EUR")
    add_account(session, "ACME", iban=ACME_IBAN, bic="BNPAFRPP")
    add_account(session, "OTHER", iban=OTHER_IBAN)
    import_csv(session, "customers", CUSTOMERS.encode())
    import_csv(session, "invoices", INVOICES.encode())
    session.flush()
    return World(acme, other)


def transfer_checkout(session: Session, settings: Settings, customer: Customer, invoices: list[Invoice],
                      today: date = date(2026, 11, 25)) -> Checkout:
    """A bank-transfer checkout as the portal starts one: its RF reference set by the provider."""
    contact = customer.primary_contact
    checkout = create_checkout(session, customer=customer, contact=contact,
                               selection={invoice.id: None for invoice in invoices}, method="bank_transfer",
                               today=today)
    provider_for("bank_transfer").start(session, checkout, settings, settings.base_url)
    assert checkout.reference is not None
    return checkout


def camt(*entries: Ntry, iban: str = ACME_IBAN, statement: str = "STMT-1", currency: str = "EUR") -> bytes:
    return build(Doc("053", 2, (Stmt(id=statement, iban=iban, currency=currency, entries=entries),)))


def credit(amount: str, *, ref: str, name: str | None = "Boulangeries Martin", iban: str | None = MARTIN_IBAN,
           text: str | None = None, scor: str | None = None, day: str = "2026-11-25",
           end_to_end: str | None = None) -> Ntry:
    return Ntry(amount, ref=ref, booking=day, value=day,
                txs=(Tx(amount, name, iban, ustrd=(text,) if text else (), scor=scor, end_to_end=end_to_end,
                        ref=f"TX-{ref}"),))
