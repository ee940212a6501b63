"""Personal data: what Encours holds about a customer or one of its contacts (export), how it is
erased while the accounting records stay, and how long the by-products of collection are kept.

The accounting records the law requires a company to keep (invoices, credit notes, payments,
allocations, bank matches: ten years in France, Code de commerce L123-22) stay, amounts, dates
and references intact; what names or reaches a person goes: contacts' names, addresses and
phones, link opens' IP addresses and browsers, email bodies and addresses, dispute messages and
their files, staff notes, payer bank details, raw provider events about the customer's
payments, and those values wherever the audit trail copied them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Callable, cast

from sqlalchemy import ColumnElement, CursorResult, FromClause, Table, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from kernel.clock import clock
from kernel.db import unit_of_work
from kernel.settings import Settings
from ledger import audit
from ledger.models import (
    Allocation, Attachment, AuditEvent, BankEntry, BankMatch, BankMatchLine, Base, Checkout, CheckoutLine, Company,
    Contact, Customer, CustomerNote, Dispute, DisputeMessage, LinkOpen, OutboxMessage, PayerAccount, Payment, Reminder,
    WebhookEvent,
)

ERASED = "[erased]"
# Tables whose rows belong to a customer through one of these columns are exported whole.
OWNER_COLUMNS = ("customer_id", "contact_id")


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    if hasattr(value, "value") and not isinstance(value, (int, str, float, bool)):  # enums
        return value.value
    return value


def _changed(session: Session, statement: Any) -> int:
    """Rows an UPDATE or DELETE touched."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def _rows(session: Session, table: FromClause, *conditions: Any) -> list[dict[str, Any]]:
    result = session.execute(select(table).where(*conditions).order_by(*table.primary_key))
    return [{key: _plain(value) for key, value in row._mapping.items()} for row in result]


def owned_tables() -> list[Table]:
    """Every table with a row per customer or per contact (besides those two): what an export
    must cover. A new table with a customer_id or contact_id column is covered by construction."""
    return [table for table in Base.metadata.sorted_tables
            if table.name not in ("customers", "contacts")
            and any(name in table.c for name in OWNER_COLUMNS)]


def export_customer(session: Session, customer: Customer, *, contact: Contact | None = None) -> dict[str, Any]:
    """Everything held about `customer` (or only about `contact`, one of its contacts), as JSON-ready
    data: the records themselves, and those reached through them (messages of its disputes, files'
    descriptions, allocations of its payments, bank entries matched to it, provider events about
    its payments). Files are described (name, type, size, SHA-256), not included."""
    company = session.get(Company, customer.company_id)
    contacts = [contact] if contact is not None else list(customer.contacts)
    contact_ids = [c.id for c in contacts]
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in owned_tables():
        conditions = []
        if "customer_id" in table.c and contact is None:
            conditions.append(table.c.customer_id == customer.id)
        if "contact_id" in table.c and contact_ids:
            conditions.append(table.c.contact_id.in_(contact_ids))
        tables[table.name] = _rows(session, table, or_(*conditions)) if conditions else []

    dispute_ids = [row["id"] for row in tables["disputes"]]
    messages = _rows(session, DisputeMessage.__table__, DisputeMessage.dispute_id.in_(dispute_ids))
    if contact is not None:  # only what this contact wrote
        messages = [m for m in messages if m["author_type"] == "contact" and m["author_id"] == contact.id]
    tables["dispute_messages"] = messages
    tables["attachments"] = _rows(session, Attachment.__table__,
                                  Attachment.message_id.in_([m["id"] for m in messages]))
    payment_ids = [row["id"] for row in tables.get("payments", [])]
    tables["allocations"] = _rows(session, Allocation.__table__, Allocation.payment_id.in_(payment_ids))
    checkout_ids = [row["id"] for row in tables.get("checkouts", [])]
    tables["checkout_lines"] = _rows(session, CheckoutLine.__table__, CheckoutLine.checkout_id.in_(checkout_ids))
    match_ids = {row["match_id"] for row in tables.get("bank_match_lines", [])}
    tables["bank_matches"] = _rows(session, BankMatch.__table__, BankMatch.id.in_(match_ids))
    tables["bank_entries"] = _rows(session, BankEntry.__table__,
                                   BankEntry.id.in_({row["entry_id"] for row in tables["bank_matches"]}))
    tables["webhook_events"] = [
        {**row, "body": _json_or_text(row["body"])}
        for row in _rows(session, WebhookEvent.__table__, *_events_about(session, customer, checkout_ids))
    ] if contact is None else []
    tables["audit_events"] = _rows(session, AuditEvent.__table__, _audit_about(customer, contacts, contact))
    return {
        "exported_at": clock.now().isoformat(),
        "company": {"code": company.code, "name": company.name} if company else None,
        "customer": _rows(session, Customer.__table__, Customer.id == customer.id)[0],
        "contacts": [_rows(session, Contact.__table__, Contact.id == c.id)[0] for c in contacts],
        "tables": dict(sorted(tables.items())),
    }


def _json_or_text(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


def _events_about(session: Session, customer: Customer, checkout_ids: list[int]) -> list[Any]:
    """Raw provider events that name one of the customer's provider objects."""
    refs = {ref for ref in session.scalars(select(Checkout.provider_ref).where(Checkout.id.in_(checkout_ids))) if ref}
    refs |= {ref for ref in session.scalars(select(Payment.provider_ref).where(Payment.customer_id == customer.id))
             if ref}
    refs |= {ref for ref in (customer.stripe_customer_id, customer.gocardless_customer_id,
                             customer.gocardless_mandate_id) if ref}
    if not refs:
        return [WebhookEvent.id.is_(None)]  # nothing can name the customer
    return [or_(*(WebhookEvent.body.contains(ref, autoescape=True) for ref in sorted(refs)))]


def _audit_about(customer: Customer, contacts: list[Contact], contact: Contact | None) -> Any:
    emails = [c.email for c in contacts]
    by_actor = AuditEvent.actor.in_(emails) if emails else AuditEvent.id.is_(None)
    return by_actor if contact is not None else or_(AuditEvent.customer_id == customer.id, by_actor)


@dataclass(frozen=True)
class ErasureReport:
    contacts: int = 0
    link_opens: int = 0
    emails: int = 0
    dispute_messages: int = 0
    attachments: int = 0
    notes: int = 0
    payer_accounts: int = 0
    bank_entries: int = 0
    webhook_events: int = 0
    audit_events: int = 0

    def summary(self) -> str:
        return ", ".join(f"{value} {name.replace('_', ' ')}" for name, value in self.__dict__.items())


def erase(session: Session, customer: Customer, *, contact: Contact | None = None, actor: str,
          delete_file: Callable[[str], None]) -> ErasureReport:
    """Erase the personal data of `contact`, or of the whole `customer`, in the caller's transaction;
    invoices, payments, allocations, checkouts and bank matches stay with their amounts, dates and
    references. The contacts' links and portal sessions stop working at once. `delete_file` removes
    a stored attachment by its key (called once the rows are gone; a missing file is not an error)."""
    contacts = [contact] if contact is not None else list(customer.contacts)
    contact_ids = [c.id for c in contacts]
    values = {v for c in contacts for v in (c.email, c.name, c.phone) if v}
    if contact is None and customer.name:
        values.add(customer.name)

    for c in contacts:
        c.email = f"erased-{c.id}@erased.invalid"
        c.name = None
        c.phone = None
        c.receives_reminders = False
        c.email_failure = None
        c.email_failing_since = None
        c.link_version += 1  # every link it was sent stops opening
        c.session_version += 1  # and every portal session ends
    opens = _changed(session, update(LinkOpen).where(LinkOpen.contact_id.in_(contact_ids))
                            .values(ip=None, user_agent=None))
    mail_owner = or_(OutboxMessage.contact_id.in_(contact_ids),
                     OutboxMessage.customer_id == customer.id if contact is None else OutboxMessage.id.is_(None))
    emails = _changed(session, update(OutboxMessage).where(mail_owner).values(
        to_address=ERASED, subject=ERASED, body_text="", body_html=None, last_error=None))

    disputes = select(Dispute.id).where(Dispute.customer_id == customer.id)
    written: ColumnElement[bool] = DisputeMessage.dispute_id.in_(disputes)
    if contact is not None:
        written = written & (DisputeMessage.author_type == "contact") & (DisputeMessage.author_id == contact.id)
    message_ids = list(session.scalars(select(DisputeMessage.id).where(written)))
    keys = list(session.scalars(select(Attachment.storage_key).where(Attachment.message_id.in_(message_ids))))
    _changed(session, delete(Attachment).where(Attachment.message_id.in_(message_ids)))
    _changed(session, update(DisputeMessage).where(DisputeMessage.id.in_(message_ids)).values(body=ERASED))

    notes = payers = entries = events = 0
    if contact is None:
        customer.name = f"{ERASED} {customer.ref}"
        customer.reminders_paused = True
        notes = _changed(session, update(CustomerNote).where(CustomerNote.customer_id == customer.id)
                                .values(body=ERASED))
        _changed(session, update(Dispute).where(Dispute.customer_id == customer.id, Dispute.resolution_note.is_not(None))
                        .values(resolution_note=ERASED))
        payers = _changed(session, delete(PayerAccount).where(PayerAccount.customer_id == customer.id))
        matched = select(BankMatch.entry_id).join(BankMatchLine, BankMatchLine.match_id == BankMatch.id).where(
            BankMatchLine.customer_id == customer.id)
        entries = _changed(session, update(BankEntry).where(BankEntry.id.in_(matched)).values(
            payer_name=None, payer_iban=None, payer_bic=None, remittance_text=None))
        checkout_ids = list(session.scalars(select(Checkout.id).where(Checkout.customer_id == customer.id)))
        purged = json.dumps({"erased_at": clock.now().isoformat()})
        events = _changed(session, update(WebhookEvent).where(*_events_about(session, customer, checkout_ids))
                                 .values(body=purged, headers={}))

    scrubbed = _scrub_audit(session, customer, contacts, values)
    audit.record(session, actor_type="user", actor=actor, action="personal_data.erased", entity_type="customer",
                 entity_id=customer.id, customer_id=customer.id, company_id=customer.company_id,
                 after={"contacts": contact_ids, "whole_customer": contact is None})
    session.flush()
    for key in keys:
        delete_file(key)
    return ErasureReport(contacts=len(contacts), link_opens=opens, emails=emails, dispute_messages=len(message_ids),
                         attachments=len(keys), notes=notes, payer_accounts=payers, bank_entries=entries,
                         webhook_events=events, audit_events=scrubbed)


def _scrub_audit(session: Session, customer: Customer, contacts: list[Contact], values: set[str]) -> int:
    """Replace the erased values wherever the audit trail copied them (before/after, the actor)."""
    emails = [c.email for c in contacts]
    rows = session.scalars(select(AuditEvent).where(_audit_about(customer, contacts, None)))
    changed = 0
    for event in rows:
        before, after = _without(event.before, values), _without(event.after, values)
        actor = ERASED if event.actor in values or event.actor in emails else event.actor
        if (before, after, actor) != (event.before, event.after, event.actor):
            event.before, event.after, event.actor = before, after, actor
            changed += 1
    return changed


def _without(data: Any, values: set[str]) -> Any:
    if isinstance(data, dict):
        return {key: _without(value, values) for key, value in data.items()}
    if isinstance(data, list):
        return [_without(value, values) for value in data]
    if isinstance(data, str) and data in values:
        return ERASED
    return data


@dataclass(frozen=True)
class Retention:
    """Days kept before purging (0: kept for ever)."""

    link_opens_days: int = 395
    email_bodies_days: int = 90
    webhook_bodies_days: int = 400
    sent_emails_days: int = 400  # sent outbox rows deleted (delete_expired)
    webhook_events_days: int = 400  # processed provider events deleted (delete_expired)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Retention":
        return cls(link_opens_days=settings.retain_link_opens_days,
                   email_bodies_days=settings.retain_email_bodies_days,
                   webhook_bodies_days=settings.retain_webhook_bodies_days,
                   sent_emails_days=settings.retain_sent_emails_days,
                   webhook_events_days=settings.retain_webhook_events_days)


@dataclass(frozen=True)
class PurgeReport:
    link_opens: int = 0
    email_bodies: int = 0
    webhook_bodies: int = 0
    emails_deleted: int = 0
    events_deleted: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.link_opens or self.email_bodies or self.webhook_bodies or self.emails_deleted
                    or self.events_deleted)

    def summary(self) -> str:
        deleted = (f"; {self.emails_deleted} sent emails, {self.events_deleted} provider events deleted"
                   if self.emails_deleted or self.events_deleted else "")
        return (f"{self.link_opens} link opens, {self.email_bodies} email bodies, "
                f"{self.webhook_bodies} webhook bodies purged{deleted}")


def purge(session: Session, retention: Retention, now: datetime | None = None) -> PurgeReport:
    """Remove what outlived its use: link opens keep their date (the dashboard counts them) but lose
    the IP address and browser; sent or cancelled emails lose their body (their date, kind and
    status stay on the timeline); processed provider events lose their raw body (their id stays,
    so a late duplicate delivery is still recognised)."""
    now = now or clock.now()

    def before(days: int) -> datetime | None:
        return now - timedelta(days=days) if days > 0 else None

    opens = emails = events = 0
    if (cutoff := before(retention.link_opens_days)) is not None:
        opens = _changed(session, update(LinkOpen).where(
            LinkOpen.opened_at < cutoff, or_(LinkOpen.ip.is_not(None), LinkOpen.user_agent.is_not(None)))
            .values(ip=None, user_agent=None))
    if (cutoff := before(retention.email_bodies_days)) is not None:
        # Counted from sending (a message queued long ago and sent today keeps its body for the period).
        emails = _changed(session, update(OutboxMessage).where(
            OutboxMessage.status.in_(("sent", "cancelled")),
            func.coalesce(OutboxMessage.sent_at, OutboxMessage.created_at) < cutoff,
            or_(OutboxMessage.body_text != "", OutboxMessage.body_html.is_not(None)))
            .values(body_text="", body_html=None))
    if (cutoff := before(retention.webhook_bodies_days)) is not None:
        purged = json.dumps({"purged_at": now.isoformat()})
        events = _changed(session, update(WebhookEvent).where(
            WebhookEvent.processed_at.is_not(None), WebhookEvent.received_at < cutoff,
            ~WebhookEvent.body.startswith('{"purged_at"'), ~WebhookEvent.body.startswith('{"erased_at"'))
            .values(body=purged, headers={}))
    return PurgeReport(link_opens=opens, email_bodies=emails, webhook_bodies=events)


DELETE_BATCH = 2_000  # rows per transaction: a year's backlog never holds locks or a transaction for long


def delete_expired(session_factory: sessionmaker[Session], retention: Retention, now: datetime | None = None,
                   batch: int = DELETE_BATCH) -> tuple[int, int]:
    """Delete the rows that would otherwise grow for ever: emails sent more than
    `retention.sent_emails_days` ago (their Reminder rows stay, without the message: what was
    sent to whom for which invoices is still known, and never sent twice) and provider events
    processed and received more than `retention.webhook_events_days` ago (providers stop
    retrying a delivery within days). A message not sent or an event not applied is never
    deleted; audit events are the audit trail and are kept. One transaction per `batch` rows.
    (sent emails deleted, provider events deleted); 0 days keeps them for ever."""
    now = now or clock.now()
    emails = events = 0
    if retention.sent_emails_days > 0:
        cutoff = now - timedelta(days=retention.sent_emails_days)
        while True:
            with unit_of_work(session_factory) as session:
                ids = list(session.scalars(select(OutboxMessage.id).where(
                    OutboxMessage.status == "sent", OutboxMessage.sent_at < cutoff).limit(batch)))
                if ids:
                    session.execute(update(Reminder).where(Reminder.outbox_id.in_(ids)).values(outbox_id=None)
                                    .execution_options(synchronize_session=False))
                    emails += _changed(session, delete(OutboxMessage)
                                       .where(OutboxMessage.id.in_(ids), OutboxMessage.status == "sent")
                                       .execution_options(synchronize_session=False))
            if len(ids) < batch:
                break
    if retention.webhook_events_days > 0:
        cutoff = now - timedelta(days=retention.webhook_events_days)
        while True:
            with unit_of_work(session_factory) as session:
                ids = list(session.scalars(select(WebhookEvent.id).where(
                    WebhookEvent.received_at < cutoff, WebhookEvent.processed_at.is_not(None)).limit(batch)))
                if ids:
                    events += _changed(session, delete(WebhookEvent)
                                       .where(WebhookEvent.id.in_(ids), WebhookEvent.processed_at.is_not(None))
                                       .execution_options(synchronize_session=False))
            if len(ids) < batch:
                break
    return emails, events


def contact_by_email(customer: Customer, email: str) -> Contact | None:
    wanted = email.strip().lower()
    return next((c for c in customer.contacts if c.email.lower() == wanted), None)

