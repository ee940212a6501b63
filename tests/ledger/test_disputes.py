from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.clock import clock
from admin.staff_accounts import create_user
from ledger import disputes
from ledger.allocation import invariant_violations
from kernel.user_error import UserError
from ledger.disputes import Upload
from ledger.models import Attachment, AuditEvent, Dispute, PromiseToPay
from ledger.statement import build_statement
from ledger.storage import FileStorage
from tests import factories

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
TODAY = date(2026, 11, 25)


@pytest.fixture
def storage(tmp_path: Path) -> FileStorage:
    return FileStorage(tmp_path / "storage")


@pytest.fixture
def book(session: Session):  # type: ignore[no-untyped-def]
    company = factories.company(session)
    customer = factories.customer(session, company)
    first = factories.invoice(session, customer, total_minor=1000_00, due_date=date(2026, 11, 1))
    second = factories.invoice(session, customer, total_minor=500_00, due_date=date(2026, 12, 20))
    collector = create_user(session, email=f"collector{company.id}@example.com", role="collector",
                            password="long enough password", company_codes=[company.code])
    return company, customer, first, second, collector


def test_dispute_takes_invoice_out_of_amount_due_and_keeps_files(session: Session, storage: FileStorage,
                                                                  book) -> None:  # type: ignore[no-untyped-def]
    company, customer, first, second, _ = book
    case = disputes.open_case(
        session, customer=customer, contact=customer.primary_contact, invoice_ids=[first.id],
        reason_code="quality", message="  Half the pallets arrived broken.  ",
        uploads=[Upload("photo.png", PNG), Upload("delivery note.pdf", PDF)], storage=storage,
    )
    assert first.status == "disputed" and case.messages[0].body == "Half the pallets arrived broken."
    (eur,) = build_statement(session, customer, TODAY).sections
    assert eur.total_due.minor == 500_00 and eur.disputed.minor == 1000_00 and eur.overdue.minor == 0
    files = session.scalars(select(Attachment)).all()
    assert sorted(f.content_type for f in files) == ["application/pdf", "image/png"]
    assert storage.read(files[0].storage_key) in (PDF, PNG)
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "dispute.opened"))


@pytest.mark.parametrize(
    ("uploads", "message"),
    [
        ([Upload(f"f{n}.pdf", PDF) for n in range(6)], "at most 5 files"),
        ([Upload("big.pdf", PDF + b"0" * (10 * 1024 * 1024))], "larger than 10 MB"),
        ([Upload("invoice.pdf", PNG)], "does not match its name"),
        ([Upload("script.exe", b"MZ\x90\x00")], "only PDF, PNG and JPEG"),
        ([Upload("empty.pdf", b"")], "empty"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_stored(session: Session, storage: FileStorage, book, uploads,
                                                     message) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, *_ = book
    with pytest.raises(UserError, match=message):
        disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[first.id],
                           reason_code="other", message="see file", uploads=uploads, storage=storage)
    assert first.status == "open"
    assert session.scalar(select(func.count()).select_from(Dispute)) == 0
    assert not (storage.backend.root.exists() and any(storage.backend.root.rglob("*")))  # type: ignore[attr-defined]


def test_bad_reason_empty_message_and_foreign_invoice(session: Session, storage: FileStorage, book) -> None:  # type: ignore[no-untyped-def]
    company, customer, first, *_ = book
    stranger = factories.customer(session, company)
    theirs = factories.invoice(session, stranger)
    cases = [
        ({"reason_code": "nope", "message": "x", "invoice_ids": [first.id]}, "Choose a reason from the list"),
        ({"reason_code": "other", "message": "   ", "invoice_ids": [first.id]}, "Please write a message"),
        ({"reason_code": "other", "message": "x", "invoice_ids": [theirs.id]}, "is not on your account"),
        ({"reason_code": "other", "message": "x", "invoice_ids": []}, "at least one invoice"),
    ]
    for arguments, message in cases:
        with pytest.raises(UserError, match=message):
            disputes.open_case(session, customer=customer, contact=customer.primary_contact, storage=storage,
                               **arguments)
    assert theirs.status == "open" and session.scalar(select(func.count()).select_from(Dispute)) == 0


def test_accept_with_partial_credit_note_leaves_the_rest_due(session: Session, storage: FileStorage, book) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, _, collector = book
    case = disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[first.id],
                              reason_code="wrong_amount", message="Price should be 700", storage=storage)
    credit = disputes.accept(session, case, user=collector, note="Agreed, credit of 300", credit_minor=300_00)
    assert credit is not None and credit.number == f"AV-{first.number}" and credit.open_minor == 0
    assert (first.open_minor, first.status, case.status) == (700_00, "partially_paid", "accepted")
    assert invariant_violations(session) == []
    (eur,) = build_statement(session, customer, TODAY).sections
    assert eur.total_due.minor == 1200_00


def test_reject_returns_invoice_to_amount_due(session: Session, storage: FileStorage, book) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, _, collector = book
    case = disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[first.id],
                              reason_code="already_paid", message="Paid in October", storage=storage)
    with pytest.raises(UserError, match="Already under dispute"):
        disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[first.id],
                           reason_code="other", message="again", storage=storage)
    disputes.reject(session, case, user=collector, message="No payment received; see statement")
    assert (first.status, case.status) == ("open", "rejected")
    assert [m.author_type for m in case.messages] == ["contact", "user"]


def test_question_changes_nothing_due(session: Session, storage: FileStorage, book) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, *_ = book
    disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[first.id],
                       message="Can we have the PO number?", storage=storage, kind="question")
    assert first.status == "open"


def test_internal_notes_need_staff(session: Session, storage: FileStorage, book) -> None:  # type: ignore[no-untyped-def]
    _, customer, first, _, collector = book
    case = disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[first.id],
                              reason_code="other", message="hello", storage=storage)
    with pytest.raises(UserError):
        disputes.add_message(session, case, body="secret", contact=customer.primary_contact, internal=True,
                             storage=storage)
    note = disputes.add_message(session, case, body="Call them Monday", user=collector, internal=True,
                                storage=storage)
    assert note.internal


def test_promise_bounds_and_outcomes(session: Session, book) -> None:  # type: ignore[no-untyped-def]
    company, customer, first, second, _ = book
    contact = customer.primary_contact
    with pytest.raises(UserError, match="past"):
        disputes.make_promise(session, customer=customer, contact=contact, invoice_ids=[first.id],
                              promised_for=TODAY - timedelta(days=1))
    with pytest.raises(UserError, match="within 30 days"):
        disputes.make_promise(session, customer=customer, contact=contact, invoice_ids=[first.id],
                              promised_for=TODAY + timedelta(days=31))
    kept = disputes.make_promise(session, customer=customer, contact=contact, invoice_ids=[first.id],
                                 promised_for=TODAY + timedelta(days=5))
    broken = disputes.make_promise(session, customer=customer, contact=contact, invoice_ids=[second.id],
                                   promised_for=TODAY + timedelta(days=5))
    assert kept.amount_minor == 1000_00
    with pytest.raises(UserError, match="already pending"):
        disputes.make_promise(session, customer=customer, contact=contact, invoice_ids=[first.id],
                              promised_for=TODAY + timedelta(days=6))
    first.open_minor, first.status = 0, "paid"
    assert disputes.settle_promises(session) == (1, 0)
    clock.set(clock.now() + timedelta(days=5 + company.promise_grace_days))
    assert disputes.settle_promises(session) == (0, 0)  # still within grace
    clock.set(clock.now() + timedelta(days=1))
    assert disputes.settle_promises(session) == (0, 1)
    assert (kept.status, broken.status) == ("kept", "broken")
    assert session.scalar(select(func.count()).select_from(PromiseToPay).where(PromiseToPay.status == "pending")) == 0


# --- the company's reason list ----------------------------------------------------------------


def codes(session: Session, company_id: int, *, active_only: bool = False) -> list[str]:
    reasons = disputes.active_reasons(session, company_id) if active_only else disputes.all_reasons(session,
                                                                                                     company_id)
    return [r.code for r in reasons]


def test_a_new_company_comes_with_the_default_reasons(session: Session) -> None:
    from ledger.companies import create_company

    company = create_company(session, code="FRESH", name="Fresh SAS", currency="EUR")
    assert codes(session, company.id, active_only=True) == [code for code, _fr, _en in disputes.DEFAULT_REASONS]
    assert disputes.ensure_default_reasons(session, company) and len(codes(session, company.id)) == len(
        disputes.DEFAULT_REASONS)  # asking again adds nothing


def test_staff_add_rename_reorder_and_deactivate_reasons(session: Session, storage: FileStorage,
                                                         book) -> None:  # type: ignore[no-untyped-def]
    company = book[0]
    added = disputes.add_reason(session, company, label_fr=" Livraison en retard ", label_en="Late delivery",
                                actor="boss@x.test")
    assert (added.code, added.label_fr, added.active) == ("late_delivery", "Livraison en retard", True)
    assert codes(session, company.id)[-1] == "late_delivery"
    disputes.rename_reason(session, company, added, label_fr="Livrée trop tard", label_en="Delivered too late",
                           actor="boss@x.test")
    assert (added.code, added.label_en) == ("late_delivery", "Delivered too late")  # the code stays
    disputes.move_reason(session, company, added, offset=-1, actor="boss@x.test")
    assert codes(session, company.id)[-2:] == ["late_delivery", "other"]
    disputes.set_reason_active(session, company, added, active=False, actor="boss@x.test")
    assert "late_delivery" not in codes(session, company.id, active_only=True)
    with pytest.raises(UserError, match="Choose a reason from the list"):
        disputes.open_case(session, customer=book[1], contact=book[1].primary_contact, invoice_ids=[book[2].id],
                           reason_code="late_delivery", message="late", storage=storage)
    events = session.scalars(select(AuditEvent).where(AuditEvent.action == "company.dispute_reasons_changed")
                             .order_by(AuditEvent.id)).all()
    assert [e.after["change"] for e in events] == ["added", "renamed", "moved", "deactivated"]
    assert events[1].before["label_en"] == "Late delivery" and events[1].actor == "boss@x.test"


def test_bad_labels_are_refused_and_change_nothing(session: Session, book) -> None:  # type: ignore[no-untyped-def]
    company = book[0]
    before = codes(session, company.id)
    for label_fr, label_en, message in (
        ("", "Late", "Enter each label with 1 to 200 characters."),
        ("R" * 201, "Late", "Enter each label with 1 to 200 characters."),
        ("Retard\nde livraison", "Late", "A label cannot hold a line break"),
        ("Autre", "Something else", "A reason is already called Autre."),
        ("Quelque chose", "wrong AMOUNT", "A reason is already called wrong AMOUNT."),
    ):
        with pytest.raises(UserError, match=message):
            disputes.add_reason(session, company, label_fr=label_fr, label_en=label_en, actor="boss@x.test")
    assert codes(session, company.id) == before


def test_a_reason_a_dispute_carries_is_deactivated_never_deleted(session: Session, storage: FileStorage,
                                                                  book) -> None:  # type: ignore[no-untyped-def]
    company, customer, first, _second, _ = book
    case = disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[first.id],
                              reason_code="quality", message="broken", storage=storage)
    quality = next(r for r in disputes.all_reasons(session, company.id) if r.code == "quality")
    assert disputes.remove_reason(session, company, quality, actor="boss@x.test") is False
    assert quality.active is False and case.reason_id == quality.id
    unused = next(r for r in disputes.all_reasons(session, company.id) if r.code == "missing_po")
    assert disputes.remove_reason(session, company, unused, actor="boss@x.test") is True
    assert "missing_po" not in codes(session, company.id)


def test_the_last_active_reason_stays(session: Session, book) -> None:  # type: ignore[no-untyped-def]
    company = book[0]
    *others, last = disputes.active_reasons(session, company.id)
    for reason in others:
        disputes.set_reason_active(session, company, reason, active=False, actor="boss@x.test")
    for attempt in (lambda: disputes.set_reason_active(session, company, last, active=False, actor="boss@x.test"),
                    lambda: disputes.remove_reason(session, company, last, actor="boss@x.test")):
        with pytest.raises(UserError, match="Keep at least one active reason"):
            attempt()
    assert codes(session, company.id, active_only=True) == [last.code]


def test_another_companys_reason_is_not_found(session: Session, book) -> None:  # type: ignore[no-untyped-def]
    other = factories.company(session)
    theirs = disputes.all_reasons(session, other.id)[0]
    with pytest.raises(LookupError):
        disputes.find_reason(session, book[0], theirs.id)
