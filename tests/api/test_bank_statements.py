"""POST /api/v1/bank-statements: the real statement files of tests/reconciliation through the same
import as `encours import bank --company`, for the key's company only."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.api_keys import create_key
from ledger.companies import create_company
from ledger.models import AuditEvent, BankAccount, BankEntry, BankStatement
from reconciliation.accounts import add_account
from reconciliation.parsers import MAX_FILE_BYTES

FILES = Path(__file__).resolve().parents[1] / "reconciliation" / "files"
CAMT = FILES / "generated" / "camt053.001.08.xml"
MT940 = FILES / "wolph-mt940" / "jejik" / "abnamro.sta"
PROBLEM = "application/problem+json"


def _post(client, auth, data: bytes, media_type: str = "application/xml", query: str = ""):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/bank-statements{query}", content=data,
                       headers={**auth, "Content-Type": media_type})


def _count(session: Session, model: type) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_camt053_is_loaded_for_the_keys_company_and_loading_it_again_changes_nothing(client, auth,
                                                                                       session: Session) -> None:
    first = _post(client, auth, CAMT.read_bytes(), query="?filename=camt053.xml")
    assert first.status_code == 200, first.text
    statements = first.json()["statements"]
    assert [(s["statement_ref"], s["account"], s["company_code"], s["format"]) for s in statements] == [
        ("STMT-2026-03-02-1", "FR7630006000011234567890189", "ACME", "camt.053.001.08"),
        ("STMT-2026-03-02-2", "CH9300762011623852957", "ACME", "camt.053.001.08")]
    eur = statements[0]
    assert eur["file_name"] == "camt053.xml" and eur["already_imported"] == 0
    assert eur["entries_read"] > 0 and eur["debits"] >= 1
    assert eur["matched"] + eur["suggested"] + eur["unmatched"] + eur["debits"] <= eur["entries_read"]
    assert any("was not registered" in warning for warning in eur["warnings"])
    entries = _count(session, BankEntry)
    assert entries > 0
    assert session.execute(select(AuditEvent.actor_type, AuditEvent.actor)
                           .where(AuditEvent.action == "import.bank_statement")).all() == [("api", "sage-x3")]
    again = _post(client, auth, CAMT.read_bytes(), "application/octet-stream", "?filename=camt053.xml")
    assert again.status_code == 200, again.text
    assert [(s["already_imported"], s["entries_read"]) for s in again.json()["statements"]] == [
        (s["entries_read"], s["entries_read"]) for s in statements]
    assert _count(session, BankEntry) == entries and _count(session, BankStatement) == 2


def test_an_mt940_file_is_read_as_text(client, auth) -> None:
    answer = _post(client, auth, MT940.read_bytes(), "text/plain; charset=latin-1")
    assert answer.status_code == 200, answer.text
    assert {s["format"] for s in answer.json()["statements"]} == {"mt940"}
    assert all(s["company_code"] == "ACME" for s in answer.json()["statements"])


def test_an_account_of_another_company_refuses_the_whole_file(client, auth, session: Session) -> None:
    create_company(session, code="BETA", name="Beta SA", currency="EUR")
    add_account(session, "BETA", iban="CH9300762011623852957", currency="CHF")
    session.commit()
    answer = _post(client, auth, CAMT.read_bytes())
    assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
    assert "registered to company BETA" in answer.json()["detail"]
    assert _count(session, BankEntry) == 0 and _count(session, BankStatement) == 0
    assert _count(session, BankAccount) == 1  # the ACME account the file would have added is not kept


def test_unreadable_oversized_wrong_type_and_read_only_are_refused(client, auth, session: Session) -> None:
    broken = CAMT.read_bytes().replace(b"<Amt Ccy=\"EUR\">1200.00</Amt>", b"<Amt Ccy=\"EUR\">12x0.00</Amt>", 1)
    unreadable = _post(client, auth, broken)
    assert unreadable.status_code == 422 and unreadable.headers["content-type"] == PROBLEM
    assert "nothing imported" in unreadable.json()["detail"] and "12x0.00" in unreadable.json()["detail"]
    empty = _post(client, auth, b"")
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    assert _post(client, auth, b"x" * (MAX_FILE_BYTES + 1)).status_code == 413
    assert _post(client, auth, CAMT.read_bytes(), "application/json").status_code == 415
    _, reader = create_key(session, "ACME", "reporting", read_only=True)
    session.commit()
    assert _post(client, {"Authorization": f"Bearer {reader}"}, CAMT.read_bytes()).status_code == 403
    assert _count(session, BankEntry) == 0
