"""Demo data: two entities, debtors in EUR, GBP and two currencies, payments and credit notes.

Dates are relative to today so the demo always has something overdue and a discount on offer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.orm import Session

from dunning.scenarios import ensure_default_scenario
from kernel.clock import clock
from ledger import fx
from admin.staff_accounts import create_user
from ledger.allocation import allocate
from ledger.companies import create_company
from ledger.models import Company, Contact, Customer, Invoice, InvoiceKind, Payment
from ledger.money import Money
from ledger.receipts import assign_receipt_number
from reconciliation.accounts import add_account
from links import tokens

STAFF_EMAIL = "admin@encours.demo"


def _logo(initials: str, color: str) -> bytes:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="80" height="80" viewBox="0 0 80 80">'
        f'<rect width="80" height="80" rx="16" fill="{color}"/>'
        f'<text x="40" y="52" font-family="DejaVu Sans, Arial, sans-serif" font-size="34" font-weight="700" '
        f'fill="#ffffff" text-anchor="middle">{initials}</text></svg>'
    ).encode()


@dataclass(frozen=True)
class DemoDebtor:
    label: str
    customer_ref: str
    company_code: str
    link: str


@dataclass(frozen=True)
class DemoInfo:
    staff_email: str
    staff_password: str
    debtors: list[DemoDebtor]


def _customer(session: Session, company: Company, ref: str, name: str, language: str, email: str,
              segment: str) -> Customer:
    customer = Customer(company=company, ref=ref, name=name, language=language, segment=segment)
    session.add(customer)
    session.flush()
    session.add(Contact(customer_id=customer.id, email=email, language=language, is_primary=True,
                        name=name))
    session.flush()
    session.refresh(customer)
    return customer


def _invoice(session: Session, customer: Customer, number: str, currency: str, amount: str,
             issued: date, due: date, kind: InvoiceKind = InvoiceKind.invoice,
             discount_bps: int | None = None, discount_until: date | None = None) -> Invoice:
    total = Money.parse(amount, currency)
    invoice = Invoice(
        company_id=customer.company_id, customer_id=customer.id, kind=kind.value, number=number,
        issue_date=issued, due_date=due, currency=currency, total_minor=total.minor, open_minor=total.minor,
        discount_bps=discount_bps, discount_until=discount_until,
    )
    session.add(invoice)
    session.flush()
    return invoice


def _paid(session: Session, customer: Customer, invoice: Invoice, amount: str, method: str,
          received: date) -> None:
    money = Money.parse(amount, invoice.currency)
    payment = Payment(customer_id=customer.id, provider="manual", provider_ref=f"DEMO-{invoice.number}-{amount}",
                      method=method, amount_minor=money.minor, currency=money.currency, status="succeeded",
                      received_on=received)
    session.add(payment)
    session.flush()
    allocate(session, invoice, money, payment=payment)
    assign_receipt_number(session, payment)


def seed(session: Session, *, secret: str, base_url: str, staff_password: str) -> DemoInfo:
    today = clock.today("Europe/Paris")
    d = lambda days: today + timedelta(days=days)  # noqa: E731

    durand = create_company(
        session, code="DURAND", name="Durand Industrie SAS", currency="EUR", country="FR",
        timezone="Europe/Paris", brand_color="#1d4f91", logo=_logo("DI", "#1d4f91"), logo_mime="image/svg+xml",
        iban="FR7630006000011234567890189", bic="AGRIFRPPXXX", support_email="recouvrement@durand-industrie.fr",
        address="12 rue des Forges\n69007 Lyon\nFrance",
    )
    durand_uk = create_company(
        session, code="DURAND-UK", name="Durand Industrie UK Ltd", currency="GBP", country="GB",
        timezone="Europe/London", brand_color="#0f6e5b", logo=_logo("DU", "#0f6e5b"), logo_mime="image/svg+xml",
        iban="GB33BUKB20201555555555", bic="BUKBGB22", support_email="credit.control@durand-industrie.co.uk",
        address="4 Riverside Way\nReading RG1 8AA\nUnited Kingdom",
    )

    for company in (durand, durand_uk):
        ensure_default_scenario(session, company)
        # The demo is there to be tried: its reminders are on (a real company starts with them off).
        company.reminders_enabled = True
        # Its account registered as `encours company account add` does: statements naming it are its own.
        add_account(session, company.code, iban=company.iban or "", bic=company.bic, currency=company.base_currency,
                    label="Compte principal" if company.country == "FR" else "Main account", actor="demo")

    # Its British entity lets debtors pay part of an invoice, so the demo shows both ways.
    durand_uk.allow_partial_payments = True

    # Dated rates, so the dashboard converts the USD and GBP amounts instead of calling totals incomplete.
    for base, quote, rate in (("USD", "EUR", "0.9215"), ("GBP", "EUR", "1.1830")):
        fx.set_rate(session, base=base, quote=quote, valid_on=d(-1).isoformat(), rate=rate, actor="demo")

    martin = _customer(session, durand, "C-MARTIN", "Boulangeries Martin SARL", "fr",
                       "compta@boulangeries-martin.fr", "pme")
    _invoice(session, martin, "F-2026-0412", "EUR", "1234.56", d(-75), d(-45))
    partly = _invoice(session, martin, "F-2026-0468", "EUR", "4860.00", d(-50), d(-20))
    _paid(session, martin, partly, "2000.00", "bank_transfer", d(-10))
    _invoice(session, martin, "F-2026-0501", "EUR", "2400.00", d(-5), d(25), discount_bps=200,
             discount_until=d(10))
    _invoice(session, martin, "F-2026-0519", "EUR", "318.40", d(-2), d(28))
    _invoice(session, martin, "AV-2026-0033", "EUR", "150.00", d(-12), d(-12), kind=InvoiceKind.credit_note)

    thames = _customer(session, durand_uk, "C-THAMES", "Thames Valley Logistics Ltd", "en",
                       "accounts.payable@thamesvalley-logistics.co.uk", "key-account")
    _invoice(session, thames, "UK-10233", "GBP", "1234.56", d(-60), d(-30))
    _invoice(session, thames, "UK-10251", "GBP", "8750.00", d(-25), d(5), discount_bps=150, discount_until=d(3))
    _invoice(session, thames, "UK-10262", "GBP", "612.90", d(-10), d(20))

    nordic = _customer(session, durand, "C-NORDIC", "Nordic Marine Supply AB", "en",
                       "ap@nordicmarine.se", "export")
    _invoice(session, nordic, "F-2026-0390", "EUR", "15800.00", d(-90), d(-60))
    _invoice(session, nordic, "F-2026-0477", "EUR", "3275.25", d(-40), d(-10))
    usd = _invoice(session, nordic, "F-2026-0480", "USD", "9990.00", d(-35), d(-5))
    _paid(session, nordic, usd, "4000.00", "bank_transfer", d(-3))
    _invoice(session, nordic, "F-2026-0522", "USD", "1450.00", d(-1), d(29))

    create_user(session, email=STAFF_EMAIL, role="admin", password=staff_password, company_codes=[])
    session.flush()

    debtors = []
    for label, customer in (
        ("French customer, EUR", martin),
        ("UK customer, GBP, may pay part of an invoice", thames),
        ("Export customer, EUR and USD", nordic),
    ):
        contact = customer.primary_contact
        assert contact is not None
        debtors.append(
            DemoDebtor(label=label, customer_ref=customer.ref, company_code=customer.company.code,
                       link=tokens.link_url(base_url, tokens.make_token(secret, contact)))
        )
    return DemoInfo(staff_email=STAFF_EMAIL, staff_password=staff_password, debtors=debtors)
