"""Applying what providers tell us about a payment to the ledger.

The payment state machine. Each status has a rank, and a payment only ever moves to a
higher rank; an event of the same or a lower rank is a no-op (a duplicate, or a late,
older event):

    pending (0) → processing (1) → succeeded (2) → refunded (3) → charged_back (4) → failed (5)

- `failed` is final and reachable from every other status: before success it is a plain
  failure; after success it is a late failure (GoCardless `late_failure`; pass either
  "failed" or "late_failure").
- `refunded`, `charged_back` and a late `failed` all undo a success: the payment's
  allocations are deleted and the invoices reopen at their full open amount (an early-payment
  discount is not kept: a new checkout offers it again only while its date has not passed).
- Entering `succeeded` allocates the payment to its checkout's invoices, in line order, with
  the discounts locked in the checkout (granted only while the invoice is still wholly open for
  that line); what is no longer owed (an invoice paid twice) stays as unapplied credit
  (succeeded payments minus their allocations), never lost. When a success is undone, that
  leftover money of the customer's other succeeded payments goes to the invoices that reopened,
  so which of two payments for one invoice arrived first does not change the balance.

Because the rank only grows, the final state is the highest-ranked status received, whatever
the order or number of deliveries. Consequence for providers: report a failed *attempt* that
the debtor may retry under the same reference (a Stripe PaymentIntent after
`payment_intent.payment_failed`) as "pending" with a reason, not as "failed".

Everything happens in the caller's transaction: one transaction per event.
"""

from __future__ import annotations

import enum
from dataclasses import replace
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Literal, Mapping
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, Connection, Select, String, Table, Text, TextClause, bindparam, func, insert, inspect, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy import update as update_statement
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import flag_modified, set_committed_value
from sqlalchemy.sql.dml import ReturningUpdate

from kernel.clock import clock
from kernel.db import driver_rows
from kernel.settings import Settings, load_settings
from ledger import audit
from mail import notifications
from ledger.allocation import allocate, settled_status
from ledger.events import EVENT_TYPES
from ledger.models import (
    Allocation,
    AuditEvent,
    Checkout,
    CheckoutLine,
    Contact,
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Payment,
    PaymentMethod,
    PaymentStatus,
    WebhookEvent,
)
from ledger.money import Money
from links import tokens
from ledger.receipts import next_receipt_number
from payments import failures
from payments.base import CardDetails, NotOurs, PaymentProvider, PaymentUpdate, PaymentWrites, ProviderEvent, Triage
from payments.checkout import ENDED_BY_US, apply_reserved_credit, record_failure_code, release_applied_credit

RANK = {PaymentStatus.pending: 0, PaymentStatus.processing: 1, PaymentStatus.succeeded: 2, PaymentStatus.refunded: 3,
        PaymentStatus.charged_back: 4, PaymentStatus.failed: 5}
ALIASES = {"late_failure": PaymentStatus.failed}
UNDOES_SUCCESS = (PaymentStatus.refunded, PaymentStatus.charged_back, PaymentStatus.failed)
CHECKOUT_STATUS = {
    PaymentStatus.pending: "open",  # e.g. a declined card attempt the debtor may retry
    PaymentStatus.processing: "processing",
    PaymentStatus.succeeded: "succeeded",
    PaymentStatus.refunded: "cancelled",
    PaymentStatus.charged_back: "failed",
    PaymentStatus.failed: "failed",
}


class SettlementError(ValueError):
    pass


@lru_cache(maxsize=1)
def _templates() -> Any:
    from kernel.templating import Templates

    return Templates()


class _Unread(enum.Enum):
    unread = "unread"  # the caller has not read the payment: `_payment_for` reads it


def apply_payment_status(
    session: Session,
    *,
    checkout: Checkout,
    provider: str,
    provider_ref: str,
    method: str,
    status: str,
    amount_minor: int,
    currency: str,
    reason: str | None = None,
    occurred_at: datetime | None = None,
    settings: Settings | None = None,
    card: CardDetails | None = None,
    payment: Payment | None | Literal[_Unread.unread] = _Unread.unread,
) -> Payment:
    """Create or move forward the Payment (provider, provider_ref) of `checkout`; see the module doc.

    `settings` gives the secret and base URL of the links in the emails (default: the environment).
    `payment`: that payment as the caller read it locked (FOR UPDATE) in this transaction, or None
    when it found none; it is then not read again.
    """
    status = ALIASES.get(status, status)
    if status not in RANK:
        raise SettlementError(f"unknown payment status {status!r}")
    if amount_minor <= 0:
        raise SettlementError("a payment amount is positive")
    if currency != checkout.currency:
        raise SettlementError(f"a {currency} payment cannot pay a {checkout.currency} checkout")
    occurred_at = occurred_at or clock.now()
    payment, created = _payment_for(session, checkout, provider, provider_ref, method, amount_minor, currency,
                                    payment)
    if payment.checkout_id != checkout.id:
        raise SettlementError(f"{provider} {provider_ref} belongs to another checkout")
    previous = None if created else payment.status
    recorded_card = _card_to_record(card, payment.card_last4)
    if recorded_card is not None:
        payment.card_brand, payment.card_last4 = recorded_card
    if previous is not None and not _moves_forward(status, previous):
        if _another_decline(status, previous, reason, payment.failure_reason):
            payment.failure_reason = reason  # the debtor sees the latest why
            _journey_hooks(session, checkout, status, reason)
        return payment  # a duplicate, or an older event arriving late
    # Loaded before anything changes (its query would flush the payment half-updated) and held
    # to the end: the session keeps only referenced objects, and the counter, the day, the audit
    # row and the email all read the customer and its company (each was queried again before).
    # A success's changes to the payment (the card just above too) are written last (`_write_last`).
    held = _hold_back(payment) if status == "succeeded" else []
    if status == "succeeded":
        _lock_open_items(session, checkout)
    customer = session.get_one(Customer, checkout.customer_id)
    _journey_hooks(session, checkout, status, reason)
    was_succeeded = previous == "succeeded"
    received_on = _local_day(customer, occurred_at) if status == "succeeded" else None
    payment.status = status
    if reason:
        payment.failure_reason = reason
    if status == "succeeded":
        payment.amount_minor = amount_minor
        payment.received_on = received_on
        if reason is None:
            payment.failure_reason = None
        _record_mandate(payment, customer)
        held += _hold_back(payment)
        settled = _allocate(session, checkout, payment, fresh=created)  # noqa: F841 - held for the receipt, as `customer`
    elif status in UNDOES_SUCCESS and was_succeeded:
        session.flush()
        reopened = _reverse(session, payment) | release_applied_credit(session, checkout, payment)  # journey hook
        _reapply_leftovers(session, checkout.customer_id, reopened, payment)
    session.flush()
    _follow(session, checkout, payment)
    audit.record(
        session,
        actor_type="provider",
        actor=provider,
        action=f"payment.{status}",
        entity_type="payment",
        entity_id=payment.id,
        customer_id=checkout.customer_id,
        before={"status": previous},
        after={"status": status, "amount_minor": payment.amount_minor, "reason": reason},
    )
    if status == "succeeded":
        _queue_email(session, checkout, payment, "receipt", settings)
        _write_last(session, payment, held, customer.company_id)
    elif status in UNDOES_SUCCESS and previous != "refunded" and previous != "charged_back":
        _queue_email(session, checkout, payment, "payment_failed", settings)
    return payment


# The open items by due day a success may move (its invoices', and its customer's open credit notes'
# when it applies reserved credit), each as it stands and partly paid, locked in key order; a key not
# there yet is inserted at zero (as a total that fell back to zero stays).
_LOCK_OPEN_ITEMS = text("""
WITH moved AS (
  SELECT i.company_id, i.currency, i.kind, i.status, i.due_date
  FROM checkout_lines l JOIN invoices i ON i.id = l.invoice_id WHERE l.checkout_id = :checkout_id
  UNION ALL
  SELECT i.company_id, i.currency, i.kind, i.status, i.due_date FROM invoices i
  WHERE :credit AND i.customer_id = :customer_id AND i.currency = :currency AND i.kind = 'credit_note'
    AND i.open_minor > 0
)
INSERT INTO open_items_by_due (company_id, currency, kind, status, due_date, open_minor)
SELECT DISTINCT m.company_id, m.currency, m.kind, s.status, m.due_date, 0
FROM moved m CROSS JOIN LATERAL (VALUES (m.status), ('partially_paid')) AS s (status)
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (company_id, currency, kind, status, due_date) DO UPDATE SET open_minor = open_items_by_due.open_minor
""")


def _lock_open_items(session: Session, checkout: Checkout) -> None:
    """On PostgreSQL, before a success moves any running total: the company's open items by due day
    it may move, locked in one statement in key order. Its settlement writes one invoice per
    statement, each moving that invoice's keys (a trigger, in key order within the statement only);
    two successes of the company no longer wait on the counter first (`_write_last`), and two whose
    invoices are due on the same days in another order deadlocked."""
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite: one writer at a time
    session.execute(_LOCK_OPEN_ITEMS, {
        "checkout_id": checkout.id, "credit": bool(checkout.credit_minor) and not checkout.credit_applied,
        "customer_id": checkout.customer_id, "currency": checkout.currency})


def _hold_back(payment: Payment) -> list[str]:
    """The payment's changed columns (its new state), kept on the object but out of the session's
    flushes until `_write_last` writes them; their names. A settlement failing before then needs no
    undoing here: the payment is flushed in the caller's savepoint (or set in it), so rolling that
    back expires the whole object (tests/payments/test_concurrency_pg.py, a success failing half-way)."""
    state = inspect(payment)
    held = [key for key in state.mapper.column_attrs.keys() if state.attrs[key].history.has_changes()]
    for key in held:
        set_committed_value(payment, key, getattr(payment, key))
    return held


def _write_last(session: Session, payment: Payment, held: list[str], company_id: int) -> None:
    """A success's last writes, once everything else is written: the payment's new state (`held`),
    then its receipt number. Both lock a row every success of the company (and day, and method)
    needs: the payment's UPDATE its `payment_days` total (a trigger), the number its company's
    receipt counter. Taken last, each is held only to the commit, so the company's successes no
    longer queue for the whole settlement (bench/RESULTS.md card14). Every other writer also takes
    the counter after the running totals it moves (a payment recorded by hand, a receipt first
    shown), so no one holding the counter waits for a total: no deadlock (succ9's)."""
    session.flush()
    for key in held:
        flag_modified(payment, key)
    session.flush()
    if not payment.receipt_number:
        payment.receipt_number = next_receipt_number(session, company_id)
        session.flush()


def _moves_forward(status: str, previous: str) -> bool:
    """A status only moves to a higher rank: anything else is a duplicate or a late, older event."""
    return RANK[PaymentStatus(status)] > RANK[PaymentStatus(previous)]


def _another_decline(status: str, previous: str, reason: str | None, seen_reason: str | None) -> bool:
    """Another declined attempt of a payment still pending, for another reason: kept, though its
    status does not move (the debtor may retry under the same reference)."""
    return status == previous == "pending" and bool(reason) and seen_reason != reason


def _card_to_record(card: CardDetails | None, seen_last4: str | None) -> tuple[str, str] | None:
    """The card (brand, last four) to record: told at confirmation or by an event, whichever comes
    first, then kept; None when there is nothing new to record."""
    if card is None or seen_last4 is not None:
        return None
    return card.brand[:20], card.last4[-4:]


def _record_mandate(payment: Payment, customer: Customer) -> None:
    """The debtor's history shows which mandate a direct debit was collected on."""
    if payment.method == "direct_debit" and customer.gocardless_mandate_id and not payment.mandate_ref:
        payment.mandate_ref = customer.gocardless_mandate_id


# Built once: every webhook event looks its payment up, and building the query cost more than running it.
_PAYMENT_LOCKED = (
    select(Payment)
    .where(Payment.provider == bindparam("provider"), Payment.provider_ref == bindparam("provider_ref"))
    .with_for_update()
)


def _payment_for(
    session: Session, checkout: Checkout, provider: str, provider_ref: str, method: str, amount: int, currency: str,
    locked: Payment | None | Literal[_Unread.unread] = _Unread.unread,
) -> tuple[Payment, bool]:
    """The payment and whether it was created just now (`locked`: as the caller read it, locked)."""
    params = {"provider": provider, "provider_ref": provider_ref}
    payment = session.scalar(_PAYMENT_LOCKED, params) if locked is _Unread.unread else locked
    if payment is not None:
        return payment, False
    payment = Payment(
        customer_id=checkout.customer_id,
        provider=provider,
        provider_ref=provider_ref,
        method=method,
        amount_minor=amount,
        currency=currency,
        status="pending",
        checkout_id=checkout.id,
    )
    try:
        with session.begin_nested():
            session.add(payment)
            session.flush()
    except IntegrityError:
        # Another transaction created it meanwhile: use theirs.
        existing = session.scalar(_PAYMENT_LOCKED, params)
        if existing is None:
            raise
        return existing, False
    return payment, True


def _local_day(customer: Customer, moment: datetime) -> date:
    return moment.astimezone(ZoneInfo(customer.company.timezone)).date()


def _allocate(session: Session, checkout: Checkout, payment: Payment, *, fresh: bool = False) -> dict[int, Invoice]:
    """Settle the checkout's invoices in line order with what the payment brought and has not
    yet applied (so it also re-applies a leftover once an invoice reopens); the invoices, by id.
    `fresh`: the payment was created in this transaction, so nothing of it is applied yet (the
    reserved credit takes no money of its own checkout's payments): not read."""
    ids = [line.invoice_id for line in checkout.lines]
    invoices = {
        invoice.id: invoice
        # Locked in id order: two payments settling overlapping invoices at once then queue
        # behind each other instead of each holding one row the other waits for (a deadlock).
        for invoice in session.scalars(
            select(Invoice).where(Invoice.id.in_(ids)).order_by(Invoice.id).with_for_update()
        )
    }
    applied_before = {} if fresh else dict(
        session.execute(
            select(Allocation.invoice_id, func.sum(Allocation.amount_minor))
            .where(Allocation.payment_id == payment.id)
            .group_by(Allocation.invoice_id)
        ).all()
    )
    budget = payment.amount_minor - sum(int(amount or 0) for amount in applied_before.values())
    for line in checkout.lines:
        if budget <= 0:
            break
        invoice = invoices[line.invoice_id]
        if invoice.kind != InvoiceKind.invoice.value or invoice.status == InvoiceStatus.void.value:
            continue
        cash = line.amount_minor - line.discount_minor
        already = int(applied_before.get(invoice.id) or 0)
        if not already and line.discount_minor and invoice.open_minor == line.amount_minor and budget >= cash:
            # The discount only while the invoice is still wholly open for this line.
            allocate(session, invoice, Money(cash, invoice.currency), Money(line.discount_minor, invoice.currency),
                     payment=payment)
            budget -= cash
            continue
        applied = min(cash - already, invoice.open_minor, budget)
        if applied > 0:
            allocate(session, invoice, Money(applied, invoice.currency), payment=payment)
            budget -= applied
    return invoices


def _reverse(session: Session, payment: Payment) -> set[int]:
    """Delete the payment's allocations and reopen what they settled; the reopened invoice ids."""
    reopened: set[int] = set()
    for allocation in session.scalars(
        select(Allocation).where(Allocation.payment_id == payment.id).order_by(Allocation.id)
    ).all():
        invoice = session.scalar(select(Invoice).where(Invoice.id == allocation.invoice_id).with_for_update())
        assert invoice is not None
        invoice.open_minor += allocation.amount_minor + allocation.discount_minor
        invoice.status = settled_status(invoice)
        reopened.add(invoice.id)
        session.delete(allocation)
    session.flush()
    return reopened


def _reapply_leftovers(session: Session, customer_id: int, reopened: set[int], undone: Payment) -> None:
    """Money of other succeeded payments that was left unapplied because these invoices were
    already paid goes to them now, so the outcome does not depend on which payment came first."""
    if not reopened:
        return
    others = session.scalars(
        select(Payment)
        .join(CheckoutLine, CheckoutLine.checkout_id == Payment.checkout_id)
        .where(
            Payment.customer_id == customer_id,
            Payment.status == "succeeded",
            Payment.id != undone.id,
            CheckoutLine.invoice_id.in_(reopened),
        )
        .order_by(Payment.id)
        .distinct()
    ).all()
    for other in others:
        other_checkout = session.get(Checkout, other.checkout_id)
        if other_checkout is not None:
            _allocate(session, other_checkout, other)


def _journey_hooks(session: Session, checkout: Checkout, status: str, reason: str | None) -> None:
    """The debtor's journey (payments.checkout): the credit a checkout reserved is applied when its
    payment succeeds, before the payment is allocated; a failed attempt keeps its catalog code."""
    if status == "succeeded":
        apply_reserved_credit(session, checkout)
    elif reason and status in ("pending", "failed", "charged_back"):
        record_failure_code(checkout, reason)


def _follows(failure_code: str | None, status: str) -> bool:
    """Whether a checkout follows its payment moving to `status`: one the debtor cancelled or that
    expired or we ended (`ENDED_BY_US`) stays so, unless money arrives for it after all."""
    return failure_code not in ENDED_BY_US or status == "succeeded"


def _follow(session: Session, checkout: Checkout, payment: Payment) -> None:
    """The checkout shows the state of its latest payment, as `_follows` allows."""
    if not _follows(checkout.failure_code, payment.status):
        return
    if checkout.failure_code in ENDED_BY_US:
        checkout.failure_code = None  # money came after all: from here the checkout follows it
    latest = session.scalar(
        select(Payment.id).where(Payment.checkout_id == checkout.id).order_by(Payment.id.desc()).limit(1)
    )
    if latest == payment.id:
        checkout.status = CHECKOUT_STATUS[PaymentStatus(payment.status)]
        checkout.provider = payment.provider
        checkout.provider_ref = checkout.provider_ref or payment.provider_ref


def _queue_email(session: Session, checkout: Checkout, payment: Payment, kind: str, settings: Settings | None) -> None:
    customer = session.get(Customer, checkout.customer_id)
    assert customer is not None
    contact = session.get(Contact, checkout.contact_id) if checkout.contact_id else None
    contact = contact or customer.primary_contact
    if contact is None:
        return
    settings = settings or load_settings()
    context = {
        "company": customer.company,
        "customer": customer,
        "contact": contact,
        "checkout": checkout,
        "payment": payment,
        "link": tokens.link_url(settings.base_url, tokens.make_token(str(settings.secret_key), contact)),
    }
    notifications.queue_email(session, customer=customer, contact=contact, kind=kind, to=contact.email, name=kind,
                              context=context, language=contact.language, templates=_templates())


# Statuses whose amount is the whole payment we asked for; an undoing event may name a part (a
# dispute of part of a charge): it is about a payment already matched and recorded.
_WHOLE_AMOUNT = ("pending", "processing", "succeeded")


def matched_checkout(session: Session, update: PaymentUpdate) -> Checkout:
    """The checkout `update` is about, only if it matches what we created: a checkout of that
    provider, in that currency, for that amount, and the provider's payment id either the one
    the checkout made or one recorded for it. NotOurs otherwise: nothing moves."""
    return _matched(session, update)[0]


def _matched(session: Session, update: PaymentUpdate) -> tuple[Checkout, Payment | None]:
    """`matched_checkout`, and the payment recorded for the update, read locked (FOR UPDATE) for
    what follows: read once (each webhook event read it twice, then locked, before)."""
    checkout = session.get(Checkout, update.checkout_id)
    if checkout is None:
        raise NotOurs(f"{update.provider} {update.provider_ref} names no checkout of ours ({update.checkout_id})")
    if checkout.provider != update.provider:
        raise NotOurs(f"{update.provider} {update.provider_ref} names checkout {checkout.id}, "
                      f"which is paid by {checkout.method} ({checkout.provider or 'not started'})")
    if update.currency != checkout.currency:
        raise NotOurs(f"{update.provider} {update.provider_ref} is in {update.currency}; "
                      f"checkout {checkout.id} is in {checkout.currency}")
    recorded = session.scalar(_PAYMENT_LOCKED, {"provider": update.provider, "provider_ref": update.provider_ref})
    if recorded is not None and recorded.checkout_id != checkout.id:
        raise NotOurs(f"{update.provider} {update.provider_ref} is the payment of another checkout")
    if recorded is None and checkout.provider_ref != (update.made_by or update.provider_ref):
        raise NotOurs(f"{update.provider} {update.provider_ref} is not the payment checkout {checkout.id} made "
                      f"({checkout.provider_ref or 'none yet'})")
    if ALIASES.get(update.status, update.status) in _WHOLE_AMOUNT and update.amount_minor != checkout.amount_minor:
        raise NotOurs(f"{update.provider} {update.provider_ref} is for {update.amount_minor} {update.currency}; "
                      f"checkout {checkout.id} asked for {checkout.amount_minor}")
    return checkout, recorded


# A recorded payment with its checkout, its customer's company and the checkout's latest payment,
# for `triage`.
_LATEST = aliased(Payment)


def payment_and_checkout(provider: Any, provider_ref: Any) -> Select[Any]:
    """`triage`'s read of the payment that `provider` and `provider_ref` name (parameters, or the
    columns of a batch's questions on PostgreSQL's event loop: `payments.webhooks.stored_and_payment_asked`)."""
    columns: tuple[Any, ...] = (
        Checkout.id, Checkout.provider, Checkout.provider_ref, Checkout.currency, Checkout.amount_minor,
        Payment.status, Payment.failure_reason, Payment.card_last4, Payment.id, Payment.card_brand,
        Payment.amount_minor, Checkout.status, Checkout.failure_code, Checkout.customer_id, Customer.company_id,
        select(func.max(_LATEST.id)).where(_LATEST.checkout_id == Checkout.id).scalar_subquery())
    return (
        select(*columns)
        .join_from(Payment, Checkout, Checkout.id == Payment.checkout_id)
        .join(Customer, Customer.id == Checkout.customer_id)
        .where(Payment.provider == provider, Payment.provider_ref == provider_ref)
    )


_PAYMENT_AND_CHECKOUT = payment_and_checkout(bindparam("provider"), bindparam("provider_ref"))


def triage(connection: Connection, update: PaymentUpdate, *, by_checkout_ref: bool = False) -> Triage | None:
    """What `apply_update` would do for `update`, told by one read on a Core connection, in no
    transaction of its own, when the payment is recorded already for a checkout that matches it
    (as `matched_checkout` requires): nothing (`writes` None: the event is stored already
    processed, `payments.webhooks.store_unchanged`), or, when it moves the payment without
    settling money, the writes it would make (`payments.webhooks.store_and_write` makes them):
    a declined attempt with a new reason (the payment's reason, the checkout's failure code), a
    card to record, `pending` → `processing` (the payment, the checkout following it, the audit
    row). None whenever it would do anything else, or fail: `apply_update` then runs and does
    it (or says why not). Each such event costs no ORM work.

    `by_checkout_ref`: the checkout is the one whose provider reference is `update.provider_ref`
    (a Stripe PaymentIntent's), as the provider found it, instead of `update.checkout_id`."""
    if not triage_reads(update):
        return None
    rows = driver_rows(connection, _PAYMENT_AND_CHECKOUT,
                       {"provider": update.provider, "provider_ref": update.provider_ref})
    return triage_told(update, rows[0] if rows else None, by_checkout_ref=by_checkout_ref)


def triage_event(connection: Connection, provider: PaymentProvider, event: ProviderEvent) -> Triage | None:
    """`triage` of the update `provider` reads about for `event` (`PaymentProvider.triage_update`),
    read on `connection`: the thread pool's path (PostgreSQL's event loop reads the same row in its
    own batched read: `payments.webhooks.intake_on_loop`). None when the provider names no update."""
    asked = provider.triage_update(event)
    if asked is None:
        return None
    update, by_checkout_ref = asked
    return triage(connection, update, by_checkout_ref=by_checkout_ref)


def triage_reads(update: PaymentUpdate) -> bool:
    """Whether `triage` reads anything for `update` (else it tells None at once)."""
    return ALIASES.get(update.status, update.status) in RANK and update.amount_minor > 0


def triage_told(update: PaymentUpdate, row: tuple[Any, ...] | None, *, by_checkout_ref: bool = False
                ) -> Triage | None:
    """`triage` from its read's row (None: no payment recorded), however it was read (on
    PostgreSQL's event loop too: `payments.webhooks.stored_and_payment_asked`)."""
    if row is None:
        return None
    status = ALIASES.get(update.status, update.status)
    (checkout_id, provider, checkout_ref, currency, amount_minor, previous, failure_reason, card_last4, payment_id,
     card_brand, paid_minor, checkout_status, failure_code, customer_id, company_id, latest) = row
    if (checkout_ref != update.provider_ref) if by_checkout_ref else (checkout_id != update.checkout_id):
        return None
    if provider != update.provider or currency != update.currency:
        return None
    if status in _WHOLE_AMOUNT and update.amount_minor != amount_minor:
        return None
    if previous not in RANK:
        return None
    outcome = f"{update.provider_ref} {update.status}"
    seen_card = (card_brand, card_last4)
    card = _card_to_record(update.card, card_last4) or seen_card
    writes = PaymentWrites(payment_id=payment_id, seen_status=previous, seen_reason=failure_reason,
                           seen_card=seen_card, status=previous, reason=failure_reason, card=card,
                           checkout_id=checkout_id)
    if not _moves_forward(status, previous):
        # As apply_payment_status: a duplicate or a late event, but another declined attempt's reason
        # and a card told for the first time are kept.
        if _another_decline(status, previous, update.reason, failure_reason):
            code = failures.classify(update.reason)  # record_failure_code, through _journey_hooks
            writes = replace(writes, reason=update.reason)
            if code != failure_code:
                writes = replace(writes, checkout_seen=(checkout_status, failure_code),
                                 checkout_new=(checkout_status, code))
        elif card == seen_card:
            return Triage(outcome)
        return Triage(outcome, writes)
    if not (previous == "pending" and status == "processing") or checkout_ref is None:
        return None
    action = f"payment.{status}"
    if action in EVENT_TYPES:  # an ERP delivery to queue: the full handler's
        return None
    writes = replace(writes, status=status, reason=update.reason or failure_reason,
                     audit=(customer_id, company_id, {"status": previous},
                            {"status": status, "amount_minor": paid_minor, "reason": update.reason}))
    # _follow: the checkout shows its latest payment's state, as `_follows` allows.
    follows = _follows(failure_code, status) and latest == payment_id
    if follows and checkout_status != CHECKOUT_STATUS[PaymentStatus(status)]:
        writes = replace(writes, checkout_seen=(checkout_status, failure_code),
                         checkout_new=(CHECKOUT_STATUS[PaymentStatus(status)], failure_code))
    return Triage(outcome, writes)


_PAYMENTS = Payment.metadata.tables[Payment.__tablename__]
_CHECKOUTS = Checkout.metadata.tables[Checkout.__tablename__]


def _write_payment(status: bool) -> ReturningUpdate[Any]:
    """The payment's conditional UPDATE, with or without its status: SQLite's running-total
    trigger fires on an UPDATE that names the status at all (the ORM names only what changed)."""
    values = {"failure_reason": bindparam("reason"), "card_brand": bindparam("brand"), "card_last4": bindparam("last4"),
              "updated_at": bindparam("now", type_=_PAYMENTS.c.updated_at.type)}
    return (
        update_statement(_PAYMENTS)
        .where(_PAYMENTS.c.id == bindparam("payment_id"), _PAYMENTS.c.status == bindparam("seen_status"),
               _PAYMENTS.c.failure_reason.is_not_distinct_from(bindparam("seen_reason", type_=Text())),
               _PAYMENTS.c.card_brand.is_not_distinct_from(bindparam("seen_brand", type_=String())),
               _PAYMENTS.c.card_last4.is_not_distinct_from(bindparam("seen_last4", type_=String())))
        .values({**values, "status": bindparam("status")} if status else values)
        .returning(_PAYMENTS.c.id)
    )


_WRITE_PAYMENT = _write_payment(status=False)
_WRITE_PAYMENT_STATUS = _write_payment(status=True)
_WRITE_CHECKOUT = (
    update_statement(_CHECKOUTS)
    .where(_CHECKOUTS.c.id == bindparam("checkout_id"), _CHECKOUTS.c.status == bindparam("seen_status"),
           _CHECKOUTS.c.failure_code.is_not_distinct_from(bindparam("seen_code", type_=String())))
    .values(status=bindparam("status"), failure_code=bindparam("code"),
            updated_at=bindparam("now", type_=_CHECKOUTS.c.updated_at.type))
    .returning(_CHECKOUTS.c.id)
)
_AUDIT = AuditEvent.metadata.tables[AuditEvent.__tablename__]
_WRITE_AUDIT = insert(_AUDIT).values({
    name: bindparam(name, type_=_AUDIT.c[name].type)
    for name in ("actor_type", "actor", "action", "entity_type", "entity_id", "customer_id", "company_id", "before",
                 "after", "created_at")})


def write_payment(connection: Connection, provider: str, writes: PaymentWrites) -> bool:
    """Make `writes` (from `triage`) in the caller's transaction, as `apply_update` would have
    made them: the payment's UPDATE, the checkout's, the audit row. Each UPDATE applies only
    while its row still holds what the read saw (the payment's locks it, as the handler's
    FOR UPDATE does: a status never moves backwards); False when one found it changed: the
    caller rolls back and leaves the event to `apply_update`."""
    now = clock.now()
    brand, last4 = writes.card
    seen_brand, seen_last4 = writes.seen_card
    moves = writes.status != writes.seen_status
    if not driver_rows(connection, _WRITE_PAYMENT_STATUS if moves else _WRITE_PAYMENT, {
            "payment_id": writes.payment_id, "seen_status": writes.seen_status, "seen_reason": writes.seen_reason,
            "seen_brand": seen_brand, "seen_last4": seen_last4, "reason": writes.reason, "brand": brand,
            "last4": last4, "now": now, **({"status": writes.status} if moves else {})}):
        return False
    if writes.checkout_seen is not None and writes.checkout_new is not None:
        if not driver_rows(connection, _WRITE_CHECKOUT, {
                "checkout_id": writes.checkout_id, "seen_status": writes.checkout_seen[0],
                "seen_code": writes.checkout_seen[1], "status": writes.checkout_new[0],
                "code": writes.checkout_new[1], "now": now}):
            return False
    if writes.audit is not None:
        customer_id, company_id, before, after = writes.audit
        driver_rows(connection, _WRITE_AUDIT, {
            "actor_type": "provider", "actor": provider, "action": f"payment.{writes.status}", "entity_type": "payment",
            "entity_id": writes.payment_id, "customer_id": customer_id, "company_id": company_id,
            "before": before, "after": after, "created_at": now})
    return True


_EVENT_COLUMNS = ("provider", "event_id", "event_type", "body", "headers", "received_at", "attempts",
                  "next_attempt_at", "processed_at", "error", "outcome", "note")
_AUDIT_COLUMNS = ("actor_type", "actor", "action", "entity_type", "entity_id", "customer_id", "company_id", "before",
                  "after", "created_at")


@lru_cache(maxsize=4)
def _with_event(dialect: Dialect) -> TextClause:
    """`write_payment` and the event's INSERT as ONE PostgreSQL statement: the payment (and the
    checkout, when it changes) locked while they hold what the read saw, then the event inserted
    (ON CONFLICT DO NOTHING), then, only if it was, the UPDATEs and the audit row. Nothing is
    written when the rows moved or the event is stored already. Every parameter cast to its
    column's type (an INSERT ... SELECT gives untyped parameters no column type)."""
    events = WebhookEvent.metadata.tables[WebhookEvent.__tablename__]

    def casts(table: Table, columns: tuple[str, ...], prefix: str) -> str:
        return ", ".join(f"CAST(:{prefix}{name} AS {table.c[name].type.compile(dialect=dialect)})"
                         for name in columns)

    sql = f"""WITH lk AS (
  SELECT p.id FROM payments p JOIN checkouts c ON c.id = :checkout_id
  WHERE p.id = :payment_id AND p.status = :seen_status
    AND p.failure_reason IS NOT DISTINCT FROM CAST(:seen_reason AS TEXT)
    AND p.card_brand IS NOT DISTINCT FROM CAST(:seen_brand AS VARCHAR)
    AND p.card_last4 IS NOT DISTINCT FROM CAST(:seen_last4 AS VARCHAR)
    AND (NOT :checkout_change OR (c.status = :seen_checkout_status
                                  AND c.failure_code IS NOT DISTINCT FROM CAST(:seen_code AS VARCHAR)))
  FOR UPDATE OF p, c
), ev AS (
  INSERT INTO {events.name} ({", ".join(_EVENT_COLUMNS)}) SELECT {casts(events, _EVENT_COLUMNS, "ev_")}
  WHERE EXISTS (SELECT 1 FROM lk) ON CONFLICT (provider, event_id) DO NOTHING RETURNING id
), pu AS (
  UPDATE payments SET status = :status, failure_reason = CAST(:reason AS TEXT), card_brand = CAST(:brand AS VARCHAR),
    card_last4 = CAST(:last4 AS VARCHAR), updated_at = :now
  WHERE id = :payment_id AND EXISTS (SELECT 1 FROM ev) RETURNING id
), cu AS (
  UPDATE checkouts SET status = :checkout_status, failure_code = CAST(:code AS VARCHAR), updated_at = :now
  WHERE id = :checkout_id AND :checkout_change AND EXISTS (SELECT 1 FROM ev) RETURNING id
), au AS (
  INSERT INTO {_AUDIT.name} ({", ".join(_AUDIT_COLUMNS)}) SELECT {casts(_AUDIT, _AUDIT_COLUMNS, "au_")}
  WHERE :audit AND EXISTS (SELECT 1 FROM ev) RETURNING id
)
SELECT (SELECT count(*) FROM lk), (SELECT id FROM ev),
  EXISTS (SELECT 1 FROM {events.name} WHERE provider = CAST(:ev_provider AS VARCHAR)
          AND event_id = CAST(:ev_event_id AS VARCHAR))"""
    json_binds = [bindparam(name, type_=JSON()) for name in ("ev_headers", "au_before", "au_after")]
    return text(sql).bindparams(*json_binds)


def write_payment_with_event(connection: Connection, provider: str, writes: PaymentWrites,
                             event: Mapping[str, Any]) -> bool | None:
    """On PostgreSQL, the stored event's INSERT (`event`: its columns) and `write_payment`'s writes
    in one statement, run in autocommit (`kernel.db.statement_connection`): True when done, None
    when the event was stored already (nothing written), False when the payment or its checkout
    no longer holds what the read saw (nothing written: the caller leaves it to the handler)."""
    statement, params = payment_with_event(connection.dialect, provider, writes, event)
    return payment_with_event_done(driver_rows(connection, statement, params)[0])


def payment_with_event(dialect: Dialect, provider: str, writes: PaymentWrites, event: Mapping[str, Any]
                       ) -> tuple[TextClause, dict[str, Any]]:
    """`write_payment_with_event`'s statement and parameters (for a connection of one's own: the
    event loop's, `payments.webhooks.store_and_write_on_loop`)."""
    now = clock.now()
    brand, last4 = writes.card
    seen_brand, seen_last4 = writes.seen_card
    checkout_seen = writes.checkout_seen or ("", None)
    checkout_new = writes.checkout_new or ("", None)
    customer_id, company_id, before, after = writes.audit or (None, None, None, None)
    action = f"payment.{writes.status}"  # as apply_payment_status names it
    params: dict[str, Any] = {
        "payment_id": writes.payment_id, "checkout_id": writes.checkout_id, "seen_status": writes.seen_status,
        "seen_reason": writes.seen_reason, "seen_brand": seen_brand, "seen_last4": seen_last4,
        "checkout_change": writes.checkout_new is not None, "seen_checkout_status": checkout_seen[0],
        "seen_code": checkout_seen[1], "status": writes.status, "reason": writes.reason, "brand": brand,
        "last4": last4, "now": now, "checkout_status": checkout_new[0], "code": checkout_new[1],
        "audit": writes.audit is not None,
        **{f"ev_{name}": event[name] for name in _EVENT_COLUMNS},
        **{f"au_{name}": value for name, value in zip(_AUDIT_COLUMNS, (
            "provider", provider, action, "payment", writes.payment_id, customer_id, company_id, before, after, now))},
    }
    return _with_event(dialect), params


def payment_with_event_done(row: tuple[Any, ...]) -> bool | None:
    """`write_payment_with_event`'s answer from its statement's row."""
    locked, stored, stored_before = row
    if not locked:
        return None if stored_before else False
    return None if stored is None else True


def apply_update(session: Session, update: PaymentUpdate, settings: Settings | None = None) -> Payment:
    """Apply what a provider's event says about a payment of ours (see `matched_checkout`)."""
    checkout, payment = _matched(session, update)
    return apply_payment_status(
        session, checkout=checkout, provider=update.provider, provider_ref=update.provider_ref, method=update.method,
        status=update.status, amount_minor=update.amount_minor, currency=update.currency, reason=update.reason,
        occurred_at=update.occurred_at, settings=settings, card=update.card, payment=payment,
    )


def apply_partial_refund(session: Session, update: PaymentUpdate, refunded_minor: int) -> Payment | None:
    """Part of a succeeded payment was refunded: `refunded_minor` is the total refunded so far.

    What was refunded since the last event is taken back: first from the payment's money not yet
    applied to any invoice, then from its allocations, latest first; an invoice it is taken from
    also loses the early-payment discount it was granted for paying in full. Each invoice keeps
    `total = open + Σ allocation.amount + Σ allocation.discount` and goes back to
    partially_paid or open. The payment keeps what is still received. None when the payment is
    not (or no longer) succeeded: a refund of a payment that never settled changes no balance."""
    checkout, payment = _matched(session, update)
    if payment is None or payment.checkout_id != checkout.id or payment.status != "succeeded":
        return None
    delta = refunded_minor - payment.refunded_minor
    if delta <= 0:
        return payment  # a duplicate, or an older event arriving late
    if delta >= payment.amount_minor:
        raise SettlementError("a refund of the whole payment is a refund, not a partial one")
    allocations = list(session.scalars(
        select(Allocation).where(Allocation.payment_id == payment.id).order_by(Allocation.id.desc())
    ))
    unapplied = payment.amount_minor - sum(allocation.amount_minor for allocation in allocations)
    to_take = delta - min(max(unapplied, 0), delta)
    reopened = []
    for allocation in allocations:
        if to_take <= 0:
            break
        invoice = session.scalar(select(Invoice).where(Invoice.id == allocation.invoice_id).with_for_update())
        assert invoice is not None
        taken = min(to_take, allocation.amount_minor)
        invoice.open_minor += taken + allocation.discount_minor
        allocation.discount_minor = 0
        allocation.amount_minor -= taken
        to_take -= taken
        invoice.status = settled_status(invoice)
        reopened.append(invoice.number)
        if allocation.amount_minor == 0:
            session.delete(allocation)
    payment.amount_minor -= delta
    payment.refunded_minor = refunded_minor
    session.flush()
    audit.record(
        session, actor_type="provider", actor=update.provider, action="payment.partially_refunded",
        entity_type="payment", entity_id=payment.id, customer_id=checkout.customer_id,
        before={"amount_minor": payment.amount_minor + delta},
        after={"amount_minor": payment.amount_minor, "refunded_minor": refunded_minor, "reopened": reopened},
    )
    return payment


def record_bank_transfer(
    session: Session,
    checkout: Checkout,
    amount_minor: int,
    received_on: date,
    *,
    bank_ref: str | None = None,
    settings: Settings | None = None,
) -> Payment:
    """A transfer found on the bank statement for `checkout` (staff matching calls this).

    `bank_ref` identifies the statement line, so recording the same line twice changes nothing;
    by default it is made of the checkout's reference, the day and the amount.
    """
    if checkout.method != PaymentMethod.bank_transfer:
        raise SettlementError("only a bank-transfer checkout is paid by a bank transfer")
    reference = checkout.reference or f"checkout-{checkout.id}"
    occurred = datetime.combine(received_on, datetime.min.time().replace(hour=12), tzinfo=ZoneInfo("UTC"))
    return apply_payment_status(
        session,
        checkout=checkout,
        provider="bank_transfer",
        provider_ref=bank_ref or f"{reference}/{received_on.isoformat()}/{amount_minor}",
        method=PaymentMethod.bank_transfer,
        status=PaymentStatus.succeeded,
        amount_minor=amount_minor,
        currency=checkout.currency,
        occurred_at=occurred,
        settings=settings,
    )


def reverse_payment(
    session: Session,
    payment: Payment,
    *,
    reason: str,
    actor_type: str,
    actor: str | None,
    notify: bool,
    settings: Settings | None = None,
) -> None:
    """A succeeded payment that did not happen after all — a bank match taken back by staff, or a
    transfer the bank returned: it becomes `failed` (the end of its state machine), its
    allocations go and the invoices reopen exactly, other payments' leftovers go to them as on a
    refund. `notify` emails the debtor as for a failed payment (only for a checkout's payment)."""
    if payment.status != "succeeded":
        raise SettlementError(f"payment {payment.id} is {payment.status}, not succeeded: nothing to reverse")
    session.flush()
    reopened = _reverse(session, payment)
    payment.status = "failed"
    payment.failure_reason = reason
    session.flush()
    _reapply_leftovers(session, payment.customer_id, reopened, payment)
    checkout = session.get(Checkout, payment.checkout_id) if payment.checkout_id else None
    if checkout is not None:
        _follow(session, checkout, payment)
    audit.record(
        session,
        actor_type=actor_type,
        actor=actor,
        action="payment.failed",
        entity_type="payment",
        entity_id=payment.id,
        customer_id=payment.customer_id,
        before={"status": "succeeded"},
        after={"status": "failed", "amount_minor": payment.amount_minor, "reason": reason},
    )
    if notify and checkout is not None:
        _queue_email(session, checkout, payment, "payment_failed", settings)
