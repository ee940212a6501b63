"""The debtor disputes, asks, follows its cases and promises to pay, through the portal."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.settings import Settings, load_settings
from admin.staff_accounts import create_user
from ledger import disputes
from ledger.disputes import Upload
from ledger.models import Attachment, Dispute, OutboxMessage, PromiseToPay
from ledger.storage import FileStorage
from tests import factories
from tests.conftest import TEST_SECRET
from tests.portal.conftest import csrf_from, login

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
def book(session: Session):  # type: ignore[no-untyped-def]
    company = factories.company(session, name="Durand Industrie SAS", collections_email="recouvrement@durand.test")
    customer = factories.customer(session, company, language="fr")
    first = factories.invoice(session, customer, total_minor=1000_00, number="F-1", due_date=date(2026, 11, 1))
    second = factories.invoice(session, customer, total_minor=500_00, number="F-2", due_date=date(2026, 12, 20))
    session.commit()
    return company, customer, first, second


def _csrf(client: TestClient, path: str = "/portal/requests/new") -> str:
    return csrf_from(client.get(path).text)


def _dispute(client: TestClient, invoice_ids: list[int], *, reason: str = "quality", message: str = "Broken",
             files: list[tuple[str, bytes]] = (), kind: str = "dispute"):  # type: ignore[assignment]
    data = {"csrf_token": _csrf(client), "kind": kind, "reason": reason, "message": message,
            "invoice": [str(i) for i in invoice_ids]}
    parts = [("files", (name, content, "application/octet-stream")) for name, content in files]
    return client.post("/portal/requests/new", data=data, files=parts or None, follow_redirects=False)


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_dispute_with_files_sets_the_invoice_aside_and_tells_the_collections_team(
    client: TestClient, session: Session, book
) -> None:  # type: ignore[no-untyped-def]
    company, customer, first, second = book
    login(client, customer)
    page = client.get(f"/portal/invoices/{first.id}")
    assert f'href="/portal/requests/new?invoice={first.id}"' in page.text
    form = client.get(f"/portal/requests/new?invoice={first.id}")
    assert "Problème de qualité" in form.text and 'checked' in form.text
    response = _dispute(client, [first.id, second.id], files=[("photo.png", PNG), ("bon.pdf", PDF)])
    assert response.status_code == 303, response.text
    case = session.scalars(select(Dispute)).one()
    assert response.headers["location"] == f"/portal/requests/{case.id}?done=dispute"
    session.expire_all()
    assert {i.status for i in case.invoices} == {"disputed"}
    mail = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "dispute_opened")).one()
    assert mail.to_address == "recouvrement@durand.test" and f"/admin/disputes/{case.id}" in mail.body_text
    statement = client.get("/portal").text
    assert "Contestée" in statement
    thread = client.get(response.headers["location"]).text
    assert "Broken" in thread and "photo.png" in thread and "bon.pdf" in thread
    invoice_page = client.get(f"/portal/invoices/{first.id}").text
    assert "Contestée" in invoice_page and f"/portal/requests/new?invoice={first.id}" not in invoice_page


def test_the_assigned_collector_is_told_rather_than_the_team(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    company, customer, first, _ = book
    collector = create_user(session, email="anne@durand.test", role="collector", password="long enough password",
                            company_codes=[company.code])
    customer.collector_id = collector.id
    session.commit()
    login(client, customer)
    assert _dispute(client, [first.id]).status_code == 303
    mail = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "dispute_opened")).one()
    assert mail.to_address == "anne@durand.test"


@pytest.mark.parametrize(
    ("files", "fields", "expected"),
    [
        ([(f"f{n}.pdf", PDF) for n in range(6)], {}, "au plus 5 fichiers"),
        ([("big.pdf", PDF + b"0" * (10 * 1024 * 1024))], {}, "big.pdf dépasse 10 Mo"),
        ([("facture.pdf", PNG)], {}, "facture.pdf : son contenu ne correspond pas à son nom"),
        ([("virus.exe", b"MZ\x90\x00")], {}, "seuls les fichiers PDF, PNG et JPEG"),
        ([], {"message": "   "}, "Veuillez écrire un message"),
        ([], {"reason": "nope"}, "Choisissez un motif dans la liste"),
        ([], {"invoice": []}, "Choisissez au moins une facture"),
    ],
)
def test_bad_input_explains_keeps_what_was_typed_and_stores_nothing(
    client: TestClient, session: Session, book, files, fields, expected
) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, _ = book
    login(client, customer)
    data = {"csrf_token": _csrf(client), "kind": "dispute", "reason": "quality",
            "message": "Palettes cassées à la livraison", "invoice": [str(first.id)], **fields}
    parts = [("files", (name, content, "application/octet-stream")) for name, content in files]
    response = client.post("/portal/requests/new", data=data, files=parts or None)
    assert response.status_code == 400
    text = response.text.replace("&#39;", "'")
    assert expected in text, text
    if "message" not in fields:
        assert "Palettes cassées à la livraison" in text
    if "invoice" not in fields:
        assert re.search(rf'value="{first.id}" id="invoice-{first.id}" checked', text)
    session.expire_all()
    assert _count(session, Dispute) == 0 and _count(session, Attachment) == 0
    assert session.get(type(first), first.id).status == "open"


def test_another_customers_invoice_case_and_file_are_not_found(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    company, customer, first, _ = book
    other = factories.customer(session, company)
    theirs = factories.invoice(session, other, number="F-OTHER")
    storage = FileStorage(client.app.state.settings.storage_dir)
    case = disputes.open_case(session, customer=other, contact=other.primary_contact, invoice_ids=[theirs.id],
                              reason_code="other", message="secret", uploads=[Upload("x.pdf", PDF)], storage=storage)
    file_id = case.messages[0].attachments[0].id
    session.commit()
    login(client, customer)
    assert _dispute(client, [theirs.id]).status_code == 400
    assert client.get(f"/portal/requests/{case.id}").status_code == 404
    assert client.get(f"/portal/requests/{case.id}/files/{file_id}").status_code == 404
    reply = client.post(f"/portal/requests/{case.id}/reply",
                        data={"csrf_token": _csrf(client), "message": "hi"})
    assert reply.status_code == 404
    promise = client.post("/portal/promises/new", data={"csrf_token": _csrf(client), "invoice": [str(theirs.id)],
                                                         "date": TODAY.isoformat()})
    assert promise.status_code == 400
    session.expire_all()
    assert len(session.get(Dispute, case.id).messages) == 1 and _count(session, PromiseToPay) == 0


def test_reply_with_a_file_download_and_internal_notes_stay_hidden(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    company, customer, first, _ = book
    login(client, customer)
    _dispute(client, [first.id], files=[("bon de livraison.pdf", PDF)])
    case = session.scalars(select(Dispute)).one()
    staff = create_user(session, email="boss@durand.test", role="admin", password="long enough password",
                        company_codes=[])
    storage = FileStorage(client.app.state.settings.storage_dir)
    disputes.add_message(session, case, body="Note: customer is often late", user=staff, internal=True,
                         uploads=[Upload("internal.png", PNG)], storage=storage)
    disputes.add_message(session, case, body="We are checking with the warehouse", user=staff, storage=storage)
    session.commit()
    internal_file = session.scalars(select(Attachment).where(Attachment.filename == "internal.png")).one()
    page = client.get(f"/portal/requests/{case.id}").text
    assert "checking with the warehouse" in page and "Durand Industrie SAS" in page
    assert "often late" not in page and "internal.png" not in page
    assert client.get(f"/portal/requests/{case.id}/files/{internal_file.id}").status_code == 404

    reply = client.post(f"/portal/requests/{case.id}/reply", data={"csrf_token": csrf_from(page), "message": "Merci"},
                        files=[("files", ("photo.png", PNG, "image/png"))], follow_redirects=False)
    assert reply.status_code == 303
    assert session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "dispute_replied")).one()
    photo = session.scalars(select(Attachment).where(Attachment.filename == "photo.png")).one()
    download = client.get(f"/portal/requests/{case.id}/files/{photo.id}")
    assert download.status_code == 200 and download.content == PNG
    assert download.headers["content-type"] == "image/png"
    assert download.headers["content-disposition"].startswith('attachment; filename="photo.png"')
    assert download.headers["x-content-type-options"] == "nosniff"
    pdf = session.scalars(select(Attachment).where(Attachment.filename == "bon de livraison.pdf")).one()
    assert client.get(f"/portal/requests/{case.id}/files/{pdf.id}").headers["content-type"] == "application/pdf"
    # A file id of this customer under another case id is not found either.
    assert client.get(f"/portal/requests/{case.id + 1000}/files/{photo.id}").status_code == 404

    empty = client.post(f"/portal/requests/{case.id}/reply", data={"csrf_token": csrf_from(page), "message": " "})
    assert empty.status_code == 400 and "Veuillez écrire un message" in empty.text


def test_question_changes_nothing_due_and_a_closed_case_takes_no_reply(client: TestClient, session: Session,
                                                                        book) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, _ = book
    login(client, customer)
    response = _dispute(client, [first.id], kind="question", reason="", message="Quel bon de commande ?")
    assert response.status_code == 303
    case = session.scalars(select(Dispute)).one()
    session.expire_all()
    assert case.kind == "question" and session.get(type(first), first.id).status == "open"
    listing = client.get("/portal/requests").text
    assert f"Question {case.id}" in listing and "En cours" in listing
    case.status = "closed"
    session.commit()
    reply = client.post(f"/portal/requests/{case.id}/reply", data={"csrf_token": _csrf(client), "message": "Et ?"})
    assert reply.status_code == 400 and "Cette demande est close" in reply.text
    assert len(session.get(Dispute, case.id).messages) == 1


def test_csrf_is_required_on_the_multipart_form(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, _ = book
    login(client, customer)
    response = client.post("/portal/requests/new", data={"kind": "dispute", "reason": "quality", "message": "x",
                                                         "invoice": [str(first.id)]},
                           files=[("files", ("a.pdf", PDF, "application/pdf"))])
    assert response.status_code == 403 and _count(session, Dispute) == 0


def test_routes_ask_for_the_link_without_a_session(client: TestClient, book) -> None:  # type: ignore[no-untyped-def]
    for path in ("/portal/requests", "/portal/requests/new", "/portal/requests/1", "/portal/promises/new",
                 "/portal/requests/1/files/1"):
        assert client.get(path).status_code == 401, path


def test_promise_shows_its_amount_and_is_listed(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, second = book
    login(client, customer)
    form = client.get(f"/portal/promises/new?invoice={first.id}&invoice={second.id}")
    assert "1 500,00" in form.text.replace("\u202f", " ").replace("\xa0", " ")
    fragment = client.get(f"/portal/promises/new?invoice={second.id}", headers={"HX-Request": "true"})
    assert fragment.text.strip().startswith("<p id=\"promise-total\"") and "500,00" in fragment.text
    day = TODAY + timedelta(days=10)
    response = client.post("/portal/promises/new", data={"csrf_token": csrf_from(form.text), "date": day.isoformat(),
                                                          "invoice": [str(first.id), str(second.id)]},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    promise = session.scalars(select(PromiseToPay)).one()
    assert promise.amount_minor == 1500_00 and promise.promised_for == day
    listing = client.get(response.headers["location"]).text.replace("\u202f", " ").replace("\xa0", " ")
    assert "1 500,00 €" in listing and "En attente" in listing and "promesse de paiement a été enregistrée" in listing


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (TODAY - timedelta(days=1), "La date est passée"),
        (TODAY + timedelta(days=31), "La date doit être dans les 30 jours"),
        (None, "Choisissez la date"),
    ],
)
def test_bad_promise_dates_are_refused(client: TestClient, session: Session, book, day, expected) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, _ = book
    login(client, customer)
    response = client.post("/portal/promises/new", data={
        "csrf_token": _csrf(client, "/portal/promises/new"), "date": day.isoformat() if day else "",
        "invoice": [str(first.id)]})
    assert response.status_code == 400 and expected in response.text
    assert re.search(rf'value="{first.id}" id="invoice-{first.id}" checked', response.text)
    assert _count(session, PromiseToPay) == 0


def test_english_debtor_reads_english(client: TestClient, session: Session) -> None:
    company = factories.company(session)
    customer = factories.customer(session, company, language="en")
    factories.invoice(session, customer)
    session.commit()
    login(client, customer)
    page = client.get("/portal/requests/new").text
    assert "Dispute invoices" in page and "Quality problem" in page


def test_a_disputed_invoice_paid_anyway_keeps_its_case_open(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    from ledger.allocation import allocate
    from ledger.models import Payment
    from ledger.money import Money

    _, customer, first, _ = book
    login(client, customer)
    assert _dispute(client, [first.id]).status_code == 303
    case = session.scalars(select(Dispute)).one()
    payment = Payment(customer_id=customer.id, provider="manual", method="bank_transfer", amount_minor=1000_00,
                      currency="EUR", status="succeeded")
    session.add(payment)
    session.flush()
    allocate(session, session.get(type(first), first.id), Money(1000_00, "EUR"), payment=payment)
    session.commit()
    session.expire_all()
    assert session.get(type(first), first.id).open_minor == 0 and session.get(Dispute, case.id).status == "open"
    assert "En cours" in client.get(f"/portal/requests/{case.id}").text


def test_a_file_name_in_any_script_downloads(client: TestClient, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, _ = book
    login(client, customer)
    assert _dispute(client, [first.id], files=[("reçu 発票.pdf", PDF)]).status_code == 303
    case = session.scalars(select(Dispute)).one()
    attachment = session.scalars(select(Attachment)).one()
    download = client.get(f"/portal/requests/{case.id}/files/{attachment.id}")
    assert download.status_code == 200 and download.content == PDF
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"re_u __.pdf\"; filename*=UTF-8''re%C3%A7u%20%E7%99%BA%E7%A5%A8.pdf")


def test_a_dispute_may_name_the_disputed_part_the_rest_stays_payable(
    client: TestClient, session: Session, book  # type: ignore[no-untyped-def]
) -> None:
    _company, customer, first, second = book
    login(client, customer)
    token = _csrf(client)
    two = client.post("/portal/requests/new", follow_redirects=False, data={
        "csrf_token": token, "kind": "dispute", "reason": "quality", "message": "Une partie manque",
        "invoice": [str(first.id), str(second.id)], "disputed_amount": "100"})
    assert two.status_code == 400 and "Indiquez un montant contesté pour une seule facture à la fois." in two.text
    bad = client.post("/portal/requests/new", follow_redirects=False, data={
        "csrf_token": token, "kind": "dispute", "reason": "quality", "message": "Une partie manque",
        "invoice": [str(first.id)], "disputed_amount": "1500"})
    assert bad.status_code == 400 and "Le montant contesté doit être supérieur à zéro et au plus" in bad.text
    assert 'value="1500"' in bad.text  # what was typed is kept
    done = client.post("/portal/requests/new", follow_redirects=False, data={
        "csrf_token": token, "kind": "dispute", "reason": "quality", "message": "Une partie manque",
        "invoice": [str(first.id)], "disputed_amount": "250,00"})
    assert done.status_code == 303
    case = session.scalar(select(Dispute).where(Dispute.customer_id == customer.id))
    assert case is not None and case.disputed_minor == 250_00
    session.refresh(first)
    assert first.status == "open"  # still due: only its part is set aside
    statement = client.get("/portal").text.replace("\u202f", " ").replace("\u00a0", " ")
    assert "250,00 € en litige" in statement
    assert re.search(r"En litige, mis de côté</dt><dd>-250,00 €", statement)
    assert re.search(r'class="grand-total"><dt>Total à régler</dt><dd>1 250,00 €', statement)  # 750 + 500
    invoice_page = client.get(f"/portal/invoices/{first.id}").text
    assert "Payer cette facture" in invoice_page and f"/portal/requests/new?invoice={first.id}" not in invoice_page
