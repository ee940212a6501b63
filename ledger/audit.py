"""The audit trail: who did what to which record, with before and after."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.i18n import N_, gettext
from ledger.events import queue_deliveries
from ledger.models import AuditEvent, Customer

# What each action code reads as for staff (audit trail, timelines). Every code written through
# `record` has one (tests/ledger/test_audit_labels.py reads the source to check); a code from
# elsewhere (an older release) reads as itself.
ACTION_LABELS: dict[str, str] = {
    "bank_account.added": N_("Bank account added"),
    "bank_account.activated": N_("Bank account reactivated"),
    "bank_account.deactivated": N_("Bank account deactivated"),
    "bank_entry.ignored": N_("Bank entry set aside: not a customer payment"),
    "bank_entry.restored": N_("Bank entry put back in the queue"),
    "bank_match.confirmed": N_("Bank entry matched"),
    "bank_match.undone": N_("Bank match undone"),
    "api_key.created": N_("ERP API key created"),
    "api_key.revoked": N_("ERP API key revoked"),
    "checkout.mandate_set_up": N_("Direct debit mandate set up at checkout"),
    "checkout.mandate_ended": N_("Direct debit mandate ended before collection"),
    "company.dispute_reasons_changed": N_("Dispute reasons changed"),
    "company.settings_changed": N_("Company settings changed"),
    "portal.viewed_as_customer": N_("Portal viewed as the customer by staff"),
    "credit.applied": N_("Credit applied to a payment"),
    "checkout.cancelled": N_("Payment cancelled by the debtor"),
    "checkout.expired": N_("Bank transfer expired unpaid"),
    "checkout.superseded": N_("Unstarted payment replaced by a new one"),
    "contact.added": N_("Contact added"),
    "contact.updated": N_("Contact changed"),
    "contact.removed": N_("Contact removed"),
    "customer.collector_assigned": N_("Collector assigned"),
    "customers.bulk_action": N_("Action on several customers"),
    "customer.updated": N_("Customer updated by an import"),
    "dispute.accepted": N_("Dispute accepted"),
    "dispute.message": N_("Message on a dispute"),
    "dispute.note": N_("Internal note on a dispute"),
    "dispute.opened": N_("Dispute opened"),
    "dispute.rejected": N_("Dispute rejected"),
    "export.downloaded": N_("List downloaded (CSV or Excel)"),
    "fx_rate.created": N_("Exchange rate added"),
    "fx_rate.updated": N_("Exchange rate changed"),
    "import.customers": N_("Customers imported"),
    "import.invoices": N_("Invoices imported"),
    "import.contacts": N_("Contacts imported"),
    "import.bank_statement": N_("Bank statement imported"),
    "invoice.updated": N_("Invoice updated by an import"),
    "invoice.settled_outside": N_("Invoice settled outside Encours (ERP open items)"),
    "invoice.voided": N_("Invoice cancelled by the ERP"),
    "invoice.pdf_attached": N_("Original invoice PDF sent by the ERP"),
    "invoice.pdf_removed": N_("Original invoice PDF removed by the ERP"),
    "import.open_items": N_("ERP open items applied"),
    "link.renewal_requested": N_("Customer asked for a fresh link"),
    "link.sent": N_("Link sent by staff"),
    "links.revoked": N_("Links revoked"),
    "mandate.pending_submission": N_("Direct debit mandate created"),
    "mandate.submitted": N_("Direct debit mandate submitted to the bank"),
    "mandate.active": N_("Direct debit mandate active"),
    "mandate.failed": N_("Direct debit mandate failed"),
    "mandate.cancelled": N_("Direct debit mandate cancelled"),
    "mandate.expired": N_("Direct debit mandate expired"),
    "note.added": N_("Note added"),
    "task.done": N_("Task done"),
    "payment.pending": N_("Payment started"),
    "personal_data.erased": N_("Personal data erased"),
    "personal_data.exported": N_("Personal data exported"),
    "payment.processing": N_("Payment processing"),
    "payment.succeeded": N_("Payment received"),
    "payment.failed": N_("Payment failed"),
    "payment.refunded": N_("Payment refunded"),
    "payment.charged_back": N_("Payment charged back"),
    "payment.recorded": N_("Payment recorded by hand"),
    "payment.cancelled": N_("Payment cancelled"),
    "payment.partially_refunded": N_("Payment partly refunded"),
    "payment.dispute_opened": N_("Card dispute opened"),
    "payment.dispute_closed": N_("Card dispute closed"),
    "promise.made": N_("Promise to pay made"),
    "promise.kept": N_("Promise to pay kept"),
    "promise.broken": N_("Promise to pay broken"),
    "promise.cancelled": N_("Promise to pay cancelled"),
    "question.opened": N_("Question asked"),
    "question.closed": N_("Question closed"),
    "reminder.queued": N_("Reminder queued"),
    "reminder.approved": N_("Reminder approved and sent"),
    "reminder.declined": N_("Reminder discarded before sending"),
    "email.retried": N_("Failed email sent again"),
    "reminders.paused": N_("Reminders paused"),
    "reminders.resumed": N_("Reminders resumed"),
    "scenario.created": N_("Reminder scenario created"),
    "scenario.updated": N_("Reminder scenario changed"),
    "user.created": N_("Staff account created"),
    "user.updated": N_("Staff account changed"),
    "user.activated": N_("Staff account reactivated"),
    "user.deactivated": N_("Staff account deactivated"),
    "user.password_reset": N_("Staff password reset"),
    "user.sign_in_failed": N_("Failed staff sign-in"),
    "webhook.replayed": N_("Provider event replayed"),
    "webhook_endpoint.added": N_("ERP webhook endpoint added"),
    "webhook_endpoint.secret_shown": N_("ERP webhook endpoint's signing secret shown"),
    "webhook_endpoint.removed": N_("ERP webhook endpoint removed"),
    "webhook_delivery.resent": N_("ERP webhook sent again"),
    "link.opened": N_("Link opened"),
}


def action_label(language: str, action: str | None) -> str:
    """The action's label in `language`; an unknown code reads as itself."""
    return gettext(language, ACTION_LABELS[action]) if action in ACTION_LABELS else (action or "")


def record(
    session: Session,
    *,
    actor_type: str,
    action: str,
    entity_type: str,
    entity_id: int | None,
    actor: str | None = None,
    customer_id: int | None = None,
    company_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """`company_id` says whose record it is (so managers read their companies' trail); when not
    given it is the customer's company, or the company itself for a company record."""
    if company_id is None:
        if customer_id is not None:
            customer = session.get(Customer, customer_id)
            company_id = customer.company_id if customer is not None else session.scalar(
                select(Customer.company_id).where(Customer.id == customer_id))
        elif entity_type == "company":
            company_id = entity_id
    event = AuditEvent(
        actor_type=actor_type,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        customer_id=customer_id,
        company_id=company_id,
        before=before,
        after=after,
    )
    session.add(event)
    queue_deliveries(session, event)
    return event
