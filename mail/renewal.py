"""'Email me a fresh link': only ever to the address on file, at a bounded rate."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ledger import audit
from mail import notifications
from ledger.models import Contact, OutboxMessage
from links import throttle, tokens

RENEWALS_PER_HOUR = 3


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
