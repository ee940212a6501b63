"""Disputes, questions and promises to pay: the conversation between debtor and collector.

An open dispute takes its invoices out of the amount due and out of reminders; a pending
promise pauses reminders for its invoices until its date plus the company's grace period.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, timedelta
from pathlib import PurePath
from typing import Annotated, Any, Callable, Literal

from pydantic import BeforeValidator, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.files import MAX_UPLOAD_BYTES, Upload

from kernel.clock import clock
from kernel.forms import Form
from kernel.i18n import N_
from kernel.user_error import UserError
from ledger import audit
from ledger.allocation import allocate, settled_status
from ledger.models import (
    Attachment,
    Company,
    Contact,
    Customer,
    Dispute,
    DisputeMessage,
    DisputeReason,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    PromiseToPay,
    User,
    dispute_invoices,
)
from ledger.money import Money
from ledger.storage import FileStorage

MAX_FILES = 5
MAX_FILE_BYTES = MAX_UPLOAD_BYTES
MAX_MESSAGE_CHARS = 5000
MAX_FORM_INVOICES = 1000

# (code, French, English): the list a company starts with, and may edit.
DEFAULT_REASONS = (
    ("wrong_amount", "Montant erroné", "Wrong amount"),
    ("not_received", "Marchandise ou prestation non reçue", "Goods or service not received"),
    ("quality", "Problème de qualité", "Quality problem"),
    ("already_paid", "Déjà payée", "Already paid"),
    ("wrong_customer", "Mauvais client facturé", "Wrong customer"),
    ("missing_po", "Bon de commande manquant", "Missing purchase order"),
    ("other", "Autre", "Other"),
)

# What a file's first bytes must be for each type we accept, and the names it may carry.
FILE_TYPES = {
    "application/pdf": (b"%PDF-", (".pdf",)),
    "image/png": (b"\x89PNG\r\n\x1a\n", (".png",)),
    "image/jpeg": (b"\xff\xd8\xff", (".jpg", ".jpeg")),
}


class CaseForm(Form):
    """A debtor's new dispute or question as the portal posts it, typed; `open_case` judges it."""

    kind: Literal["dispute", "question"] = "dispute"
    invoice_ids: list[int] = Field(default_factory=list, max_length=MAX_FORM_INVOICES)
    reason_code: str | None = Field(default=None, max_length=40)
    message: str = Field(default="", max_length=MAX_MESSAGE_CHARS + 1)  # one more: the service says "too long"


def _promised_day(value: object) -> date:
    try:
        return date.fromisoformat(str(value or "").strip())
    except ValueError:
        raise UserError(N_("Choose the date you will pay.")) from None


class PromiseForm(Form):
    """A debtor's promise to pay as the portal posts it, typed; `make_promise` judges it."""

    invoice_ids: list[int] = Field(default_factory=list, max_length=MAX_FORM_INVOICES)
    promised_for: Annotated[date, BeforeValidator(_promised_day)]


def ensure_default_reasons(session: Session, company: Company) -> list[DisputeReason]:
    existing = {r.code: r for r in session.scalars(select(DisputeReason).where(DisputeReason.company_id == company.id))}
    for position, (code, label_fr, label_en) in enumerate(DEFAULT_REASONS):
        if code not in existing:
            reason = DisputeReason(company_id=company.id, code=code, label_fr=label_fr, label_en=label_en,
                                   position=position)
            session.add(reason)
            existing[code] = reason
    session.flush()
    return sorted(existing.values(), key=lambda r: r.position)


# --- the company's list of reasons, edited by its staff -------------------------------------------

MAX_REASON_LABEL = 200
_CODE_CHARS = re.compile(r"[^a-z0-9]+")


def all_reasons(session: Session, company_id: int) -> list[DisputeReason]:
    """Every reason of the company, active or not, in the order debtors see them."""
    return list(session.scalars(select(DisputeReason).where(DisputeReason.company_id == company_id)
                                .order_by(DisputeReason.position, DisputeReason.id)))


def _reason_state(reason: DisputeReason) -> dict[str, Any]:
    return {"code": reason.code, "label_fr": reason.label_fr, "label_en": reason.label_en,
            "active": reason.active, "position": reason.position}


def _audit_reason(session: Session, company: Company, actor: str, change: str,
                  before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    audit.record(session, actor_type="user", actor=actor, action="company.dispute_reasons_changed",
                 entity_type="company", entity_id=company.id, company_id=company.id,
                 before=None if before is None else {"change": change, **before},
                 after=None if after is None else {"change": change, **after})


def _checked_labels(reasons: list[DisputeReason], label_fr: str, label_en: str,
                    renaming: DisputeReason | None = None) -> tuple[str, str]:
    labels = (label_fr.strip(), label_en.strip())
    for label in labels:
        if not label or len(label) > MAX_REASON_LABEL:
            raise UserError(N_("Enter each label with 1 to %(max)s characters."), max=MAX_REASON_LABEL)
        if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in label):
            raise UserError(N_("A label cannot hold a line break or another control character."))
    for other in reasons:
        if other is renaming:
            continue
        for label in labels:
            if label.casefold() in (other.label_fr.casefold(), other.label_en.casefold()):
                raise UserError(N_("A reason is already called %(label)s."), label=label)
    return labels


def _free_code(reasons: list[DisputeReason], label_en: str) -> str:
    base = _CODE_CHARS.sub("_", unicodedata.normalize("NFKD", label_en).encode("ascii", "ignore").decode()
                           .lower()).strip("_")[:32] or "reason"
    taken = {r.code for r in reasons}
    code, n = base, 1
    while code in taken:
        n += 1
        code = f"{base[:32 - len(str(n)) - 1]}_{n}"
    return code


def find_reason(session: Session, company: Company, reason_id: int) -> DisputeReason:
    """The company's reason with this id; LookupError for another company's or none."""
    reason = session.get(DisputeReason, reason_id)
    if reason is None or reason.company_id != company.id:
        raise LookupError(reason_id)
    return reason


def add_reason(session: Session, company: Company, *, label_fr: str, label_en: str, actor: str) -> DisputeReason:
    reasons = all_reasons(session, company.id)
    label_fr, label_en = _checked_labels(reasons, label_fr, label_en)
    reason = DisputeReason(company_id=company.id, code=_free_code(reasons, label_en), label_fr=label_fr,
                           label_en=label_en, active=True,
                           position=max((r.position for r in reasons), default=-1) + 1)
    session.add(reason)
    session.flush()
    _audit_reason(session, company, actor, "added", None, _reason_state(reason))
    return reason


def rename_reason(session: Session, company: Company, reason: DisputeReason, *, label_fr: str, label_en: str,
                  actor: str) -> None:
    """New labels; the code (what disputes and reports key on) stays."""
    label_fr, label_en = _checked_labels(all_reasons(session, company.id), label_fr, label_en, renaming=reason)
    if (reason.label_fr, reason.label_en) == (label_fr, label_en):
        return
    before = _reason_state(reason)
    reason.label_fr, reason.label_en = label_fr, label_en
    session.flush()
    _audit_reason(session, company, actor, "renamed", before, _reason_state(reason))


def move_reason(session: Session, company: Company, reason: DisputeReason, *, offset: int, actor: str) -> None:
    """One place up (offset -1) or down (+1) in the list debtors choose from."""
    reasons = all_reasons(session, company.id)
    index = reasons.index(reason)
    target = index + offset
    if offset not in (-1, 1) or not 0 <= target < len(reasons):
        return
    before = _reason_state(reason)
    reasons[index], reasons[target] = reasons[target], reasons[index]
    for position, each in enumerate(reasons):
        each.position = position
    session.flush()
    _audit_reason(session, company, actor, "moved", before, _reason_state(reason))


def _keep_one_active(session: Session, company: Company, reason: DisputeReason) -> None:
    if reason.active and sum(r.active for r in all_reasons(session, company.id)) <= 1:
        raise UserError(N_("Keep at least one active reason: debtors must be able to choose one."))


def set_reason_active(session: Session, company: Company, reason: DisputeReason, *, active: bool,
                      actor: str) -> None:
    """Deactivated, a reason leaves the debtors' list; disputes that carry it keep it."""
    if reason.active == active:
        return
    if not active:
        _keep_one_active(session, company, reason)
    before = _reason_state(reason)
    reason.active = active
    session.flush()
    _audit_reason(session, company, actor, "activated" if active else "deactivated", before, _reason_state(reason))


def remove_reason(session: Session, company: Company, reason: DisputeReason, *, actor: str) -> bool:
    """Deleted when no dispute carries it (True); otherwise only deactivated (False), so every
    dispute still reads with its reason."""
    _keep_one_active(session, company, reason)
    used = session.scalar(select(Dispute.id).where(Dispute.reason_id == reason.id).limit(1)) is not None
    if used:
        set_reason_active(session, company, reason, active=False, actor=actor)
        return False
    before = _reason_state(reason)
    session.delete(reason)
    session.flush()
    _audit_reason(session, company, actor, "deleted", before, None)
    return True


def active_reasons(session: Session, company_id: int) -> list[DisputeReason]:
    return list(
        session.scalars(
            select(DisputeReason)
            .where(DisputeReason.company_id == company_id, DisputeReason.active.is_(True))
            .order_by(DisputeReason.position, DisputeReason.id)
        )
    )


def sniff_type(upload: Upload) -> str:
    """The file's type from its content; its name must agree."""
    suffix = PurePath(upload.filename).suffix.lower()
    for content_type, (magic, suffixes) in FILE_TYPES.items():
        if upload.content.startswith(magic):
            if suffix not in suffixes:
                raise UserError(N_("%(name)s: its content does not match its name."), name=upload.filename)
            return content_type
    raise UserError(N_("%(name)s: only PDF, PNG and JPEG files are accepted."), name=upload.filename)


def check_uploads(uploads: list[Upload]) -> list[tuple[Upload, str]]:
    uploads = [u for u in uploads if u.filename or u.content]
    if len(uploads) > MAX_FILES:
        raise UserError(N_("You can attach at most %(max)s files (%(count)s chosen)."), max=MAX_FILES,
                        count=len(uploads))
    checked = []
    for upload in uploads:
        if not upload.content:
            raise UserError(N_("%(name)s is empty."), name=upload.filename)
        if len(upload.content) > MAX_FILE_BYTES:
            raise UserError(N_("%(name)s is larger than %(size)s MB."), name=upload.filename,
                            size=MAX_FILE_BYTES // (1024 * 1024))
        checked.append((upload, sniff_type(upload)))
    return checked


def _clean_message(text: str) -> str:
    body = (text or "").strip()
    if not body:
        raise UserError(N_("Please write a message.")).at(field="message")
    if len(body) > MAX_MESSAGE_CHARS:
        raise UserError(N_("The message is longer than %(max)s characters."), max=MAX_MESSAGE_CHARS).at(field="message")
    return body


def _customer_invoices(session: Session, customer: Customer, invoice_ids: list[int]) -> list[Invoice]:
    if not invoice_ids:
        raise UserError(N_("Choose at least one invoice.")).at(field="invoice")
    invoices = list(
        session.scalars(
            select(Invoice).where(
                Invoice.id.in_(set(invoice_ids)),
                Invoice.customer_id == customer.id,
                Invoice.kind == InvoiceKind.invoice.value,
            )
        )
    )
    if len(invoices) != len(set(invoice_ids)):
        raise UserError(N_("One of the chosen invoices is not on your account.")).at(field="invoice")  # never says whether it exists for someone else
    return sorted(invoices, key=lambda i: i.id)


def open_cases_for(session: Session, invoice_ids: list[int], kind: str = "dispute") -> list[Dispute]:
    return list(
        session.scalars(
            select(Dispute)
            .join(Dispute.invoices)
            .where(Invoice.id.in_(invoice_ids), Dispute.status == "open", Dispute.kind == kind)
            .distinct()
        )
    )


def _attach(session: Session, message: DisputeMessage, uploads: list[tuple[Upload, str]],
            storage: FileStorage) -> None:
    for upload, content_type in uploads:
        stored = storage.save(upload.content)
        session.add(
            Attachment(message=message, filename=PurePath(upload.filename).name[:255] or "file",
                       content_type=content_type, size=stored.size, sha256=stored.sha256, storage_key=stored.key)
        )


def open_case(
    session: Session,
    *,
    customer: Customer,
    contact: Contact | None,
    invoice_ids: list[int],
    message: str,
    storage: FileStorage,
    reason_code: str | None = None,
    uploads: list[Upload] = (),  # type: ignore[assignment]
    kind: str = "dispute",
    disputed_minor: int | None = None,
) -> Dispute:
    """A dispute (takes the invoices out of the amount due and reminders) or a question (changes nothing).

    `disputed_minor`: a dispute of part of one invoice; that part is set aside, the rest stays due and
    chased (the invoice keeps its status). The whole open amount, or None, disputes the whole invoice."""
    if kind not in ("dispute", "question"):
        raise UserError(N_("unknown kind %(kind)s"), kind=repr(kind))
    invoices = _customer_invoices(session, customer, invoice_ids)
    if disputed_minor is not None:
        if kind != "dispute" or len(invoices) != 1:
            raise UserError(N_("Name a disputed amount for one invoice at a time.")).at(field="disputed_amount")
        if not 0 < disputed_minor <= invoices[0].open_minor:
            raise UserError(N_("The disputed amount must be more than zero and at most %(open)s."),
                            open=invoices[0].open).at(field="disputed_amount")
        if disputed_minor == invoices[0].open_minor:
            disputed_minor = None
    body = _clean_message(message)
    reason = None
    if kind == "dispute":
        reason = next((r for r in active_reasons(session, customer.company_id) if r.code == reason_code), None)
        if reason is None:
            raise UserError(N_("Choose a reason from the list.")).at(field="reason")
        already = open_cases_for(session, [i.id for i in invoices])
        if already:
            numbers = ", ".join(sorted(i.number for d in already for i in d.invoices if i in invoices))
            raise UserError(N_("Already under dispute: %(numbers)s."), numbers=numbers)
    checked = check_uploads(list(uploads))
    dispute = Dispute(customer_id=customer.id, contact_id=contact.id if contact else None, kind=kind,
                      reason_id=reason.id if reason else None, invoices=invoices,
                      assigned_to_id=customer.collector_id, disputed_minor=disputed_minor)
    session.add(dispute)
    first = DisputeMessage(dispute=dispute, author_type="contact", author_id=contact.id if contact else None,
                           body=body)
    session.add(first)
    session.flush()
    _attach(session, first, checked, storage)
    if kind == "dispute" and disputed_minor is None:
        for invoice in invoices:
            invoice.status = InvoiceStatus.disputed.value
    audit.record(session, actor_type="contact", actor=contact.email if contact else None,
                 action=f"{kind}.opened", entity_type="dispute", entity_id=dispute.id, customer_id=customer.id,
                 after={"invoices": [i.number for i in invoices], "reason": reason_code,
                        **({"disputed_minor": disputed_minor} if disputed_minor is not None else {})})
    session.flush()
    return dispute


def add_message(
    session: Session,
    dispute: Dispute,
    *,
    body: str,
    storage: FileStorage,
    contact: Contact | None = None,
    user: User | None = None,
    internal: bool = False,
    uploads: list[Upload] = (),  # type: ignore[assignment]
) -> DisputeMessage:
    if (contact is None) == (user is None):
        raise UserError(N_("a message has one author"))
    if internal and user is None:
        raise UserError(N_("only staff write internal notes"))
    text = _clean_message(body)
    checked = check_uploads(list(uploads))
    message = DisputeMessage(dispute=dispute, author_type="user" if user else "contact",
                             author_id=user.id if user else contact.id if contact else None,
                             internal=internal, body=text)
    session.add(message)
    session.flush()
    _attach(session, message, checked, storage)
    audit.record(session, actor_type="user" if user else "contact",
                 actor=user.email if user else contact.email if contact else None,
                 action="dispute.note" if internal else "dispute.message", entity_type="dispute",
                 entity_id=dispute.id, customer_id=dispute.customer_id)
    session.flush()
    return message


def disputed_parts(session: Session, customer_id: int | None = None, invoice_ids: list[int] | None = None,
                   company_id: int | None = None) -> dict[int, int]:
    """Invoice id -> the part of it an open dispute sets aside (capped at what is still open), for
    invoices disputed in part only (a wholly disputed invoice has the status `disputed` instead)."""
    query = (select(Invoice.id, Invoice.open_minor, Dispute.disputed_minor)
             .join(dispute_invoices, dispute_invoices.c.invoice_id == Invoice.id)
             .join(Dispute, Dispute.id == dispute_invoices.c.dispute_id)
             .where(Dispute.status == "open", Dispute.kind == "dispute", Dispute.disputed_minor.is_not(None)))
    if customer_id is not None:
        # A dispute's invoices are its customer's (open_case): naming the dispute's customer too lets
        # the plan start from the customer's few disputes, not every disputed invoice (page13).
        query = query.where(Invoice.customer_id == customer_id, Dispute.customer_id == customer_id)
    if invoice_ids is not None:
        query = query.where(Invoice.id.in_(invoice_ids))
    if company_id is not None:
        query = query.where(Invoice.company_id == company_id)
    parts: dict[int, int] = {}
    for invoice_id, open_minor, part in session.execute(query):
        parts[invoice_id] = min(int(open_minor), parts.get(invoice_id, 0) + int(part or 0))
    return parts


def _restore(invoice: Invoice) -> None:
    invoice.status = InvoiceStatus.open.value
    invoice.status = settled_status(invoice)


def _still_disputed(session: Session, invoice: Invoice, closing: Dispute) -> bool:
    return any(d.id != closing.id for d in open_cases_for(session, [invoice.id]))


def accept(
    session: Session, dispute: Dispute, *, user: User, note: str, credit_minor: int | None = None,
    credit_number: str | None = None,
) -> Invoice | None:
    """Accept the dispute; with a credit (whole open amount when `credit_minor` is None on a
    one-invoice case) a credit note is issued and allocated to the invoice, the rest stays due."""
    if dispute.status != "open" or dispute.kind != "dispute":
        raise UserError(N_("This case is not an open dispute."))
    message = _clean_message(note)
    credit_note = None
    if credit_minor != 0:
        if len(dispute.invoices) != 1:
            raise UserError(N_("A credit note settles one invoice: accept without a credit, or open one case per invoice."))
        invoice = dispute.invoices[0]
        default = invoice.open_minor if dispute.disputed_minor is None else min(dispute.disputed_minor,
                                                                                 invoice.open_minor)
        amount = default if credit_minor is None else credit_minor
        if amount <= 0 or amount > invoice.open_minor:
            raise UserError(N_("The credit must be more than zero and at most the open amount.")).at(field="credit")
        today = clock.today(invoice.company.timezone)
        number = credit_number or _next_credit_number(session, invoice)
        credit_note = Invoice(company_id=invoice.company_id, customer_id=invoice.customer_id,
                              kind=InvoiceKind.credit_note.value, number=number, issue_date=today, due_date=today,
                              currency=invoice.currency, total_minor=amount, open_minor=amount)
        session.add(credit_note)
        session.flush()
        allocate(session, invoice, Money(amount, invoice.currency), credit_note=credit_note)
        dispute.credit_note_id = credit_note.id
    _close(session, dispute, "accepted", user, message)
    return credit_note


def reject(session: Session, dispute: Dispute, *, user: User, message: str) -> None:
    """The invoices return to the amount due and to the reminder flow."""
    if dispute.status != "open" or dispute.kind != "dispute":
        raise UserError(N_("This case is not an open dispute."))
    _close(session, dispute, "rejected", user, _clean_message(message))


def close_question(session: Session, dispute: Dispute, *, user: User) -> None:
    if dispute.status != "open" or dispute.kind != "question":
        raise UserError(N_("This case is not an open question."))
    dispute.status = "closed"
    dispute.closed_at = clock.now()
    audit.record(session, actor_type="user", actor=user.email, action="question.closed", entity_type="dispute",
                 entity_id=dispute.id, customer_id=dispute.customer_id)


def _close(session: Session, dispute: Dispute, status: str, user: User, message: str) -> None:
    dispute.status = status
    dispute.closed_at = clock.now()
    dispute.resolution_note = message
    session.add(DisputeMessage(dispute=dispute, author_type="user", author_id=user.id, body=message))
    session.flush()
    for invoice in dispute.invoices:
        if invoice.status == InvoiceStatus.disputed.value and not _still_disputed(session, invoice, dispute):
            _restore(invoice)
    audit.record(session, actor_type="user", actor=user.email, action=f"dispute.{status}", entity_type="dispute",
                 entity_id=dispute.id, customer_id=dispute.customer_id,
                 after={"credit_note_id": dispute.credit_note_id})
    session.flush()


def _next_credit_number(session: Session, invoice: Invoice) -> str:
    base = f"AV-{invoice.number}"
    taken = set(session.scalars(select(Invoice.number).where(Invoice.company_id == invoice.company_id,
                                                             Invoice.number.like(f"{base}%"))))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


# --- Promises to pay ---------------------------------------------------------------------------


def make_promise(
    session: Session, *, customer: Customer, contact: Contact | None, invoice_ids: list[int], promised_for: date,
) -> PromiseToPay:
    company = customer.company
    today = clock.today(company.timezone)
    if promised_for < today:
        raise UserError(N_("The date is in the past.")).at(field="promised_for")
    if promised_for > today + timedelta(days=company.promise_horizon_days):
        raise UserError(N_("The date must be within %(days)s days."), days=company.promise_horizon_days).at(
            field="promised_for")
    invoices = _customer_invoices(session, customer, invoice_ids)
    unpayable = [i.number for i in invoices if i.open_minor == 0 or i.status == InvoiceStatus.void.value]
    if unpayable:
        raise UserError(N_("Nothing is left to pay on %(numbers)s."), numbers=", ".join(unpayable))
    currencies = {i.currency for i in invoices}
    if len(currencies) > 1:
        raise UserError(N_("A promise covers invoices in one currency."))
    pending = pending_promises_for(session, [i.id for i in invoices])
    if pending:
        raise UserError(N_("A promise is already pending for %(numbers)s."), numbers=", ".join(
            sorted({i.number for p in pending for i in p.invoices if i in invoices})))
    promise = PromiseToPay(customer_id=customer.id, contact_id=contact.id if contact else None,
                           promised_for=promised_for, currency=currencies.pop(),
                           amount_minor=sum(i.open_minor for i in invoices), invoices=invoices)
    session.add(promise)
    session.flush()
    audit.record(session, actor_type="contact", actor=contact.email if contact else None, action="promise.made",
                 entity_type="promise", entity_id=promise.id, customer_id=customer.id,
                 after={"date": promised_for.isoformat(), "invoices": [i.number for i in invoices],
                        "amount_minor": promise.amount_minor})
    return promise


def pending_promises_for(session: Session, invoice_ids: list[int]) -> list[PromiseToPay]:
    return list(
        session.scalars(
            select(PromiseToPay)
            .join(PromiseToPay.invoices)
            .where(Invoice.id.in_(invoice_ids), PromiseToPay.status == "pending")
            .distinct()
        )
    )


def settle_promises(session: Session, today_for: dict[int, date] | None = None, *,
                    on_broken: Callable[[PromiseToPay], object] | None = None) -> tuple[int, int]:
    """Mark pending promises kept (all their invoices paid) or broken (date + grace passed).

    Returns (kept, broken). `today_for` maps company id to its local date; by default each
    company's date from the clock. `on_broken` is called, in the same transaction, for each
    promise found broken (to tell staff exactly once).
    """
    kept = broken = 0
    for promise in session.scalars(select(PromiseToPay).where(PromiseToPay.status == "pending")):
        customer = session.get(Customer, promise.customer_id)
        assert customer is not None
        company = customer.company
        today = (today_for or {}).get(company.id) or clock.today(company.timezone)
        if all(i.open_minor == 0 for i in promise.invoices):
            promise.status, kept = "kept", kept + 1
        elif today > promise.promised_for + timedelta(days=company.promise_grace_days):
            promise.status, broken = "broken", broken + 1
        else:
            continue
        promise.settled_at = clock.now()
        audit.record(session, actor_type="system", action=f"promise.{promise.status}", entity_type="promise",
                     entity_id=promise.id, customer_id=promise.customer_id)
        if promise.status == "broken" and on_broken is not None:
            on_broken(promise)
    session.flush()
    return kept, broken
