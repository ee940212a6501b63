"""The automatic matches of an import applied in bulk (`booking.confirm_many`, `ledger.allocation.
allocate_many`) leave exactly the ledger that applying them one by one (`booking.confirm`) leaves:
every invoice's open amount and status, the payments and their allocations, the matches, the
completed checkouts, the learned payer IBANs, the audit trail and the running totals the
dashboard and the customers list read. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from kernel.db import make_engine, make_sessionmaker, unit_of_work
from kernel.settings import Settings
from ledger.allocation import invariant_violations
from ledger.csv_import import import_csv
from ledger.day_totals import stored
from ledger.models import (
    Allocation,
    AuditEvent,
    BankEntry,
    BankMatch,
    BankMatchLine,
    BankStatement,
    Checkout,
    CustomerBalance,
    Invoice,
    OutboxMessage,
    PayerAccount,
    Payment,
)
from reconciliation import imports
from reconciliation.imports import import_statement_file
from tests.reconciliation.bank_world import (
    MARTIN_IBAN,
    PETIT_IBAN,
    World,
    camt,
    credit,
    make_world,
    transfer_checkout,
)
from tests.reconciliation.camt_builder import Ntry, Tx

# More of ACME's invoices, loaded as the ERP loads them: numbers to name, amounts to repeat.
MORE_INVOICES = "company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until\n" + "".join(
    f"ACME,{'C-MARTIN' if n % 2 else 'C-PETIT'},F-2026-{n:04d},2026-10-{1 + n % 27:02d},2026-11-{1 + n % 27:02d},"
    f"EUR,{40 + (n % 7) * 15}.{n % 100:02d},{'2' if n % 5 == 0 else ''},{'2026-11-30' if n % 5 == 0 else ''}\n"
    for n in range(500, 530))


def _payment_key(provider_ref: str | None) -> str:
    """A payment by the bank entry it came from (the match id inside differs between two runs on
    PostgreSQL, whose sequences a rollback does not take back)."""
    return re.sub(r"#M\d+", "#M", provider_ref or "")


def _sorted(rows: object) -> list[object]:
    return sorted(rows, key=repr)  # type: ignore[call-overload]


def _ledger(session: Session) -> dict[str, object]:
    session.flush()
    session.expire_all()
    numbers = dict(session.execute(select(Invoice.id, Invoice.number)).all())
    payments = {pid: _payment_key(ref) for pid, ref in session.execute(select(Payment.id, Payment.provider_ref))}
    entries = dict(session.execute(select(BankEntry.id, BankEntry.identity_key)).all())
    matches = {mid: entries[eid] for mid, eid in session.execute(select(BankMatch.id, BankMatch.entry_id))}
    return {
        "invoices": _sorted(session.execute(select(Invoice.number, Invoice.open_minor, Invoice.status))),
        "payments": _sorted((payments[p.id], p.customer_id, p.amount_minor, p.currency, p.status, p.method,
                            p.received_on, p.checkout_id, p.failure_reason) for p in session.scalars(select(Payment))),
        "allocations": _sorted((numbers[a.invoice_id], payments.get(a.payment_id or 0, "-"), a.amount_minor, a.discount_minor)
                              for a in session.scalars(select(Allocation))),
        "entries": _sorted((e.identity_key, e.state, e.matched_by, tuple(e.warnings)) for e in session.scalars(select(BankEntry))),
        "matches": _sorted((entries[m.entry_id], m.state, m.evidence, m.score, m.method, m.checkout_id,
                           payments.get(m.payment_id or 0, "-"), m.decided_by_user_id,
                           re.sub(r"entry \d+", "entry #", m.reason),
                           tuple(m.details.get("completed_checkouts", ())), m.confirmed_at is not None)
                          for m in session.scalars(select(BankMatch))),
        "match_lines": _sorted((matches[line.match_id], line.customer_id, numbers.get(line.invoice_id or 0, "-"),
                               line.amount_minor, line.discount_minor, payments.get(line.payment_id or 0, "-"))
                              for line in session.scalars(select(BankMatchLine))),
        "payers": _sorted(session.execute(select(PayerAccount.iban, PayerAccount.customer_id,
                                                PayerAccount.times_seen))),
        "checkouts": _sorted(session.execute(select(Checkout.id, Checkout.status))),
        "audit": Counter((a.action, a.entity_type, a.customer_id, a.company_id, a.actor_type, a.actor)
                         for a in session.scalars(select(AuditEvent))),
        "outbox": Counter(session.scalars(select(OutboxMessage.kind))),
        "running_totals": stored(session),
        "customer_balances": _sorted(session.execute(select(CustomerBalance.customer_id,
                                                           CustomerBalance.outstanding_minor,
                                                           CustomerBalance.overdue_minor,
                                                           CustomerBalance.oldest_due))),
    }


@pytest.fixture
def world(session: Session) -> World:
    world = make_world(session)
    import_csv(session, "invoices", MORE_INVOICES.encode())
    session.flush()
    return world


def _both_ways(session: Session, settings: Settings, files: list[bytes]) -> tuple[dict[str, object], ...]:
    """The ledger after importing `files` one by one, then (from the same start) in bulk."""
    found = []
    for bulk in (False, True):
        nested = session.begin_nested()
        try:
            for number, data in enumerate(files):
                import_statement_file(session, data, f"day-{number}.xml", settings=settings, bulk=bulk)
            assert invariant_violations(session) == []
            found.append(_ledger(session))
        finally:
            nested.rollback()
            session.expire_all()
    return tuple(found)


def _amount(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def test_a_day_of_every_kind_of_credit_leaves_the_same_ledger_both_ways(
        session: Session, world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imports, "_BATCH", 3)  # several batches, and a returned transfer between two
    martin, petit = world.customer(session, "C-MARTIN"), world.customer(session, "C-PETIT")
    by_reference = transfer_checkout(session, settings, martin, [world.invoice(session, "F-2026-0469")])
    by_number = transfer_checkout(session, settings, petit, [world.invoice(session, "F-2026-0470"),
                                                             world.invoice(session, "F-2026-0502")])
    invoices = {i.number: i for i in session.scalars(select(Invoice).where(Invoice.company_id == world.acme.id))}

    def owed(number: str) -> str:
        return _amount(invoices[number].open_minor)

    day_one = camt(
        credit(owed("F-2026-0468"), ref="A1", text="Facture F-2026-0468"),
        credit(owed("F-2026-0501"), ref="A2", text="FACT 2026/0501", iban=MARTIN_IBAN),
        credit(owed("F-2026-0503"), ref="A3", text="F-2026-0503", iban=MARTIN_IBAN),
        credit("80.00", ref="A4", scor=by_reference.reference),  # the RF of a checkout: the settlement
        credit(owed("F-2026-0470"), ref="A5", name="Garage Petit", iban=PETIT_IBAN, text="F-2026-0470",
               end_to_end="E2E-A5"),
        credit(owed("F-2026-0501"), ref="A6", text="F-2026-0501 again"),  # paid just above: a suggestion
        credit(_amount(invoices["F-2026-0504"].open_minor + invoices["F-2026-0506"].open_minor), ref="A7",
               name="Garage Petit", iban=PETIT_IBAN, text="F-2026-0504 F-2026-0506"),
        credit(_amount(invoices["F-2026-0505"].open_minor * 98 // 100 + 1), ref="A8", text="F-2026-0505 escompte"),
        Ntry(owed("F-2026-0470"), side="DBIT", reversal=True, ref="R1",  # returns A5
             txs=(Tx(owed("F-2026-0470"), "Garage Petit", PETIT_IBAN, ustrd=("F-2026-0470",),
                     end_to_end="E2E-A5"),)),
        credit(owed("F-2026-0502"), ref="A9", name="Garage Petit", iban=PETIT_IBAN, text="F-2026-0502"),
        credit("12.34", ref="A10", text="virement divers"),
        Ntry("49.90", side="DBIT", ref="D1"),
        credit(owed("F-2026-0510"), ref="A11", text="F-2026-0510", iban=MARTIN_IBAN),
    )
    day_two = camt(
        credit(owed("F-2026-0470"), ref="B1", name="Garage Petit", iban=PETIT_IBAN, text="F-2026-0470 bis"),
        credit(owed("F-2026-0512"), ref="B2", text="F-2026-0512", iban=PETIT_IBAN),
        credit(owed("F-2026-0515"), ref="B3", text="F-2026-0515"),
        statement="STMT-2")

    one_by_one, bulk = _both_ways(session, settings, [day_one, day_two])

    for part in one_by_one:
        assert bulk[part] == one_by_one[part], part
    matched = [m for m in bulk["matches"] if m[1] == "confirmed"]  # type: ignore[attr-defined]
    assert len(matched) >= 8  # the file exercised the automatic path, not only suggestions
    assert (by_number.id, "succeeded") in bulk["checkouts"]  # type: ignore[operator]
    assert (by_reference.id, "succeeded") in bulk["checkouts"]  # type: ignore[operator]
    assert any(times > 1 for _iban, _customer, times in bulk["payers"])  # type: ignore[attr-defined]


@st.composite
def _days(draw: st.DrawFn, invoices: list[tuple[str, int]]) -> list[list[tuple[str, int, str | None]]]:
    """One or two files of credits: (text, amount, payer IBAN), most naming invoices."""
    files = []
    for _file in range(draw(st.integers(1, 2))):
        credits = []
        for _credit in range(draw(st.integers(1, 12))):
            named = draw(st.lists(st.sampled_from(invoices), min_size=0, max_size=2, unique=True))
            exact = sum(open_minor for _number, open_minor in named)
            amount = draw(st.sampled_from([exact, exact, max(1, exact - 100), exact + 500])) if named else \
                draw(st.sampled_from([open_minor for _number, open_minor in invoices] + [777]))
            credits.append((" ".join(number for number, _open in named) or "virement", amount,
                            draw(st.sampled_from([None, MARTIN_IBAN, PETIT_IBAN]))))
        files.append(credits)
    return files


@pytest.fixture
def bulk_world(world: World, session: Session) -> Iterator[list[tuple[str, int]]]:
    yield [(number, open_minor) for number, open_minor in session.execute(
        select(Invoice.number, Invoice.open_minor).where(Invoice.company_id == world.acme.id).order_by(Invoice.id))]


def _assert_same_ledger_both_ways(session: Session, settings: Settings, days: list[list[tuple[str, int, str | None]]],
                                  prefix: str) -> None:
    """One camt file per day of `days` (credits of text, amount, payer IBAN), imported one by one
    and in bulk: every part of the ledger the same."""
    files = [camt(*(credit(_amount(amount), ref=f"{prefix}{day}-{index}", text=text, iban=iban)
                    for index, (text, amount, iban) in enumerate(credits)), statement=f"{prefix}-{day}")
             for day, credits in enumerate(days)]
    one_by_one, bulk = _both_ways(session, settings, files)
    for part in one_by_one:
        assert bulk[part] == one_by_one[part], part


@given(data=st.data())
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_files_leave_the_same_ledger_in_bulk_as_one_by_one(
        session: Session, bulk_world: list[tuple[str, int]], settings: Settings, data: st.DataObject) -> None:
    _assert_same_ledger_both_ways(session, settings, data.draw(_days(bulk_world)), "H")


@given(data=st.data())
@hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_files_matched_and_written_in_parts_of_any_size_leave_the_same_ledger(
        session: Session, bulk_world: list[tuple[str, int]], settings: Settings, data: st.DataObject,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The bulk path writes a statement a part at a time (`imports._PIPELINE`): whatever the part's
    size, the same ledger as one by one."""
    monkeypatch.setattr(imports, "_PIPELINE", data.draw(st.integers(1, 7)))
    _assert_same_ledger_both_ways(session, settings, data.draw(_days(bulk_world)), "P")


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    """Every test of this module runs on SQLite and on PostgreSQL."""
    return both_databases_session_factory


def test_a_match_the_ledger_refuses_stays_a_suggestion_both_ways(
        session: Session, world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The book said the credit pays F-2026-0468 exactly, but the ledger has less open by then (as
    when a payment lands between the two): no payment, the entry and its match wait for staff."""
    invoice = world.invoice(session, "F-2026-0468")
    stale_open = invoice.open_minor + 500
    loaded = imports.load_book

    def stale_book(session: Session, company_id: int) -> imports.Book:
        book = loaded(session, company_id)
        book.reopen(invoice.id, stale_open)
        return book

    monkeypatch.setattr(imports, "load_book", stale_book)
    monkeypatch.setattr(imports, "_BATCH", 2)
    monkeypatch.setattr(imports, "_PIPELINE", 2)  # the refused match in one part, the others in the next
    day = camt(credit(_amount(stale_open), ref="S1", text="Facture F-2026-0468"),
               credit(_amount(world.invoice(session, "F-2026-0501").open_minor), ref="S2", text="F-2026-0501"),
               credit(_amount(world.invoice(session, "F-2026-0503").open_minor), ref="S3", text="F-2026-0503"))

    one_by_one, bulk = _both_ways(session, settings, [day])

    for part in one_by_one:
        if part != "entries":
            assert bulk[part] == one_by_one[part], part
    states = {key: (state, by, [w.split(":")[0] for w in warnings])
              for key, state, by, warnings in bulk["entries"]}  # type: ignore[attr-defined]
    assert states == {key: (state, by, [w.split(":")[0] for w in warnings])
                      for key, state, by, warnings in one_by_one["entries"]}  # type: ignore[attr-defined]
    assert sorted(state for state, _by, _warnings in states.values()) == ["matched", "matched", "suggested"]
    assert [warnings for state, _by, warnings in states.values() if state == "suggested"] == [
        ["not matched automatically"]]
    assert sorted(m[1] for m in bulk["matches"]) == ["confirmed", "confirmed", "suggested"]  # type: ignore[attr-defined]
    assert [m[6] for m in bulk["matches"] if m[1] == "suggested"] == ["-"]  # type: ignore[attr-defined]


def _file_state(session: Session) -> dict[str, object]:
    return {"ledger": _ledger(session), "audit_rows": session.scalar(select(func.count()).select_from(AuditEvent)),
            "statements": session.scalar(select(func.count()).select_from(BankStatement))}


REFUSED = "refused by the database"


def _refuse_entries_saying(connection: Connection, text: str) -> None:
    """A trigger refusing any bank entry whose remittance text is `text`: a write failure the
    database raises itself, on either engine."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse_entry BEFORE INSERT ON bank_entries "
            f"WHEN NEW.remittance_text = '{text}' BEGIN SELECT RAISE(ABORT, 'entry refused'); END")
        return
    connection.exec_driver_sql(
        "CREATE FUNCTION refuse_entry() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.remittance_text = '{text}' THEN RAISE EXCEPTION 'entry refused'; END IF; RETURN NEW; END $$")
    connection.exec_driver_sql("CREATE TRIGGER refuse_entry BEFORE INSERT ON bank_entries "
                               "FOR EACH ROW EXECUTE FUNCTION refuse_entry()")


def test_a_file_that_fails_half_way_imports_nothing(fresh_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Matched and written two entries at a time: the first two pay invoices exactly and go onto
    the ledger (in the background on PostgreSQL) before the third is matched; the database refuses
    the third entry's row (a trigger this test adds, as a full disk or a lost connection would fail a
    write), so writing the second part fails. The import raises, and rolled back, nothing of the
    file stays: no entry, match, payment, allocation, invoice change, audit row or running total."""
    monkeypatch.setattr(imports, "_PIPELINE", 2)
    engine = make_engine(fresh_url)
    sessions = make_sessionmaker(engine)
    try:
        with unit_of_work(sessions) as session:
            world = make_world(session)
            import_csv(session, "invoices", MORE_INVOICES.encode())
            owed = {number: world.invoice(session, number).open_minor for number in ("F-2026-0501", "F-2026-0503")}
        with engine.begin() as connection:
            _refuse_entries_saying(connection, REFUSED)
        with sessions() as session:
            before = _file_state(session)
        day = camt(credit(_amount(owed["F-2026-0501"]), ref="P1", text="F-2026-0501"),
                   credit(_amount(owed["F-2026-0503"]), ref="P2", text="F-2026-0503"),
                   credit("40.00", ref="P3", text=REFUSED),
                   credit("12.00", ref="P4", text="divers"))
        with pytest.raises((DBAPIError, psycopg.Error)):
            with unit_of_work(sessions) as session:
                import_statement_file(session, day, "half.xml")
        with sessions() as session:
            assert _file_state(session) == before
            assert session.scalar(select(func.count()).select_from(BankEntry)) == 0
        with unit_of_work(sessions) as session:  # the same file without its bad entry imports whole
            report = import_statement_file(session, camt(
                credit(_amount(owed["F-2026-0501"]), ref="P1", text="F-2026-0501"),
                credit(_amount(owed["F-2026-0503"]), ref="P2", text="F-2026-0503"),
                credit("12.00", ref="P4", text="divers")), "whole.xml")
        assert (report.statements[0].matched, report.statements[0].entries_read) == (2, 3)
    finally:
        engine.dispose()
