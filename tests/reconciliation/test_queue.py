"""The staff queue's services: list, confirm, match by hand, set aside, undo; company scoping;
every action audited. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.settings import Settings
from ledger.allocation import invariant_violations
from ledger.models import Allocation, AuditEvent, BankEntry, BankMatch, Company, Payment, User
from ledger.money import Money
from ledger.statement import unapplied_credit
from reconciliation import queue
from kernel.user_error import UserError
from reconciliation.imports import import_statement_file
from tests.reconciliation.bank_world import PETIT_IBAN, World, camt, credit, make_world


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    return both_databases_session_factory


@pytest.fixture
def world(session: Session) -> World:
    return make_world(session)


def _user(session: Session, email: str, role: str, companies: list[Company]) -> User:
    user = User(email=email, password_hash="-", role=role, companies=companies)
    session.add(user)
    session.flush()
    return user


@pytest.fixture
def manager(session: Session, world: World) -> User:
    return _user(session, "manager@acme.fr", "manager", [world.acme])


def _entry(session: Session, amount_minor: int) -> BankEntry:
    entry = session.scalar(select(BankEntry).where(BankEntry.amount_minor == amount_minor))
    assert entry is not None
    return entry


def _load(session: Session, settings: Settings, *entries: object, name: str = "day.xml") -> None:
    import_statement_file(session, camt(*entries), name, settings=settings)  # type: ignore[arg-type]


def test_list_entries_filters_by_state_and_search_within_the_users_companies(
        session: Session, world: World, manager: User, settings: Settings) -> None:
    _load(session, settings, credit("120.00", ref="E1", text="F-2026-0468"),
          credit("42.00", ref="E2", name="Inconnu SARL", iban=None, text="divers"))
    page = queue.list_entries(session, queue.companies_of(manager))
    assert [(row.entry.amount_minor, row.entry.state, row.company_code) for row in page.rows] == [
        (42_00, "unmatched", "ACME"), (120_00, "matched", "ACME")]
    assert [row.entry.amount_minor for row in queue.list_entries(session, [world.acme.id], state="open").rows] == [42_00]
    assert [row.entry.amount_minor for row in queue.list_entries(session, None, search="inconnu").rows] == [42_00]
    assert [row.entry.amount_minor for row in queue.list_entries(session, None, search="42,00").rows] == [42_00]
    assert queue.list_entries(session, [world.other.id]).rows == []
    with pytest.raises(UserError, match="Unknown entry state"):
        queue.list_entries(session, None, state="paid")


def test_confirming_a_suggestion_applies_it_and_learns_the_payer(
        session: Session, world: World, manager: User, settings: Settings) -> None:
    _load(session, settings, credit("150.00", ref="E1", name="Garage Petit", iban=PETIT_IBAN, text="F-2026-0470"))
    entry = _entry(session, 150_00)
    assert entry.state == "suggested"
    match = queue.confirm_suggestion(session, entry.id, manager, settings=settings)
    assert (match.state, match.decided_by) == ("confirmed", f"user:{manager.id}")
    invoice = world.invoice(session, "F-2026-0470")
    assert (invoice.status, invoice.open_minor) == ("partially_paid", 25_00)
    assert entry.state == "matched"
    with pytest.raises(UserError, match="matched already"):
        queue.confirm_suggestion(session, entry.id, manager, settings=settings)
    assert invariant_violations(session) == []


def test_match_by_hand_across_customers_with_the_rest_as_credit(
        session: Session, world: World, manager: User, settings: Settings) -> None:
    _load(session, settings, credit("500.00", ref="E1", name="Groupe Martin-Petit", iban=None, text="reglement"))
    entry = _entry(session, 500_00)
    f468, f470 = world.invoice(session, "F-2026-0468"), world.invoice(session, "F-2026-0470")
    match = queue.match_manually(session, entry.id, [(f468.id, Money(120_00, "EUR")), (f470.id, Money(175_00, "EUR"))],
                                 manager, settings=settings)
    assert match.evidence == "manual" and match.state == "confirmed"
    assert [(world.invoice(session, n).status) for n in ("F-2026-0468", "F-2026-0470")] == ["paid", "paid"]
    payments = session.scalars(select(Payment).where(Payment.provider == "bank").order_by(Payment.id)).all()
    assert [(p.customer_id, p.amount_minor) for p in payments] == [(f468.customer_id, 325_00), (f470.customer_id, 175_00)]
    assert unapplied_credit(session, f468.customer_id) == {"EUR": Money(205_00, "EUR")}
    assert invariant_violations(session) == []


def test_a_short_payment_within_the_tolerance_is_written_off_and_beyond_it_is_refused_whole(
        session: Session, world: World, manager: User, settings: Settings) -> None:
    world.acme.write_off_tolerance_minor = 2_00
    _load(session, settings, credit("118.50", ref="E1", iban=None, text="paiement"),
          credit("77.00", ref="E2", iban=None, text="paiement"))
    f468, f469 = world.invoice(session, "F-2026-0468"), world.invoice(session, "F-2026-0469")
    with pytest.raises(UserError) as refused:
        queue.match_manually(session, _entry(session, 77_00).id, [(f469.id, Money(77_00, "EUR"))], manager,
                             write_off=True, settings=settings)
    assert "F-2026-0469: €3.00 short is more than the €2.00 that may be written off" in str(refused.value)
    assert world.invoice(session, "F-2026-0469").open_minor == 80_00

    queue.match_manually(session, _entry(session, 118_50).id, [(f468.id, Money(118_50, "EUR"))], manager,
                         write_off=True, settings=settings)
    invoice = world.invoice(session, "F-2026-0468")
    assert (invoice.status, invoice.open_minor) == ("paid", 0)
    allocation = session.scalar(select(Allocation).where(Allocation.invoice_id == f468.id))
    assert allocation is not None and (allocation.amount_minor, allocation.discount_minor) == (118_50, 1_50)
    assert invariant_violations(session) == []


def test_match_by_hand_names_every_problem_and_applies_nothing(
        session: Session, world: World, manager: User, settings: Settings) -> None:
    _load(session, settings, credit("100.00", ref="E1", iban=None, text="x"))
    entry = _entry(session, 100_00)
    state = entry.state
    f468, f472 = world.invoice(session, "F-2026-0468"), world.invoice(session, "F-2026-0472")
    with pytest.raises(UserError) as refused:
        queue.match_manually(session, entry.id, [(f468.id, Money(130_00, "EUR")), (f472.id, Money(10_00, "EUR")),
                                                 (f468.id, Money(1_00, "EUR"))], manager, settings=settings)
    message = str(refused.value)
    assert "F-2026-0468: €130.00 is more than its open €120.00" in message
    assert f"invoice {f472.id} is not an invoice of ACME" in message
    assert "F-2026-0468 is chosen twice" in message
    assert entry.state == state and session.scalar(select(func.count()).select_from(Payment)) == 0


def test_set_aside_then_put_back(session: Session, world: World, manager: User, settings: Settings) -> None:
    _load(session, settings, credit("42.00", ref="E1", name="Fournisseur SA", iban=None, text="avoir fournisseur"))
    entry = _entry(session, 42_00)
    queue.mark_not_customer_payment(session, entry.id, manager)
    assert entry.state == "ignored"
    queue.restore_entry(session, entry.id, manager)
    assert entry.state == "unmatched"


def test_undo_restores_the_ledger_and_the_entry_waits_again(
        session: Session, world: World, manager: User, settings: Settings) -> None:
    _load(session, settings, credit("120.00", ref="E1", text="F-2026-0468"))
    entry = _entry(session, 120_00)
    match = session.scalar(select(BankMatch).where(BankMatch.entry_id == entry.id))
    assert match is not None and match.state == "confirmed"
    queue.undo_match(session, match.id, manager, settings=settings)
    invoice = world.invoice(session, "F-2026-0468")
    assert (invoice.status, invoice.open_minor) == ("open", 120_00)
    assert entry.state == "unmatched" and match.state == "undone"
    assert session.scalar(select(func.count()).select_from(Allocation)) == 0
    assert unapplied_credit(session, invoice.customer_id) == {}
    assert invariant_violations(session) == []
    # Matched again by hand: a second payment, not a clash with the first one's reference.
    queue.match_manually(session, entry.id, [(invoice.id, Money(120_00, "EUR"))], manager, settings=settings)
    assert world.invoice(session, "F-2026-0468").status == "paid"


def test_an_entry_of_another_company_is_not_found_and_every_action_is_audited(
        session: Session, world: World, settings: Settings) -> None:
    outsider = _user(session, "manager@other.fr", "manager", [world.other])
    _load(session, settings, credit("42.00", ref="E1", iban=None, text="x"))
    entry = _entry(session, 42_00)
    with pytest.raises(queue.EntryNotFound):
        queue.mark_not_customer_payment(session, entry.id, outsider)
    with pytest.raises(queue.EntryNotFound):
        queue.match_manually(session, entry.id, [(world.invoice(session, "F-2026-0472").id, Money(42_00, "EUR"))],
                             outsider)
    admin = _user(session, "admin@encours.fr", "admin", [])
    queue.mark_not_customer_payment(session, entry.id, admin)
    assert session.scalar(select(AuditEvent.actor).where(AuditEvent.action == "bank_entry.ignored")) == admin.email


def test_the_pager_cursors_find_the_same_pages_as_counting_and_new_entries_do_not_shift_them(
        session: Session, world: World, manager: User, settings: Settings) -> None:
    _load(session, settings, *(credit(f"{1000 + n}.00", ref=f"Q{n}", name=f"Payeur {n}", iban=None, text="divers")
                               for n in range(2 * queue.PAGE_SIZE + 7)))
    scope = queue.companies_of(manager)
    counted = [queue.list_entries(session, scope, state="open", page=n) for n in (1, 2, 3)]
    assert [len(p.rows) for p in counted] == [queue.PAGE_SIZE, queue.PAGE_SIZE, 7]
    assert [p.has_next for p in counted] == [True, True, False]

    second = queue.list_entries(session, scope, state="open", page=2, after=counted[0].last_id)
    third = queue.list_entries(session, scope, state="open", page=3, after=second.last_id)
    assert [r.entry.id for r in second.rows] == [r.entry.id for r in counted[1].rows]
    assert [r.entry.id for r in third.rows] == [r.entry.id for r in counted[2].rows] and not third.has_next
    back = queue.list_entries(session, scope, state="open", page=2, before=third.first_id)
    assert [r.entry.id for r in back.rows] == [r.entry.id for r in counted[1].rows] and back.has_next
    first = queue.list_entries(session, scope, state="open", page=1, before=back.first_id)
    assert [r.entry.id for r in first.rows] == [r.entry.id for r in counted[0].rows] and first.page == 1

    # A statement loaded meanwhile puts its entries on page 1: the reader's next page stays where it was.
    _load(session, settings, credit("5.00", ref="LATE", iban=None, text="divers"), name="late.xml")
    assert [r.entry.id for r in queue.list_entries(session, scope, state="open", page=2,
                                                   after=counted[0].last_id).rows] == [r.entry.id
                                                                                       for r in counted[1].rows]
