"""The dashboard's bank reconciliation state (`bank_state`), read from the running totals the
triggers keep on bank entries: what came in, matched by the rule, by hand, set aside, still to do
and since when; every step of the queue moves it. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.dashboard_service import bank_state
from kernel.settings import Settings
from ledger.allocation import invariant_violations
from ledger.models import BankEntry, BankMatch, User
from ledger.money import Money
from reconciliation import queue
from reconciliation.imports import import_statement_file
from tests.reconciliation.bank_world import camt, credit, make_world
from tests.reconciliation.camt_builder import Ntry


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    return both_databases_session_factory


def _entry(session: Session, ref: str) -> BankEntry:
    return session.scalars(select(BankEntry).where(BankEntry.bank_reference == f"TX-{ref}")).one()


def test_the_bank_figures_follow_each_entry_from_import_to_undo(session: Session, settings: Settings) -> None:
    world = make_world(session)
    staff = User(email="boss@acme.test", password_hash="-", role="admin", companies=[])
    session.add(staff)
    session.flush()
    import_statement_file(session, camt(
        credit("120.00", ref="E1", text="F-2026-0468", day="2026-11-20"),  # matched by the rule
        credit("300.00", ref="E2", name="M. Dupont", iban=None, text="divers", day="2026-11-18"),  # by hand, below
        credit("15.00", ref="E3", name="Fournisseur", iban=None, text="avoir", day="2026-11-21"),  # set aside
        credit("42.00", ref="E4", name="Inconnu", iban=None, text="?", day="2026-11-22"),  # still to do
        Ntry("49.90", side="DBIT", ref="D1", booking="2026-11-22", value="2026-11-22"),  # money out: not counted
    ), "day.xml", settings=settings)
    queue.match_manually(session, _entry(session, "E2").id, [(world.invoice(session, "F-2026-0470").id,
                                                             Money(175_00, "EUR"))], staff, settings=settings)
    queue.mark_not_customer_payment(session, _entry(session, "E3").id, staff)

    [state] = bank_state(session, [world.acme.id])[world.acme.id]
    assert state.incoming == Money(477_00, "EUR")
    assert (state.automatic.amount, state.automatic.count, state.automatic.percent) == (
        Money(120_00, "EUR"), 1, Decimal("25.2"))
    assert (state.by_hand.amount, state.by_hand.count) == (Money(300_00, "EUR"), 1)
    assert (state.set_aside.amount, state.set_aside.count) == (Money(15_00, "EUR"), 1)
    assert (state.unmatched.amount, state.unmatched.count) == (Money(42_00, "EUR"), 1)
    assert state.oldest_unmatched == date(2026, 11, 22)
    assert bank_state(session, [world.other.id]) == {}
    assert invariant_violations(session) == []  # the totals agree with a recount of the entries

    by_hand = session.scalars(select(BankMatch).where(BankMatch.entry_id == _entry(session, "E2").id,
                                                     BankMatch.state == "confirmed")).one()
    queue.undo_match(session, by_hand.id, staff, settings=settings)
    queue.restore_entry(session, _entry(session, "E3").id, staff)
    [state] = bank_state(session, [world.acme.id])[world.acme.id]
    assert (state.by_hand.count, state.set_aside.count) == (0, 0)
    assert (state.unmatched.amount, state.unmatched.count) == (Money(357_00, "EUR"), 3)
    assert state.oldest_unmatched == date(2026, 11, 18)
    assert state.incoming == Money(477_00, "EUR")
    assert invariant_violations(session) == []
