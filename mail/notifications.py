"""Emails about disputes, questions and promises to pay, queued in the outbox (delivered by the worker).

Staff hear of a new case or a debtor's reply at the assigned collector's address, else at
the company's collections address; the debtor hears of each staff reply with a fresh link.
A promise to pay is confirmed to the debtor (amount, date, invoices, link) and told to
staff; a broken one is told to staff.
Services only: templates are passed in, nothing here sees HTTP.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ledger.models import Contact, Customer, Dispute, OutboxMessage, PromiseToPay, User
from ledger.money import Money
from links import tokens


def _staff_address(session: Session, dispute: Dispute | None, customer: Customer) -> str | None:
    collector_id = (dispute.assigned_to_id if dispute else None) or customer.collector_id
    collector = session.get(User, collector_id) if collector_id else None
    if collector is not None and collector.active:
        return collector.email
    return customer.company.collections_email or None


def _staff_language(customer: Customer) -> str:
    return "fr" if customer.company.country == "FR" else "en"


def queue_email(session: Session, *, customer: Customer, contact: Contact | None, kind: str, to: str, name: str,
                context: dict[str, Any], language: str, templates: Any) -> OutboxMessage:
    """Queue one email made of the `email/{name}_subject.txt`, `.txt` and `.html` templates."""
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
    return queue_email(session, customer=customer, contact=None, kind=f"dispute_{event}", to=to, name="dispute_staff",
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
    return queue_email(session, customer=customer, contact=contact, kind="dispute_answer", to=contact.email,
                  name="dispute_answer", context=context, language=contact.language, templates=templates)


def _promise_context(customer: Customer, promise: PromiseToPay) -> dict[str, Any]:
    invoices = sorted(promise.invoices, key=lambda i: (i.due_date, i.number))
    return {
        "company": customer.company,
        "customer": customer,
        "promise": promise,
        "amount": Money(promise.amount_minor, promise.currency),
        "invoices": invoices,
        "numbers": ", ".join(i.number for i in invoices),
    }


def _tell_staff_of_promise(session: Session, promise: PromiseToPay, customer: Customer, *, event: str,
                           base_url: str, templates: Any) -> OutboxMessage | None:
    to = _staff_address(session, None, customer)
    if to is None:
        return None
    context = {**_promise_context(customer, promise), "event": event, "link": f"{base_url}/admin/promises"}
    return queue_email(session, customer=customer, contact=None, kind=f"promise_{event}", to=to, name="promise_staff",
                  context=context, language=_staff_language(customer), templates=templates)


def notify_promise_made(session: Session, promise: PromiseToPay, *, secret: str, base_url: str,
                        templates: Any) -> list[OutboxMessage]:
    """The debtor's confirmation (in its contact's language, with a fresh link), and staff's notice."""
    customer = session.get(Customer, promise.customer_id)
    assert customer is not None
    queued = []
    contact = session.get(Contact, promise.contact_id) if promise.contact_id else None
    contact = contact or customer.primary_contact
    if contact is not None:
        context = {**_promise_context(customer, promise),
                   "link": tokens.link_url(base_url, tokens.make_token(secret, contact))}
        queued.append(queue_email(session, customer=customer, contact=contact, kind="promise_confirmation",
                             to=contact.email, name="promise_made", context=context, language=contact.language,
                             templates=templates))
    staff = _tell_staff_of_promise(session, promise, customer, event="made", base_url=base_url, templates=templates)
    return queued + ([staff] if staff else [])


def notify_promise_broken(session: Session, promise: PromiseToPay, *, base_url: str,
                          templates: Any) -> OutboxMessage | None:
    """Staff hear that a promise was not kept (the debtor hears it in its next reminder)."""
    customer = session.get(Customer, promise.customer_id)
    assert customer is not None
    return _tell_staff_of_promise(session, promise, customer, event="broken", base_url=base_url,
                                  templates=templates)


def notify_login_failures(session: Session, user: User, *, failures: int, ip: str, language: str,
                          templates: Any) -> OutboxMessage:
    """Tell a staff user its account saw repeated failed sign-ins (the last one from `ip`)."""
    context = {"email": user.email, "failures": failures, "ip": ip}
    message = OutboxMessage(
        kind="login_failures", to_address=user.email,
        subject=templates.render_string("email/login_failures_subject.txt", context, language).strip(),
        body_text=templates.render_string("email/login_failures.txt", context, language),
        body_html=templates.render_string("email/login_failures.html", context, language),
    )
    session.add(message)
    session.flush()
    return message
