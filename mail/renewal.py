"""'Email me a fresh link': only ever to the address on file, at a bounded rate."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger import audit
from mail import notifications
from ledger.models import Company, Contact, Customer, OutboxMessage
from links import throttle, tokens

RENEWALS_PER_HOUR = 3
REQUESTS_PER_CLIENT_PER_HOUR = 10
# Enough to catch a typing slip; the mail server has the last word on an address.
EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")
MAX_CONTACTS_PER_REQUEST = 5


def is_email(text: str) -> bool:
    return len(text) <= 254 and bool(EMAIL.match(text))


def request_link_by_email(session: Session, address: str, *, company: Company | None, client: str, language: str,
                          secret: str, base_url: str, templates: Any) -> None:
    """"Email me a new link", from someone with no working link: whatever the address, one email
    is queued to it (a fresh link to each account it is a contact of, or a note that it is not
    on file), so the page's answer and the work done never tell a known address from an unknown
    one. Capped per address and per client (`client`, the IP): a quiet no-op beyond."""
    address = address.strip()
    digest = hashlib.sha256(address.lower().encode()).hexdigest()[:32]
    keys = (f"renew-address:{digest}", RENEWALS_PER_HOUR), (f"renew-client:{client}", REQUESTS_PER_CLIENT_PER_HOUR)
    if any(throttle.is_blocked(session, key, limit, 3600) for key, limit in keys):
        return
    for key, _limit in keys:
        throttle.record_failure(session, key, 3600)
    query = (select(Contact).join(Customer, Customer.id == Contact.customer_id)
             .where(func.lower(Contact.email) == address.lower(), Contact.email_failing_since.is_(None))
             .order_by(Contact.id).limit(MAX_CONTACTS_PER_REQUEST))
    if company is not None:
        query = query.where(Customer.company_id == company.id)
    contacts = list(session.scalars(query))
    for contact in contacts:
        queue_link_email(session, contact, secret=secret, base_url=base_url, templates=templates)
        audit.record(session, actor_type="contact", actor=contact.email, action="link.renewal_requested",
                     entity_type="contact", entity_id=contact.id, customer_id=contact.customer_id)
    if not contacts:
        context = {"company": company, "address": address}
        session.add(OutboxMessage(
            customer_id=None, contact_id=None, kind="no_account", to_address=address,
            subject=templates.render_string("email/no_account_subject.txt", context, language).strip(),
            body_text=templates.render_string("email/no_account.txt", context, language),
            body_html=templates.render_string("email/no_account.html", context, language),
        ))
        session.flush()


def send_fresh_link(session: Session, contact: Contact, *, secret: str, base_url: str, templates: Any) -> bool:
    """Queue an email with a new link for `contact`; False when the hourly cap is reached."""
    key = f"renew:{contact.id}"
    if throttle.is_blocked(session, key, RENEWALS_PER_HOUR, 3600):
        return False
    throttle.record_failure(session, key, 3600)
    queue_link_email(session, contact, secret=secret, base_url=base_url, templates=templates)
    customer = contact.customer
    audit.record(
        session,
        actor_type="contact",
        actor=contact.email,
        action="link.renewal_requested",
        entity_type="contact",
        entity_id=contact.id,
        customer_id=customer.id,
    )
    return True


def queue_link_email(session: Session, contact: Contact, *, secret: str, base_url: str, templates: Any,
                     by_staff: bool = False) -> OutboxMessage:
    """Queue the 'here is your link' email with a new link for `contact` (no cap: callers decide);
    `by_staff`: sent on staff's initiative, not the debtor's request."""
    customer = contact.customer
    context = {
        "company": customer.company,
        "customer": customer,
        "contact": contact,
        "link": tokens.link_url(base_url, tokens.make_token(secret, contact)),
        "lifetime_days": customer.company.link_lifetime_days,
        "by_staff": by_staff,
    }
    return notifications.queue_email(session, customer=customer, contact=contact, kind="fresh_link", to=contact.email,
                                     name="fresh_link", context=context, language=contact.language,
                                     templates=templates)
