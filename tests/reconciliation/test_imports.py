"""`import_statement_file`: statements booked to the company of their account, entries kept once,
credits matched onto the ledger, bad files refused whole. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from kernel.settings import Settings
from ledger.allocation import invariant_violations
from ledger.models import (
    Allocation,
    AuditEvent,
    BankAccount,
    BankEntry,
    BankMatch,
    BankStatement,
    Checkout,
    OutboxMessage,
    Payment,
)
from ledger.statement import unapplied_credit
from payments import rf
from kernel.user_error import UserError
from reconciliation.accounts import add_account
from reconciliation.imports import import_statement_file
from tests.reconciliation.bank_world import (
    ACME_IBAN,
    MARTIN_IBAN,
    OTHER_IBAN,
    PETIT_IBAN,
    World,
    camt,
    credit,
    make_world,
    transfer_checkout,
)
from tests.reconciliation.camt_builder import Doc, Ntry, Stmt, Tx, build


@pytest.fixture
def world(session: Session) -> World:
    return make_world(session)


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def _ledger(session: Session) -> tuple[object, ...]:
    return (
        _count(session, BankStatement), _count(session, BankEntry), _count(session, BankMatch),
        _count(session, Payment), _count(session, Allocation), _count(session, BankAccount),
        session.execute(select(func.sum(Payment.amount_minor))).scalar(),
    )


def test_a_transfer_naming_the_rf_of_a_checkout_pays_its_invoices_once(
        session: Session, world: World, settings: Settings) -> None:
    martin = world.customer(session, "C-MARTIN")
    invoices = [world.invoice(session, "F-2026-0468"), world.invoice(session, "F-2026-0469")]
    checkout = transfer_checkout(session, settings, martin, invoices)
    data = camt(credit("200.00", ref="E1", scor=checkout.reference), Ntry("49.90", side="DBIT", ref="D1"))

    report = import_statement_file(session, data, "2026-11-25.xml", settings=settings)

    [summary] = report.statements
    assert (summary.entries_read, summary.matched, summary.suggested, summary.unmatched, summary.debits,
            summary.already_imported) == (2, 1, 0, 0, 1, 0)
    assert summary.company_code == "ACME" and summary.account == ACME_IBAN
    assert [(i.status, i.open_minor) for i in (world.invoice(session, "F-2026-0468"),
                                                world.invoice(session, "F-2026-0469"))] == [("paid", 0), ("paid", 0)]
    payment = session.scalar(select(Payment).where(Payment.provider == "bank"))
    assert payment is not None
    assert (payment.status, payment.method, payment.amount_minor, payment.checkout_id, payment.received_on) == (
        "succeeded", "bank_transfer", 200_00, checkout.id, date(2026, 11, 25))
    session.refresh(checkout)
    assert checkout.status == "succeeded"
    match = session.scalar(select(BankMatch))
    assert match is not None and (match.state, match.evidence, match.decided_by) == ("confirmed", "rf_reference", "rule")
    assert session.scalar(select(OutboxMessage.kind).where(OutboxMessage.customer_id == martin.id)) == "receipt"
    assert invariant_violations(session) == []

    before = _ledger(session)
    again = import_statement_file(session, data, "2026-11-25.xml", settings=settings)
    assert [(s.entries_read, s.already_imported, s.matched) for s in again.statements] == [(2, 2, 0)]
    assert _ledger(session) == before


def test_invoice_numbers_and_the_exact_amount_settle_with_the_discount_of_the_value_date(
        session: Session, world: World, settings: Settings) -> None:
    data = camt(credit("980.00", ref="E1", name="GARAGE PETIT", iban=PETIT_IBAN, text="Fact. F2026/0471",
                       day="2026-11-28"))
    [summary] = import_statement_file(session, data, "s.xml", settings=settings).statements
    assert summary.matched == 1
    invoice = world.invoice(session, "F-2026-0471")
    assert (invoice.status, invoice.open_minor) == ("paid", 0)
    allocation = session.scalar(select(Allocation).where(Allocation.invoice_id == invoice.id))
    assert allocation is not None and (allocation.amount_minor, allocation.discount_minor) == (980_00, 20_00)
    assert invariant_violations(session) == []


def test_the_discounted_amount_after_the_discount_date_is_only_suggested(
        session: Session, world: World, settings: Settings) -> None:
    data = camt(credit("980.00", ref="E1", name="GARAGE PETIT", iban=PETIT_IBAN, text="F-2026-0471",
                       day="2026-12-01"))
    [summary] = import_statement_file(session, data, "s.xml", settings=settings).statements
    assert (summary.matched, summary.suggested) == (0, 1)
    assert world.invoice(session, "F-2026-0471").open_minor == 1000_00
    match = session.scalar(select(BankMatch))
    assert match is not None and match.state == "suggested" and "differs" in match.reason


def test_a_payer_seen_once_is_recognised_the_next_time(session: Session, world: World, settings: Settings) -> None:
    first = camt(credit("175.00", ref="E1", name="Garage Petit", iban=PETIT_IBAN, text="F-2026-0470"))
    import_statement_file(session, first, "d1.xml", settings=settings)
    second = camt(credit("1000.00", ref="E2", name="G.P.", iban=PETIT_IBAN, text="virement"), statement="STMT-2")
    import_statement_file(session, second, "d2.xml", settings=settings)
    entry = session.scalar(select(BankEntry).where(BankEntry.amount_minor == 1000_00))
    match = session.scalar(select(BankMatch).where(BankMatch.entry_id == entry.id))  # type: ignore[union-attr]
    assert match is not None and (match.evidence, match.state) == ("payer_iban", "suggested")
    assert [line.invoice_id for line in match.lines] == [world.invoice(session, "F-2026-0471").id]


def test_an_unknown_account_is_refused_without_a_company_and_booked_with_one(
        session: Session, world: World, settings: Settings) -> None:
    data = camt(credit("120.00", ref="E1", text="F-2026-0468"), iban="DE89370400440532013000")
    before = _ledger(session)
    with pytest.raises(UserError) as refused:
        import_statement_file(session, data, "unknown.xml", settings=settings)
    assert "DE89370400440532013000 belongs to no company" in str(refused.value)
    assert "--company" in str(refused.value)
    assert _ledger(session) == before

    [summary] = import_statement_file(session, data, "unknown.xml", company_code="ACME", settings=settings).statements
    assert summary.company_code == "ACME" and summary.matched == 1
    assert any("was not registered" in warning for warning in summary.warnings)


def test_a_csv_naming_no_account_is_booked_with_the_company_to_its_one_account_in_that_currency(
        session: Session, world: World, settings: Settings) -> None:
    """The issue's plain CSV (date, amount, currency, name, IBAN, text) names no account: with
    --company it goes to that company's one active account in its currency, and its text is read;
    with two such accounts, or without --company, nothing is imported."""
    data = (b"date;amount;currency;name;iban;text;balance\n"
            b"2026-11-25;120,00;EUR;Boulangeries Martin;" + MARTIN_IBAN.encode() + b";Facture F-2026-0468;999\n")
    with pytest.raises(UserError, match="names no account"):
        import_statement_file(session, data, "plain.csv", settings=settings)
    add_account(session, "ACME", iban="FR7611808009101234567890147", currency="EUR")
    before = _ledger(session)
    with pytest.raises(UserError) as refused:
        import_statement_file(session, data, "plain.csv", company_code="ACME", settings=settings)
    assert str(refused.value) == ("plain.csv: nothing imported: the file names no account, and company ACME has 2 "
                                  "active EUR accounts: add an account_iban column to the file.")
    assert refused.value.render("fr").startswith("plain.csv : rien n’a été importé : le fichier ne nomme aucun compte")
    assert _ledger(session) == before
    session.execute(text("UPDATE bank_accounts SET active = false WHERE iban = 'FR7611808009101234567890147'"))

    [summary] = import_statement_file(session, data, "plain.csv", company_code="ACME", settings=settings).statements
    assert summary.account == ACME_IBAN and summary.matched == 1
    assert summary.warnings == ["columns not read: balance",
                                f"the file names no account: booked to ACME's EUR account {ACME_IBAN}"]
    assert session.scalar(select(BankEntry.remittance_text)) == "Facture F-2026-0468"


def test_an_account_of_another_company_is_refused_when_the_company_is_named(
        session: Session, world: World, settings: Settings) -> None:
    data = camt(credit("333.00", ref="E1", text="F-2026-0472"), iban=OTHER_IBAN)
    with pytest.raises(UserError, match="registered to company OTHER, not ACME"):
        import_statement_file(session, data, "o.xml", company_code="ACME", settings=settings)


def test_the_rf_of_another_companys_checkout_is_never_matched_to_it(
        session: Session, world: World, settings: Settings) -> None:
    other_customer = world.customer(session, "O-1")
    checkout = transfer_checkout(session, settings, other_customer, [world.invoice(session, "F-2026-0472")])
    data = camt(credit("333.00", ref="E1", scor=checkout.reference))  # paid into ACME's account
    [summary] = import_statement_file(session, data, "s.xml", settings=settings).statements
    assert summary.matched == 0
    assert any("belongs to another company" in warning for warning in summary.warnings)
    assert world.invoice(session, "F-2026-0472").open_minor == 333_00
    assert session.scalar(select(Checkout.status).where(Checkout.id == checkout.id)) == "open"
    assert all(line.invoice_id != world.invoice(session, "F-2026-0472").id
               for match in session.scalars(select(BankMatch)) for line in match.lines)


def test_an_entry_in_another_currency_than_its_account_waits_with_a_warning(
        session: Session, world: World, settings: Settings) -> None:
    data = camt(credit("120.00", ref="E1", text="F-2026-0468"), currency="USD")
    [summary] = import_statement_file(session, data, "usd.xml", settings=settings).statements
    assert (summary.matched, summary.unmatched) == (0, 1)
    assert any("in USD, the account in EUR" in warning for warning in summary.warnings)


def test_two_identical_entries_in_one_file_are_both_kept_and_a_reload_keeps_nothing_more(
        session: Session, world: World, settings: Settings) -> None:
    twin = Ntry("50.00", ref=None, booking="2026-11-25", value="2026-11-25",
                txs=(Tx("50.00", "Client X", None, ustrd=("acompte",)),))
    data = camt(twin, twin)
    [summary] = import_statement_file(session, data, "twins.xml", settings=settings).statements
    assert summary.entries_read == 2 and summary.already_imported == 0
    assert _count(session, BankEntry) == 2
    [again] = import_statement_file(session, data, "twins.xml", settings=settings).statements
    assert again.already_imported == 2 and _count(session, BankEntry) == 2


def test_a_returned_transfer_reopens_exactly_what_it_paid(session: Session, world: World, settings: Settings) -> None:
    paid = camt(credit("175.00", ref="E1", name="Garage Petit", iban=PETIT_IBAN, text="F-2026-0470",
                       end_to_end="E2E-77"))
    import_statement_file(session, paid, "d1.xml", settings=settings)
    assert world.invoice(session, "F-2026-0470").status == "paid"
    returned = camt(Ntry("175.00", side="DBIT", reversal=True, ref="R1", booking="2026-11-27", value="2026-11-27",
                         txs=(Tx("175.00", "Garage Petit", PETIT_IBAN, ustrd=("F-2026-0470",),
                                 end_to_end="E2E-77"),)), statement="STMT-2")
    [summary] = import_statement_file(session, returned, "d2.xml", settings=settings).statements
    assert summary.matched == 1
    invoice = world.invoice(session, "F-2026-0470")
    assert (invoice.status, invoice.open_minor) == ("open", 175_00)
    payment = session.scalar(select(Payment).where(Payment.provider == "bank"))
    assert payment is not None and (payment.status, payment.failure_reason) == ("failed", "returned by the bank")
    assert [m.state for m in session.scalars(select(BankMatch).order_by(BankMatch.id))] == ["undone", "confirmed"]
    assert unapplied_credit(session, invoice.customer_id) == {}
    assert invariant_violations(session) == []


def test_an_import_is_on_the_audit_trail(session: Session, world: World, settings: Settings) -> None:
    import_statement_file(session, camt(credit("120.00", ref="E1", text="F-2026-0468")), "a.xml", settings=settings)
    actions = set(session.scalars(select(AuditEvent.action)))
    assert {"import.bank_statement", "bank_match.confirmed", "payment.succeeded"} <= actions


# --- bad files: each refused whole, with a message naming what and where ---------------------------


def _refused(session: Session, data: bytes, name: str, settings: Settings) -> str:
    before = _ledger(session)
    with pytest.raises(UserError) as refused:
        import_statement_file(session, data, name, settings=settings)
    assert _ledger(session) == before
    return str(refused.value)


def test_malformed_xml_is_refused_with_where(session: Session, world: World, settings: Settings) -> None:
    data = camt(credit("120.00", ref="E1", text="F-2026-0468")).replace(b"</Ntry>", b"</Ntr>", 1)
    message = _refused(session, data, "broken.xml", settings)
    assert message.startswith("broken.xml: nothing imported: the file is not well-formed XML") and "line" in message


def test_a_refusal_reads_in_the_staff_members_language_with_where(session: Session, world: World,
                                                                  settings: Settings) -> None:
    data = camt(credit("120.00", ref="E1", text="F-2026-0468")).replace(b"</Ntry>", b"</Ntr>", 1)
    with pytest.raises(UserError) as refused:
        import_statement_file(session, data, "broken.xml", settings=settings)
    line = refused.value.values["problem"].line
    assert line is not None and str(refused.value).endswith(f" (at line {line})")
    french = refused.value.render("fr")
    assert french.startswith("broken.xml : rien n’a été importé : le fichier n’est pas un XML bien formé : ")
    assert french.endswith(f" (ligne {line})")


def test_every_bad_line_of_a_csv_statement_is_listed(session: Session, world: World, settings: Settings) -> None:
    data = b"date;montant;devise\n2026-03-02;10,005;EUR\n2026-03-02;1,00;EURO\n"
    before = _ledger(session)
    with pytest.raises(UserError) as refused:
        import_statement_file(session, data, "releve.csv", settings=settings)
    assert _ledger(session) == before
    assert str(refused.value) == (
        "releve.csv: nothing imported: 2 bad line(s): line 2: amount: '10,005' has more than 2 decimals for EUR; "
        "line 3: currency: expected an ISO 4217 code such as EUR, got 'EURO'")
    assert refused.value.render("fr") == (
        "releve.csv : rien n’a été importé : 2 ligne(s) incorrecte(s) : ligne 2 : amount : '10,005' a plus de "
        "2 décimales pour la devise EUR ; ligne 3 : currency : code ISO 4217 attendu, par exemple EUR ; reçu 'EURO'")


def test_an_external_entity_is_refused(session: Session, world: World, settings: Settings) -> None:
    data = (b'<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>&x;'
            b'</BkToCstmrStmt></Document>')
    message = _refused(session, data, "xxe.xml", settings)
    assert "nothing imported" in message and "root:" not in message


def test_a_file_over_50_mb_is_refused_unread(session: Session, world: World, settings: Settings) -> None:
    data = b"<?xml version='1.0'?>" + b" " * (50 * 1024 * 1024 + 1)
    message = _refused(session, data, "huge.xml", settings)
    assert "MiB" in message and "nothing imported" in message


def test_an_amount_with_too_many_decimals_is_refused_naming_the_element(
        session: Session, world: World, settings: Settings) -> None:
    data = camt(credit("120.00", ref="E1", text="F-2026-0468"), credit("12.345", ref="E2"))
    message = _refused(session, data, "decimals.xml", settings)
    assert "Ntry[2]" in message and "decimals" in message


def test_a_second_statement_that_fails_keeps_the_first_out_too(
        session: Session, world: World, settings: Settings) -> None:
    good = Stmt(id="S1", iban=ACME_IBAN, currency="EUR", entries=(credit("80.00", ref="E2", text="F-2026-0469"),))
    unknown = Stmt(id="S2", iban="DE89370400440532013000", currency="EUR",
                   entries=(credit("120.00", ref="E1", text="F-2026-0468"),))
    joined = build(Doc("053", 2, (good, unknown)))
    message = _refused(session, joined, "two.xml", settings)
    assert "belongs to no company" in message
    assert world.invoice(session, "F-2026-0469").open_minor == 80_00


def test_an_rf_reference_is_checked_before_use(session: Session, world: World, settings: Settings) -> None:
    martin = world.customer(session, "C-MARTIN")
    checkout = transfer_checkout(session, settings, martin, [world.invoice(session, "F-2026-0468")])
    assert checkout.reference is not None
    wrong = checkout.reference[:-1] + ("0" if checkout.reference[-1] != "0" else "1")
    assert not rf.is_valid(wrong)
    [summary] = import_statement_file(session, camt(credit("120.00", ref="E1", text=f"ref {wrong}")), "s.xml",
                                      settings=settings).statements
    match = session.scalar(select(BankMatch))
    assert match is None or match.checkout_id is None
    assert summary.matched == 0 or match is not None and match.evidence != "rf_reference"


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    """Every test of this module runs on SQLite and on PostgreSQL."""
    return both_databases_session_factory


def test_on_postgresql_the_import_plans_each_statement_anew(pg_session: Session, settings: Settings) -> None:
    """The entries table grows inside the import's transaction: a generic plan the driver prepared
    while it was empty (the duplicate check runs first) would stay a sequential scan for every
    later look-up by identity key; the 50,000-entry bench spent minutes there (bench/RESULTS.md)."""
    make_world(pg_session)
    import_statement_file(pg_session, camt(credit("12.00", ref="PLAN1")), "plan.xml", settings=settings)
    assert pg_session.execute(text("SELECT current_setting('plan_cache_mode')")).scalar() == "force_custom_plan"
