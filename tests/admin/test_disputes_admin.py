"""Staff work the disputes queue, answer, resolve, and watch promises to pay."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.settings import Settings, load_settings
from ledger import disputes
from ledger.disputes import Upload
from ledger.models import AuditEvent, Dispute, Invoice, OutboxMessage, PromiseToPay
from ledger.storage import FileStorage
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user
from tests.conftest import TEST_SECRET

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
TODAY = date(2026, 11, 25)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings({
        "ENCOURS_DATABASE_URL": db_url,
        "ENCOURS_SECRET_KEY": TEST_SECRET,
        "ENCOURS_BASE_URL": "http://testserver",
        "ENCOURS_STORAGE_DIR": str(tmp_path / "storage"),
    })


@pytest.fixture
def storage(settings: Settings) -> FileStorage:
    return FileStorage(settings.storage_dir)


@pytest.fixture
def book(session: Session, storage: FileStorage):  # type: ignore[no-untyped-def]
    """Two companies; in the first, a customer assigned to Anne and one to nobody, each with a dispute."""
    north = factories.company(session, code="NORTH", name="North SAS")
    south = factories.company(session, code="SOUTH", name="South SAS")
    anne = make_user(session, "anne@north.test", "collector", ["NORTH"])
    mine = factories.customer(session, north, email="ap@mine.test", collector_id=anne.id)
    other = factories.customer(session, north)
    far = factories.customer(session, south)
    cases = {}
    for name, customer in (("mine", mine), ("other", other), ("far", far)):
        invoice = factories.invoice(session, customer, total_minor=1000_00, number=f"F-{name}")
        cases[name] = disputes.open_case(
            session, customer=customer, contact=customer.primary_contact, invoice_ids=[invoice.id],
            reason_code="quality", message=f"complaint {name}", uploads=[Upload(f"{name}.pdf", PDF)], storage=storage)
    session.commit()
    return cases


def _post(client: TestClient, path: str, data: dict, files=None):  # type: ignore[no-untyped-def]
    page = client.get("/admin/disputes")
    return client.post(path, data={"csrf_token": csrf_from(page.text), **data}, files=files, follow_redirects=False)


def test_queue_is_scoped_by_role(client: TestClient, new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    make_user(session, "admin@x.test", "admin")
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    make_user(session, "reader@south.test", "viewer", ["SOUTH"])
    seen = {}
    for email in ("anne@north.test", "admin@x.test", "boss@north.test", "reader@south.test"):
        c = new_client()
        assert login(c, email).status_code == 303
        text = c.get("/admin/disputes").text
        seen[email] = {name for name in ("F-mine", "F-other", "F-far") if name in text}
        for name, case in book.items():
            expected = 200 if f"F-{name}" in seen[email] else 404
            assert c.get(f"/admin/disputes/{case.id}").status_code == expected, (email, name)
            file_id = case.messages[0].attachments[0].id
            assert c.get(f"/admin/disputes/{case.id}/files/{file_id}").status_code == expected
    assert seen == {
        "anne@north.test": {"F-mine"},
        "admin@x.test": {"F-mine", "F-other", "F-far"},
        "boss@north.test": {"F-mine", "F-other"},
        "reader@south.test": {"F-far"},
    }


def test_queue_filters_and_needs_login(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/admin/disputes", follow_redirects=False).status_code == 303
    assert client.get("/admin/promises", follow_redirects=False).status_code == 303
    make_user(session, "admin@x.test", "admin")
    login(client, "admin@x.test")
    by_company = client.get("/admin/disputes?company=SOUTH").text
    assert "F-far" in by_company and "F-mine" not in by_company
    assert "F-mine" not in client.get("/admin/disputes?reason=wrong_amount").text
    assert "F-mine" not in client.get("/admin/disputes?status=accepted").text
    assert "F-mine" in client.get("/admin/disputes?status=all&sort=amount").text


def test_viewer_reads_but_cannot_act(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    make_user(session, "reader@south.test", "viewer", ["SOUTH"])
    login(client, "reader@south.test")
    case = book["far"]
    page = client.get(f"/admin/disputes/{case.id}")
    assert page.status_code == 200 and "complaint far" in page.text and "/accept" not in page.text
    for action, data in (("reply", {"message": "hello"}), ("accept", {"credit": "full", "note": "ok"}),
                         ("reject", {"note": "no"}), ("close", {})):
        assert _post(client, f"/admin/disputes/{case.id}/{action}", data).status_code == 403
    session.expire_all()
    assert session.get(Dispute, case.id).status == "open" and len(session.get(Dispute, case.id).messages) == 1


def test_reply_emails_the_debtor_a_fresh_link_and_internal_notes_stay_internal(
    client: TestClient, session: Session, book
) -> None:  # type: ignore[no-untyped-def]
    case = book["mine"]
    login(client, "anne@north.test")
    note = _post(client, f"/admin/disputes/{case.id}/reply", {"message": "Customer pays late often", "internal": "1"})
    assert note.status_code == 303
    assert session.scalar(select(func.count()).select_from(OutboxMessage)
                          .where(OutboxMessage.kind == "dispute_answer")) == 0
    answer = _post(client, f"/admin/disputes/{case.id}/reply", {"message": "We are checking", "internal": "0"},
                   files=[("files", ("proof.png", PNG, "image/png"))])
    assert answer.status_code == 303
    mail = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "dispute_answer")).one()
    assert mail.to_address == "ap@mine.test" and "http://testserver/p/" in mail.body_text
    assert "F-mine" in mail.subject
    page = client.get(f"/admin/disputes/{case.id}").text
    assert "Customer pays late often" in page and "Note interne" in page and "proof.png" in page

    # The debtor's view: the reply and its file, never the note.
    from tests.portal.conftest import login as debtor_login

    debtor = client.__class__(client.app, base_url="http://testserver")
    with debtor:
        debtor_login(debtor, session.get(Dispute, case.id).invoices[0].customer)
        thread = debtor.get(f"/portal/requests/{case.id}").text
        assert "We are checking" in thread and "proof.png" in thread
        assert "pays late" not in thread
    actions = set(session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == case.id,
                                                                  AuditEvent.entity_type == "dispute")))
    assert {"dispute.note", "dispute.message"} <= actions


def test_accept_with_a_partial_credit_note(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    case = book["mine"]
    login(client, "anne@north.test")
    bad = _post(client, f"/admin/disputes/{case.id}/accept", {"credit": "partial", "amount": "2000,00",
                                                             "note": "Sorry"})
    assert bad.status_code == 400 and "Sorry" in bad.text
    assert _post(client, f"/admin/disputes/{case.id}/accept",
                 {"credit": "partial", "amount": "abc", "note": "Sorry"}).status_code == 400
    response = _post(client, f"/admin/disputes/{case.id}/accept", {"credit": "partial", "amount": "250,00",
                                                                  "note": "We credit the broken pallets"})
    assert response.status_code == 303, response.text
    session.expire_all()
    case = session.get(Dispute, case.id)
    invoice = case.invoices[0]
    assert case.status == "accepted" and invoice.open_minor == 750_00 and invoice.status == "partially_paid"
    credit = session.get(Invoice, case.credit_note_id)
    assert credit.total_minor == 250_00 and credit.kind == "credit_note"
    assert session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "dispute_answer")).one()
    page = client.get(f"/admin/disputes/{case.id}").text
    assert credit.number in page and "/accept" not in page


def test_accept_in_full_reject_and_close_a_question(client: TestClient, session: Session, book,
                                                     storage: FileStorage) -> None:  # type: ignore[no-untyped-def]
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    login(client, "boss@north.test")
    mine, other = book["mine"], book["other"]
    assert _post(client, f"/admin/disputes/{mine.id}/accept", {"credit": "full", "note": "OK"}).status_code == 303
    assert _post(client, f"/admin/disputes/{other.id}/reject", {"note": " "}).status_code == 400
    assert _post(client, f"/admin/disputes/{other.id}/reject", {"note": "Delivered"}).status_code == 303
    session.expire_all()
    assert session.get(Dispute, mine.id).invoices[0].open_minor == 0
    assert session.get(Dispute, other.id).status == "rejected"
    assert session.get(Dispute, other.id).invoices[0].status == "open"
    customer = session.get(Dispute, other.id).invoices[0].customer
    question = disputes.open_case(session, customer=customer, contact=customer.primary_contact, kind="question",
                                  invoice_ids=[customer_invoice(session, customer)], message="PO?", storage=storage)
    session.commit()
    assert _post(client, f"/admin/disputes/{question.id}/close", {}).status_code == 303
    session.expire_all()
    assert session.get(Dispute, question.id).status == "closed"
    assert _post(client, f"/admin/disputes/{question.id}/close", {}).status_code == 400


def customer_invoice(session: Session, customer) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(Invoice.id).where(Invoice.customer_id == customer.id))


def test_the_promises_page_only_reads_and_the_worker_settles(client: TestClient, session: Session, book,  # type: ignore[no-untyped-def]
                                                             session_factory, settings: Settings, smtp_server) -> None:
    customer = book["mine"].invoices[0].customer
    due = factories.invoice(session, customer, number="F-DUE")
    late = factories.invoice(session, customer, number="F-LATE")
    disputes.make_promise(session, customer=customer, contact=None, invoice_ids=[due.id], promised_for=TODAY)
    old = disputes.make_promise(session, customer=customer, contact=None, invoice_ids=[late.id],
                                promised_for=TODAY)
    old.promised_for = TODAY - timedelta(days=10)  # made earlier, now past its grace period
    session.commit()
    login(client, "anne@north.test")
    page = client.get("/admin/promises").text
    assert "F-DUE" in page and "F-LATE" in page
    session.expire_all()  # opening a page changes nothing and emails nobody
    assert session.get(PromiseToPay, old.id).status == "pending"
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    from dataclasses import replace

    from encours import worker

    report = worker.run_once(replace(settings, smtp_url=smtp_server.url), session_factory)
    assert report.promises_broken == 1
    session.expire_all()
    assert session.get(PromiseToPay, old.id).status == "broken"
    statuses = dict(session.execute(select(PromiseToPay.id, PromiseToPay.status)).all())
    assert sorted(statuses.values()) == ["broken", "pending"]


def test_the_answer_email_follows_the_contacts_language(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    case = book["mine"]
    contact = session.get(Dispute, case.id).invoices[0].customer.primary_contact
    contact.language = "en"
    session.commit()
    login(client, "anne@north.test")
    assert _post(client, f"/admin/disputes/{case.id}/reply", {"message": "On it", "internal": "0"}).status_code == 303
    mail = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "dispute_answer")).one()
    assert mail.subject == "North SAS answered your request about F-mine"
    assert "open your account" in mail.body_text and "It stays valid for 30 days." in mail.body_text


def test_nobody_to_tell_queues_nothing(session: Session, storage: FileStorage) -> None:
    from kernel.templating import Templates
    from mail import notifications

    company = factories.company(session)  # no collector, no collections address
    customer = factories.customer(session, company)
    invoice = factories.invoice(session, customer)
    case = disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[invoice.id],
                              reason_code="other", message="?", storage=storage)
    assert notifications.notify_staff(session, case, event="opened", base_url="http://x",
                                      templates=Templates()) is None
    company.collections_email = "ar@company.test"
    mail = notifications.notify_staff(session, case, event="opened", base_url="http://x", templates=Templates())
    assert mail is not None and mail.to_address == "ar@company.test" and mail.subject.startswith("Nouvelle contestation")
