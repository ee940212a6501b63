"""Emails about disputes and questions, queued in the outbox (delivered by the worker).

Staff hear of a new case or a debtor's reply at the assigned collector's address, else at
the company's collections address; the debtor hears of each staff reply with a fresh link.
Services only: templates are passed in, nothing here sees HTTP.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ledger.models import Contact, Customer, Dispute, OutboxMessage, User
from links import tokens


def _staff_address(session: Session, dispute: Dispute, customer: Customer) -> str | None:
    collector_id = dispute.assigned_to_id or customer.collector_id
    collector = session.get(User, collector_id) if collector_id else None
    if collector is not None and collector.active:
        return collector.email
    return customer.company.collections_email or None


def _staff_language(customer: Customer) -> str:
    return "fr" if customer.company.country == "FR" else "en"


def _queue(session: Session, *, customer: Customer, contact: Contact | None, kind: str, to: str, name: str,
           context: dict[str, Any], language: str, templates: Any) -> OutboxMessage:
    message = OutboxMessage(
        customer_id=customer.id,
        contact_id=contact.id if contact else None,
        kind=kind,
        to_address=to,
        subject=templates.render_string(f"email/{name}_subject.txt", context, language).strip(),
        body_text=templates.render_string(f"email/{name}.txt", context, language),
        body_html=templates.render_string(f"email/{name}.html", context, language),
    )
    session.add(message)
    session.flush()
    return message


def notify_staff(session: Session, dispute: Dispute, *, event: str, base_url: str,
                 templates: Any) -> OutboxMessage | None:
    """`event` is "opened" or "replied"; None when nobody is there to tell."""
    customer = session.get(Customer, dispute.customer_id)
    assert customer is not None
    to = _staff_address(session, dispute, customer)
    if to is None:
        return None
    context = {
        "company": customer.company,
        "customer": customer,
        "dispute": dispute,
        "event": event,
        "numbers": ", ".join(i.number for i in dispute.invoices),
        "link": f"{base_url}/admin/disputes/{dispute.id}",
    }
    return _queue(session, customer=customer, contact=None, kind=f"dispute_{event}", to=to, name="dispute_staff",
                  context=context, language=_staff_language(customer), templates=templates)


def notify_debtor(session: Session, dispute: Dispute, *, secret: str, base_url: str,
                  templates: Any) -> OutboxMessage | None:
    """A staff reply: the debtor gets an email in its contact's language with a fresh link."""
    customer = session.get(Customer, dispute.customer_id)
    assert customer is not None
    contact = session.get(Contact, dispute.contact_id) if dispute.contact_id else None
    contact = contact or customer.primary_contact
    if contact is None:
        return None
    context = {
        "company": customer.company,
        "customer": customer,
        "dispute": dispute,
        "numbers": ", ".join(i.number for i in dispute.invoices),
        "link": tokens.link_url(base_url, tokens.make_token(secret, contact)),
        "lifetime_days": customer.company.link_lifetime_days,
    }
    return _queue(session, customer=customer, contact=contact, kind="dispute_answer", to=contact.email,
                  name="dispute_answer", context=context, language=contact.language, templates=templates)
