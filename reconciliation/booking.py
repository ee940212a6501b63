"""A match onto the ledger and back: payments of provider `bank`, allocated the way provider
payments are (`payments.settlement`, `ledger.allocation`), undone exactly.

- A match of an RF reference to a checkout goes through `settlement.apply_payment_status`, as a
  card payment's webhook does: the checkout's invoices in line order with their locked
  discounts, the checkout succeeded, a receipt emailed, what is left over the customer's credit.
- Any other match creates one succeeded payment per customer it pays, allocated line by line;
  money on no invoice stays the customer's unapplied credit; open bank-transfer checkouts whose
  invoices are now all paid are completed.
- Undoing marks those payments failed (their allocations go, invoices reopen exactly) and puts
  back the checkouts it completed. The entry returns to the queue.

Everything runs in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.db import insert_rows
from kernel.settings import Settings
from ledger import audit
from ledger.allocation import Applied, NewAllocation, NewPayment, allocate, allocate_many
from ledger.models import (
    Allocation,
    AuditEvent,
    BankEntry,
    BankEntryState,
    BankMatch,
    BankMatchLine,
    BankMatchState,
    Checkout,
    CheckoutLine,
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    PayerAccount,
    Payment,
    PaymentMethod,
    PaymentStatus,
    User,
)
from ledger.money import Money
from payments import settlement
from reconciliation.matching import ProposedLine
from kernel.i18n import N_
from kernel.user_error import UserError

PROVIDER = "bank"


def _actor(user: User | None) -> tuple[str, str]:
    return ("user", user.email) if user is not None else ("system", "bank reconciliation")


def received_on(entry: BankEntry) -> date:
    return entry.value_date or entry.booking_date or clock.today("UTC")


def confirm(session: Session, match: BankMatch, user: User | None, settings: Settings | None = None) -> BankMatch:
    """Put a suggested match onto the ledger; UserError (nothing changed) when the
    invoices moved since it was proposed."""
    entry = session.get_one(BankEntry, match.entry_id)
    if match.state != BankMatchState.suggested.value:
        raise UserError(N_("This match is %(state)s already."), state=match.state)
    if entry.state not in (BankEntryState.unmatched.value, BankEntryState.suggested.value):
        raise UserError(N_("This bank entry is %(state)s already."), state=entry.state)
    actor_type, actor = _actor(user)
    try:
        with session.begin_nested():
            if match.checkout_id is not None:
                _confirm_checkout(session, entry, match, settings)
            else:
                _confirm_lines(session, entry, match, actor_type, actor)
    except (UserError, settlement.SettlementError) as error:
        raise UserError(N_("The invoices changed since this match was proposed: %(problem)s"),
                        problem=error if isinstance(error, UserError) else str(error)) from None
    match.state = BankMatchState.confirmed.value
    match.confirmed_at = clock.now()
    match.decided_by_user_id = user.id if user is not None else None
    entry.state = BankEntryState.matched.value
    entry.matched_by = "person" if user is not None else "rule"
    _learn_payer(session, entry, match)
    for other in session.scalars(select(BankMatch).where(BankMatch.entry_id == entry.id, BankMatch.id != match.id,
                                                         BankMatch.state == BankMatchState.suggested.value)):
        session.delete(other)  # rival suggestions of a decided entry
    session.flush()
    audit.record(session, actor_type=actor_type, actor=actor, action="bank_match.confirmed",
                 entity_type="bank_entry", entity_id=entry.id, customer_id=_first_customer(match),
                 company_id=entry.company_id,
                 after={"match": match.id, "evidence": match.evidence, "payment": match.payment_id,
                        "amount_minor": entry.amount_minor, "currency": entry.currency})
    return match


@dataclass(frozen=True)
class SuggestedMatch:
    """A match of lines (no checkout) proposed by a rule, not yet written, as plain values: what
    `confirm_many` applies and writes. `match_id` is reserved for it (`kernel.db.reserve_ids`)."""

    match_id: int
    entry_id: int
    company_id: int
    account_id: int
    identity_key: str
    amount_minor: int
    currency: str
    received_on: date
    payer_iban: str | None
    evidence: str
    details: dict[str, Any]
    lines: tuple[ProposedLine, ...]
    reason: str
    score: int
    created_at: datetime
    method: str = "bank_transfer"


def confirm_many(session: Session, matches: Sequence[SuggestedMatch]) -> list[UserError | None]:
    """`confirm` for many matches of lines at once, decided by a rule (no person), in a few
    statements: the same payments, allocations, completed checkouts, learned payers and audit rows
    as confirming them one after the other. The matches are not written yet: each is written here
    with its lines in its final state, confirmed, or left a suggestion for staff when the ledger
    refuses it. Their entries the caller writes as matched by a rule beforehand, and turns back
    into suggestions for the refused ones (inserting rows in their final state, rather than
    updating rows this transaction inserted: bench/RESULTS.md). Per match, None when applied, or
    why not (the invoices moved since it was proposed)."""
    confirmation = apply_many(session, matches)
    write_confirmed(session, confirmation)
    return confirmation.results


@dataclass(frozen=True)
class Confirmation:
    """What `apply_many` put on the ledger, for `write_confirmed` to record: per match None
    (applied) or why not, the payments of those applied, the payer IBANs already known."""

    matches: Sequence[SuggestedMatch]
    results: list[UserError | None]
    applied: dict[int, Applied]  # by match id
    known_payers: dict[tuple[int, str, int], int]


def apply_many(session: Session, matches: Sequence[SuggestedMatch]) -> Confirmation:
    """The first half of `confirm_many`: the payments, allocations, invoices and completed
    checkouts. Every read is done before its first write, so the writes can be left to
    `kernel.db.background_writes`. The matches' entries need not be written yet; they must be
    before `write_confirmed` writes the matches."""
    known_payers = _known_payers(session, matches)
    groups: list[list[NewPayment]] = []
    for match in matches:
        customers = list(dict.fromkeys(line.customer_id for line in match.lines))
        groups.append([
            NewPayment(customer_id=customer_id, company_id=match.company_id, provider=PROVIDER,
                       provider_ref=_ref_of(match.account_id, match.identity_key, match.match_id,
                                            customer_id if len(customers) > 1 else None),
                       method=match.method, currency=match.currency, received_on=match.received_on,
                       amount_minor=sum(line.amount_minor for line in match.lines if line.customer_id == customer_id),
                       allocations=tuple(NewAllocation(line.invoice_id, line.amount_minor, line.discount_minor)
                                         for line in match.lines
                                         if line.customer_id == customer_id and line.invoice_id is not None),
                       audit_after={"bank_entry": match.entry_id})
            for customer_id in customers])
    results: list[UserError | None] = []
    wanted: list[tuple[int, SuggestedMatch]] = []
    for index, match in enumerate(matches):
        brought = sum(line.amount_minor for line in match.lines)
        if brought != match.amount_minor:
            results.append(UserError(
                N_("The invoices changed since this match was proposed: %(problem)s"),
                problem=UserError(N_("the lines add up to %(total)s, the entry brought %(amount)s"),
                                  total=Money(brought, match.currency), amount=Money(match.amount_minor,
                                                                                      match.currency))))
        else:
            results.append(None)
            wanted.append((index, match))
    outcomes = allocate_many(session, [groups[index] for index, _match in wanted], actor_type="system",
                             actor="bank reconciliation")
    applied: dict[int, Applied] = {}
    for (index, match), outcome in zip(wanted, outcomes):
        if isinstance(outcome, Applied):
            applied[match.match_id] = outcome
        else:
            results[index] = UserError(N_("The invoices changed since this match was proposed: %(problem)s"),
                                       problem=outcome.reason)
    return Confirmation(matches, results, applied, known_payers)


def write_confirmed(session: Session, confirmation: Confirmation) -> None:
    """The second half of `confirm_many`: each match with its lines, confirmed or a suggestion, the
    payers learned and the `bank_match.confirmed` audit rows."""
    applied = confirmation.applied
    _write_matches(session, [(match, applied.get(match.match_id)) for match in confirmation.matches])
    confirmed = [(match, applied[match.match_id]) for match in confirmation.matches if match.match_id in applied]
    if confirmed:
        _record_confirmed(session, confirmed, confirmation.known_payers)


def _write_matches(session: Session, matches: list[tuple[SuggestedMatch, Applied | None]]) -> None:
    """The matches and their lines as they end: confirmed with their payments, or suggested."""
    if not matches:
        return
    now = clock.now()
    insert_rows(session, BankMatch.__table__, [
        dict(id=match.match_id, entry_id=match.entry_id, company_id=match.company_id,
             state=BankMatchState.suggested.value if applied is None else BankMatchState.confirmed.value,
             evidence=match.evidence, reason=match.reason, score=match.score, method=match.method,
             checkout_id=None, payment_id=None if applied is None else applied.payment_ids[0],
             confirmed_at=None if applied is None else now,
             details=match.details if applied is None else {
                 **match.details, "completed_checkouts": list(applied.completed_checkouts)},
             created_at=match.created_at)
        for match, applied in matches])
    lines = []
    for match, applied in matches:
        paid_by = {} if applied is None else dict(zip(dict.fromkeys(line.customer_id for line in match.lines),
                                                      applied.payment_ids))
        lines.extend(dict(match_id=match.match_id, customer_id=line.customer_id, invoice_id=line.invoice_id,
                          currency=match.currency, amount_minor=line.amount_minor,
                          discount_minor=line.discount_minor, write_off_minor=0,
                          payment_id=paid_by.get(line.customer_id))
                     for line in match.lines)
    insert_rows(session, BankMatchLine.__table__, lines)


def _record_confirmed(session: Session, confirmed: list[tuple[SuggestedMatch, Applied]],
                      known: dict[tuple[int, str, int], int]) -> None:
    now = clock.now()
    _learn_payers(session, [match for match, _applied in confirmed], known, now)
    insert_rows(session, AuditEvent.__table__, [
        dict(actor_type="system", actor="bank reconciliation", action="bank_match.confirmed",
             entity_type="bank_entry", entity_id=match.entry_id,
             customer_id=next((line.customer_id for line in match.lines), None), company_id=match.company_id,
             before=None, after={"match": match.match_id, "evidence": match.evidence,
                                 "payment": applied.payment_ids[0], "amount_minor": match.amount_minor,
                                 "currency": match.currency}, created_at=now)
        for match, applied in confirmed])


def _paid_by(matches: Sequence[SuggestedMatch]) -> dict[tuple[int, str, int], int]:
    """(company, payer IBAN, customer): how many of the matches it paid."""
    seen: dict[tuple[int, str, int], int] = {}
    for match in matches:
        if match.payer_iban:
            for customer_id in dict.fromkeys(line.customer_id for line in match.lines):
                key = (match.company_id, match.payer_iban, customer_id)
                seen[key] = seen.get(key, 0) + 1
    return seen


def _known_payers(session: Session, matches: Sequence[SuggestedMatch]) -> dict[tuple[int, str, int], int]:
    """The payer accounts already learned for the matches' payers: their ids, by key."""
    seen = _paid_by(matches)
    known: dict[tuple[int, str, int], int] = {}
    ibans = sorted({iban for _company, iban, _customer in seen})
    companies = sorted({company_id for company_id, _iban, _customer in seen})
    for start in range(0, len(ibans), 500):
        for row in session.execute(select(PayerAccount.id, PayerAccount.company_id, PayerAccount.iban,
                                          PayerAccount.customer_id)
                                   .where(PayerAccount.company_id.in_(companies),
                                          PayerAccount.iban.in_(ibans[start:start + 500]))):
            known[(row.company_id, row.iban, row.customer_id)] = row.id
    return known


def _learn_payers(session: Session, matches: list[SuggestedMatch], known: dict[tuple[int, str, int], int],
                  now: datetime) -> None:
    """Each (payer IBAN, customer) paid once more: counted where `known`, else remembered."""
    seen = _paid_by(matches)
    if not seen:
        return
    table = PayerAccount.__table__
    counted = [dict(b_id=known[key], b_more=times, b_now=now) for key, times in seen.items() if key in known]
    if counted:
        session.execute(update(table).where(table.c.id == bindparam("b_id"))
                        .values(times_seen=table.c.times_seen + bindparam("b_more"), last_seen_at=bindparam("b_now")),
                        counted)
    new = [dict(company_id=company_id, iban=iban, customer_id=customer_id, times_seen=times, last_seen_at=now)
           for (company_id, iban, customer_id), times in seen.items() if (company_id, iban, customer_id) not in known]
    if new:
        insert_rows(session, PayerAccount.__table__, new)


def _confirm_checkout(session: Session, entry: BankEntry, match: BankMatch, settings: Settings | None) -> None:
    checkout = session.get_one(Checkout, match.checkout_id)
    match.details = {**match.details, "checkout_status_before": checkout.status}
    occurred = datetime.combine(received_on(entry), time(12), tzinfo=timezone.utc)
    payment = settlement.apply_payment_status(
        session, checkout=checkout, provider=PROVIDER, provider_ref=_provider_ref(entry, match, None),
        method=PaymentMethod.bank_transfer, status=PaymentStatus.succeeded, amount_minor=entry.amount_minor, currency=entry.currency,
        occurred_at=occurred, settings=settings)
    match.payment_id = payment.id
    # The lines say what the settlement did: what each invoice received, the rest as credit.
    for line in list(match.lines):
        session.delete(line)
    session.flush()
    applied = 0
    for allocation in session.scalars(select(Allocation).where(Allocation.payment_id == payment.id)
                                      .order_by(Allocation.id)):
        session.add(BankMatchLine(match_id=match.id, customer_id=payment.customer_id,
                                  invoice_id=allocation.invoice_id, currency=allocation.currency,
                                  amount_minor=allocation.amount_minor, discount_minor=allocation.discount_minor,
                                  payment_id=payment.id))
        applied += allocation.amount_minor
    if entry.amount_minor > applied:
        session.add(BankMatchLine(match_id=match.id, customer_id=payment.customer_id, invoice_id=None,
                                  currency=entry.currency, amount_minor=entry.amount_minor - applied,
                                  payment_id=payment.id))
    session.flush()
    session.expire(match, ["lines"])


def _confirm_lines(session: Session, entry: BankEntry, match: BankMatch, actor_type: str, actor: str) -> None:
    lines = list(match.lines)
    if sum(line.amount_minor for line in lines) != entry.amount_minor:
        raise UserError(N_("the lines add up to %(total)s, the entry brought %(amount)s"),
                        total=Money(sum(line.amount_minor for line in lines), entry.currency), amount=entry.amount)
    invoice_ids = sorted({line.invoice_id for line in lines if line.invoice_id is not None})
    # Locked in id order, as the settlement does, so two matches of one invoice queue up.
    invoices = {invoice.id: invoice for invoice in session.scalars(
        select(Invoice).where(Invoice.id.in_(invoice_ids)).order_by(Invoice.id).with_for_update())}
    customers = list(dict.fromkeys(line.customer_id for line in lines))
    payments: dict[int, Payment] = {}
    for customer_id in customers:
        customer = session.get_one(Customer, customer_id)
        if customer.company_id != entry.company_id:
            raise UserError(N_("a bank entry pays customers of its own company only"))
        amount = sum(line.amount_minor for line in lines if line.customer_id == customer_id)
        payment = Payment(customer_id=customer_id, provider=PROVIDER,
                          provider_ref=_provider_ref(entry, match, customer_id if len(customers) > 1 else None),
                          method=match.method, amount_minor=amount, currency=entry.currency,
                          status="succeeded", received_on=received_on(entry))
        session.add(payment)
        payments[customer_id] = payment
    session.flush()
    for line in lines:
        payment = payments[line.customer_id]
        line.payment_id = payment.id
        if line.invoice_id is None:
            continue
        invoice = invoices[line.invoice_id]
        if invoice.customer_id != line.customer_id or invoice.company_id != entry.company_id:
            raise UserError(N_("%(number)s is not an invoice of this customer"), number=invoice.number)
        allocate(session, invoice, Money(line.amount_minor, invoice.currency),
                 Money(line.discount_minor + line.write_off_minor, invoice.currency), payment=payment)
    match.payment_id = payments[customers[0]].id
    completed = _complete_checkouts(session, invoice_ids)
    match.details = {**match.details, "completed_checkouts": completed}
    for customer_id, payment in payments.items():
        audit.record(session, actor_type=actor_type, actor=actor, action="payment.succeeded",
                     entity_type="payment", entity_id=payment.id, customer_id=customer_id,
                     before={"status": None},
                     after={"status": "succeeded", "amount_minor": payment.amount_minor, "method": payment.method,
                            "bank_entry": entry.id})
    session.flush()


def _complete_checkouts(session: Session, invoice_ids: list[int]) -> list[int]:
    """Open bank-transfer checkouts of these invoices whose invoices are now all paid: done."""
    if not invoice_ids:
        return []
    candidates = session.scalars(
        select(Checkout).join(CheckoutLine, CheckoutLine.checkout_id == Checkout.id)
        .where(CheckoutLine.invoice_id.in_(invoice_ids), Checkout.method == PaymentMethod.bank_transfer,
               Checkout.status == "open").distinct().order_by(Checkout.id)).all()
    completed = []
    for checkout in candidates:
        if all(line.invoice.open_minor == 0 for line in checkout.lines):
            checkout.status = "succeeded"
            completed.append(checkout.id)
    return completed


def _provider_ref(entry: BankEntry, match: BankMatch, customer_id: int | None) -> str:
    return _ref_of(entry.account_id, entry.identity_key, match.id, customer_id)


def _ref_of(account_id: int, identity_key: str, match_id: int, customer_id: int | None) -> str:
    suffix = f"#M{match_id}" + (f"C{customer_id}" if customer_id is not None else "")
    return f"{account_id}:{identity_key}{suffix}"


def _learn_payer(session: Session, entry: BankEntry, match: BankMatch) -> None:
    if not entry.payer_iban:
        return
    for customer_id in dict.fromkeys(line.customer_id for line in match.lines):
        known = session.scalar(select(PayerAccount).where(PayerAccount.company_id == entry.company_id,
                                                          PayerAccount.iban == entry.payer_iban,
                                                          PayerAccount.customer_id == customer_id))
        if known is None:
            session.add(PayerAccount(company_id=entry.company_id, iban=entry.payer_iban, customer_id=customer_id))
        else:
            known.times_seen += 1
            known.last_seen_at = clock.now()


def _first_customer(match: BankMatch) -> int | None:
    return next((line.customer_id for line in match.lines), None)


def match_payments(session: Session, match: BankMatch) -> list[Payment]:
    ids = {line.payment_id for line in match.lines if line.payment_id is not None}
    if match.payment_id is not None:
        ids.add(match.payment_id)
    return list(session.scalars(select(Payment).where(Payment.id.in_(ids)).order_by(Payment.id)))


def undo(session: Session, match: BankMatch, user: User | None, *, reason: str, returned: bool = False,
         settings: Settings | None = None) -> BankMatch:
    """Take a confirmed match back: its payments fail, the invoices reopen exactly, checkouts it
    completed are open again, and the entry waits in the queue (or, `returned` by the bank, stays
    matched to nothing). The record stays, `undone`."""
    if match.state != BankMatchState.confirmed.value:
        raise UserError(N_("Only a confirmed match can be undone; this one is %(state)s."),
                                  state=match.state)
    entry = session.get_one(BankEntry, match.entry_id)
    actor_type, actor = _actor(user)
    for payment in match_payments(session, match):
        if payment.status == "succeeded":
            settlement.reverse_payment(session, payment, reason=reason, actor_type=actor_type, actor=actor,
                                       notify=returned, settings=settings)
    before = match.details.get("checkout_status_before")
    if match.checkout_id is not None and before is not None and not returned:
        session.get_one(Checkout, match.checkout_id).status = before
    for checkout_id in match.details.get("completed_checkouts", []):
        checkout = session.get(Checkout, checkout_id)
        if checkout is not None and checkout.status == "succeeded":
            checkout.status = "open"
    _forget_payer(session, entry, match)
    match.state = BankMatchState.undone.value
    match.undone_at = clock.now()
    match.undone_by_user_id = user.id if user is not None else None
    match.undo_reason = reason
    if not returned:
        entry.state = BankEntryState.unmatched.value
    entry.matched_by = None  # a returned credit stays matched, to no one's decision
    session.flush()
    audit.record(session, actor_type=actor_type, actor=actor, action="bank_match.undone",
                 entity_type="bank_entry", entity_id=entry.id, customer_id=_first_customer(match),
                 company_id=entry.company_id, before={"match": match.id, "state": "confirmed"},
                 after={"state": "undone", "reason": reason})
    return match


def _forget_payer(session: Session, entry: BankEntry, match: BankMatch) -> None:
    if not entry.payer_iban:
        return
    for customer_id in dict.fromkeys(line.customer_id for line in match.lines):
        known = session.scalar(select(PayerAccount).where(PayerAccount.company_id == entry.company_id,
                                                          PayerAccount.iban == entry.payer_iban,
                                                          PayerAccount.customer_id == customer_id))
        if known is not None:
            if known.times_seen <= 1:
                session.delete(known)
            else:
                known.times_seen -= 1


def new_match(session: Session, entry: BankEntry, *, evidence: str, reason: str, score: int,
              lines: list[tuple[int, int | None, int, int, int]], checkout_id: int | None = None,
              method: str = "bank_transfer", details: dict[str, Any] | None = None) -> BankMatch:
    """A suggested match of `entry`; lines are (customer, invoice or None, amount, discount, write-off)."""
    match = BankMatch(entry_id=entry.id, company_id=entry.company_id, state=BankMatchState.suggested.value,
                      evidence=evidence, reason=reason, score=score, method=method, checkout_id=checkout_id,
                      details=details or {})
    match.lines = [BankMatchLine(customer_id=customer_id, invoice_id=invoice_id, currency=entry.currency,
                                 amount_minor=amount, discount_minor=discount, write_off_minor=write_off)
                   for customer_id, invoice_id, amount, discount, write_off in lines]
    session.add(match)
    session.flush()
    return match


def open_invoice_kinds() -> tuple[str, ...]:
    return (InvoiceKind.invoice.value,)


def is_payable(invoice: Invoice) -> bool:
    return (invoice.kind == InvoiceKind.invoice.value and invoice.status != InvoiceStatus.void.value
            and invoice.open_minor > 0)
