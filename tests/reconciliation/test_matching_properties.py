"""Properties of matching and of a match on the ledger, over generated books and entries:

- a proposal never gives more than the entry brought, never more than an invoice owes, and
  never touches another company's invoices or customers;
- confirming a match then undoing it restores the ledger exactly: open amounts, statuses,
  allocations, the customers' unapplied credit, and the ledger's invariant (with the running
  totals of the dashboard) holds at every step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.settings import Settings
from ledger.allocation import invariant_violations
from ledger.models import Allocation, BankEntry, BankMatch, Customer, Invoice, Payment, User
from ledger.money import Money
from ledger.statement import unapplied_credit
from payments import rf
from reconciliation import queue
from reconciliation.imports import import_statement_file
from reconciliation.matching import Book, CheckoutFacts, CustomerFacts, EntryFacts, OpenInvoice, match_entry
from tests.reconciliation.bank_world import camt, credit, make_world

COMPANIES = (1, 2)
CUSTOMERS = {10: 1, 11: 1, 12: 1, 20: 2, 21: 2}
NAMES = {10: "Boulangeries Martin", 11: "Garage Petit", 12: "Transports Lefevre", 20: "Autre Client",
         21: "Garage Petit Nord"}
DAY = date(2026, 11, 20)


@st.composite
def books(draw: st.DrawFn) -> tuple[Book, list[OpenInvoice], list[CheckoutFacts]]:
    count = draw(st.integers(min_value=1, max_value=12))
    invoices = []
    for index in range(count):
        customer = draw(st.sampled_from(sorted(CUSTOMERS)))
        total = draw(st.integers(min_value=1, max_value=50_000))
        open_minor = draw(st.sampled_from([total, draw(st.integers(min_value=1, max_value=total))]))
        discount = draw(st.none() | st.integers(min_value=1, max_value=500))
        invoices.append(OpenInvoice(index + 1, CUSTOMERS[customer], customer, f"F-2026-{index + 1:04d}", "EUR",
                                    DAY - timedelta(days=draw(st.integers(0, 60))), total, open_minor, discount,
                                    DAY + timedelta(days=draw(st.integers(-5, 5))) if discount else None))
    checkouts = []
    for checkout_id in range(1, draw(st.integers(0, 3)) + 1):
        chosen = draw(st.lists(st.sampled_from(invoices), min_size=1, max_size=3, unique_by=lambda i: i.id))
        owner = chosen[0]
        lines = tuple(i.id for i in chosen if i.customer_id == owner.customer_id)
        checkouts.append(CheckoutFacts(checkout_id, owner.company_id, owner.customer_id,
                                       rf.make_reference(checkout_id), "EUR",
                                       sum(i.open_minor for i in chosen if i.id in lines), "open", lines))
    payers = [(CUSTOMERS[c], f"FR76300060000112345678{c:05d}", c) for c in draw(st.sets(st.sampled_from(sorted(CUSTOMERS))))]
    customers = [CustomerFacts(cid, CUSTOMERS[cid], NAMES[cid]) for cid in CUSTOMERS]
    return Book.of(invoices, customers, checkouts, payers), invoices, checkouts


@st.composite
def entries(draw: st.DrawFn, invoices: list[OpenInvoice], checkouts: list[CheckoutFacts]) -> EntryFacts:
    words = []
    for invoice in draw(st.lists(st.sampled_from(invoices), max_size=3)):
        words.append(draw(st.sampled_from([invoice.number, invoice.number.replace("-", " "),
                                           "FACT" + invoice.number[2:].replace("-", "/")])))
    if checkouts and draw(st.booleans()):
        words.append(rf.pretty(draw(st.sampled_from(checkouts)).reference).lower())
    amount = draw(st.one_of(st.integers(min_value=1, max_value=200_000),
                            st.sampled_from([i.open_minor for i in invoices]),
                            st.just(sum(i.open_minor for i in invoices))))
    customer = draw(st.sampled_from(sorted(CUSTOMERS)))
    return EntryFacts(key=1, company_id=draw(st.sampled_from(COMPANIES)), amount_minor=amount, currency="EUR",
                      value_date=DAY, payer_name=draw(st.sampled_from([None, NAMES[customer]])),
                      payer_iban=draw(st.sampled_from([None, f"FR76300060000112345678{customer:05d}"])),
                      remittance_text=" ".join(words) or None)


@given(data=st.data())
@hypothesis_settings(max_examples=300, deadline=None)
def test_a_proposal_gives_no_more_than_the_entry_and_only_within_its_company(data: st.DataObject) -> None:
    book, invoices, checkouts = data.draw(books())
    before = {i.id: i.open_minor for i in invoices}
    entry = data.draw(entries(invoices, checkouts))
    proposal = match_entry(entry, book).proposal
    if proposal is None:
        return
    assert sum(line.amount_minor for line in proposal.lines) == entry.amount_minor
    given_to: dict[int, int] = {}
    for line in proposal.lines:
        assert line.amount_minor > 0 or line.discount_minor > 0
        assert CUSTOMERS[line.customer_id] == entry.company_id
        if line.invoice_id is not None:
            invoice = book.invoices[line.invoice_id]
            assert invoice.company_id == entry.company_id and invoice.customer_id == line.customer_id
            given_to[invoice.id] = given_to.get(invoice.id, 0) + line.amount_minor + line.discount_minor
    assert all(given_to[i] <= before[i] for i in given_to)
    if proposal.checkout_id is not None:
        checkout = next(c for c in checkouts if c.id == proposal.checkout_id)
        assert checkout.company_id == entry.company_id


# --- on the ledger ---------------------------------------------------------------------------------

_files = itertools.count(1)


def _snapshot(session: Session) -> tuple[object, ...]:
    session.flush()
    session.expire_all()
    invoices = tuple(session.execute(select(Invoice.id, Invoice.open_minor, Invoice.status).order_by(Invoice.id)))
    allocations = tuple(session.execute(
        select(Allocation.invoice_id, Allocation.payment_id, Allocation.credit_note_id, Allocation.amount_minor,
               Allocation.discount_minor).order_by(Allocation.id)))
    succeeded = tuple(session.execute(select(Payment.id, Payment.amount_minor)
                                      .where(Payment.status == "succeeded").order_by(Payment.id)))
    credit = tuple((c, tuple(sorted(unapplied_credit(session, c).items())))
                   for c in session.scalars(select(Customer.id).order_by(Customer.id)))
    return invoices, allocations, succeeded, credit


@pytest.fixture
def ledger_session(session: Session) -> Iterator[tuple[Session, User]]:
    make_world(session)
    manager = User(email="m@acme.fr", password_hash="-", role="admin", companies=[])
    session.add(manager)
    session.flush()
    yield session, manager


@given(data=st.data())
@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_confirm_then_undo_restores_the_ledger_exactly(ledger_session: tuple[Session, User], settings: Settings,
                                                       data: st.DataObject) -> None:
    session, manager = ledger_session
    nested = session.begin_nested()  # each example starts from the same book
    try:
        acme_invoices = session.scalars(select(Invoice).join(Customer).where(Customer.ref.like("C-%"))
                                        .order_by(Invoice.id)).all()
        if data.draw(st.booleans(), label="an earlier payment stays"):
            earlier = data.draw(st.sampled_from(acme_invoices), label="earlier invoice")
            share = data.draw(st.integers(min_value=1, max_value=earlier.open_minor), label="earlier share")
            number = next(_files)
            import_statement_file(session, camt(credit(f"{share // 100}.{share % 100:02d}", ref=f"P{number}",
                                                       text="acompte", iban=None), statement=f"P-{number}"),
                                  f"p{number}.xml", settings=settings)
            first = session.scalar(select(BankEntry).where(BankEntry.identity_key.like(f"%|TX-P{number}")))
            assert first is not None
            queue.match_manually(session, first.id, [(earlier.id, Money(share, "EUR"))], manager, settings=settings)
        # Half the entries name invoices with exactly what they owe (matched on import, the
        # discount of F-2026-0471 included), half bring any amount that staff match by hand.
        text, amount = data.draw(st.one_of(
            st.sampled_from([("F-2026-0468", 120_00), ("F-2026-0468 F-2026-0469", 200_00),
                             ("FACT 2026/0471", 980_00)]),
            st.tuples(st.sampled_from(["virement", "F-2026-0470", "F-2026-0468 F-2026-0469"]),
                      st.integers(min_value=1, max_value=2_000_00))), label="entry")
        before = _snapshot(session)
        number = next(_files)
        import_statement_file(session, camt(credit(f"{amount // 100}.{amount % 100:02d}", ref=f"P{number}", text=text,
                                                   iban=None), statement=f"P-{number}"),
                              f"p{number}.xml", settings=settings)
        entry = session.scalar(select(BankEntry).where(BankEntry.identity_key.like(f"%|TX-P{number}")))
        assert entry is not None and invariant_violations(session) == []
        match = session.scalar(select(BankMatch).where(BankMatch.entry_id == entry.id,
                                                       BankMatch.state == "confirmed"))
        event("matched automatically" if match is not None else "matched by hand")
        if match is None:
            chosen = data.draw(st.lists(st.sampled_from(acme_invoices), min_size=1, max_size=3,
                                        unique_by=lambda i: i.id), label="invoices")
            allocations = []
            budget = amount
            for invoice in chosen:
                share = data.draw(st.integers(min_value=0, max_value=min(budget, invoice.open_minor)), label="share")
                if share:
                    allocations.append((invoice.id, Money(share, "EUR")))
                    budget -= share
            if not allocations:
                return
            match = queue.match_manually(session, entry.id, allocations, manager, settings=settings)
        assert invariant_violations(session) == []
        paid = sum(line.amount_minor for line in match.lines)
        assert paid == amount
        assert all(session.get_one(Customer, line.customer_id).company_id == entry.company_id for line in match.lines)
        queue.undo_match(session, match.id, manager, settings=settings)
        assert invariant_violations(session) == []
        assert _snapshot(session) == before
    finally:
        nested.rollback()


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    """Every test of this module runs on SQLite and on PostgreSQL (the running totals are checked
    by `invariant_violations` at each step: row triggers on one, statement triggers on the other)."""
    return both_databases_session_factory
