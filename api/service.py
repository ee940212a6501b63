"""What the API does, on a Session: reads shaped as the schemas, writes through the ledger's own
services (the CSV import's validation and upsert, the open-items snapshot). No Starlette here."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Protocol, Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from kernel.clock import clock
from kernel.i18n import N_
from kernel.user_error import UserError, UserErrors
from ledger import audit
from ledger.events import EVENT_TYPES
from ledger.csv_import import ImportReport, import_records
from ledger.storage import FileStorage
from ledger.models import (
    Allocation,
    ApiKey,
    AuditEvent,
    Company,
    Customer,
    Invoice,
    InvoiceStatus,
    Payment,
)
from ledger.money import AmountError, CurrencyError, Money, check_currency
from ledger.open_items import OpenItem, SnapshotReport, apply_snapshot, lower_open_amount
from kernel.settings import Settings
from reconciliation.imports import import_statement_file
from payments.manual import KeyActor, record_manual_payment, reverse_manual_payment
from api import schemas

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DEFAULT_LIMIT = 100
MAX_LIMIT = 500



class ApiError(Exception):
    """A request the API refuses: HTTP status, title, detail and the fields at fault."""

    def __init__(self, status: int, title: str, detail: str, errors: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        super().__init__(detail)


def not_found(what: str) -> ApiError:
    return ApiError(404, "Not Found", f"no {what}")


def amount(minor: int, currency: str) -> str:
    return str(Money(minor, currency).to_decimal())


# --- cursors: opaque to the ERP, the last row's sort key to us ------------------------


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != arity:
        raise ApiError(422, "Invalid cursor", "cursor is not one this API gave", [("cursor", "not a cursor")])
    return values


# --- customers -------------------------------------------------------------------------


def customer_out(customer: Customer) -> schemas.CustomerOut:
    return schemas.CustomerOut(
        ref=customer.ref, name=customer.name, language=customer.language, segment=customer.segment,
        contacts=[schemas.ContactOut(email=c.email, name=c.name, phone=c.phone, language=c.language,
                                     is_primary=c.is_primary) for c in customer.contacts],
        created_at=customer.created_at)


def list_customers(session: Session, key: ApiKey, cursor: str | None, limit: int) -> schemas.CustomerPage:
    after = decode_cursor(cursor, 1)
    query = (select(Customer).where(Customer.company_id == key.company_id).options(selectinload(Customer.contacts))
             .order_by(Customer.id).limit(limit + 1))
    if after is not None:
        query = query.where(Customer.id > int(after[0]))
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.CustomerPage(items=[customer_out(c) for c in rows],
                                next_cursor=encode_cursor(rows[-1].id) if more else None)


def get_customer(session: Session, key: ApiKey, ref: str) -> schemas.CustomerOut:
    customer = session.scalar(select(Customer).where(Customer.company_id == key.company_id, Customer.ref == ref)
                              .options(selectinload(Customer.contacts)))
    if customer is None:
        raise not_found(f"customer {ref}")
    return customer_out(customer)


def _import(session: Session, key: ApiKey, kind: str, records: list[dict[str, str]],
            prefix: str) -> ImportReport:
    """The CSV import's own validation and upsert; its bad lines become field errors."""
    try:
        return import_records(session, kind, records, company_code=key.company.code,  # type: ignore[arg-type]
                              actor_type="api", actor=key.name)
    except UserErrors as failed:
        errors = []
        for reason in failed:
            column = reason.values.get("column")
            errors.append((prefix.format(index=reason.line) + (str(column) if column else ""), reason.render("en")))
        refused = len({reason.line for reason in failed})
        raise ApiError(422, "Invalid items", f"{refused} item(s) refused; nothing was written", errors) from None


def _customer_record(company: Company, ref: str, item: schemas.CustomerIn) -> dict[str, str]:
    return {"company": company.code, "customer_ref": ref, "name": item.name, "email": item.email,
            "language": item.language or "", "phone": item.phone or "", "segment": item.segment or ""}


def put_customer(session: Session, key: ApiKey, ref: str, item: schemas.CustomerIn) -> tuple[bool, schemas.CustomerOut]:
    report = _import(session, key, "customers", [_customer_record(key.company, ref, item)], "")
    return report.created > 0, get_customer(session, key, ref)


def bulk_customers(session: Session, key: ApiKey, body: schemas.CustomersBulkIn) -> schemas.BulkReport:
    records = [_customer_record(key.company, item.ref, item) for item in body.items]
    report = _import(session, key, "customers", records, "items[{index}].")
    return schemas.BulkReport(created=report.created, updated=report.updated, unchanged=report.unchanged)


# --- invoices --------------------------------------------------------------------------


class InvoiceFields(Protocol):
    """What `invoice_out` reads: an `Invoice`, or a row of `INVOICE_COLUMNS`."""

    @property
    def number(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def issue_date(self) -> date: ...
    @property
    def due_date(self) -> date: ...
    @property
    def currency(self) -> str: ...
    @property
    def total_minor(self) -> int: ...
    @property
    def open_minor(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def discount_bps(self) -> int | None: ...
    @property
    def discount_until(self) -> date | None: ...
    @property
    def settled_outside_minor(self) -> int: ...
    @property
    def settled_outside_on(self) -> date | None: ...
    @property
    def pdf_key(self) -> str | None: ...
    @property
    def updated_at(self) -> datetime: ...


# A page of invoices is read as plain rows of these, not as ORM objects: hundreds of objects per
# request, kept until the session closes, set off full garbage collections (bench/RESULTS.md).
INVOICE_COLUMNS = (Invoice.id, Invoice.number, Invoice.kind, Invoice.issue_date, Invoice.due_date, Invoice.currency,
                   Invoice.total_minor, Invoice.open_minor, Invoice.status, Invoice.discount_bps,
                   Invoice.discount_until, Invoice.settled_outside_minor, Invoice.settled_outside_on,
                   Invoice.pdf_key, Invoice.updated_at)


def invoice_out(invoice: InvoiceFields, customer_ref: str) -> schemas.InvoiceOut:
    return schemas.InvoiceOut(
        number=invoice.number, type=invoice.kind, customer_ref=customer_ref, issue_date=invoice.issue_date,
        due_date=invoice.due_date, currency=invoice.currency, amount=amount(invoice.total_minor, invoice.currency),
        open_amount=amount(invoice.open_minor, invoice.currency), status=invoice.status,  # type: ignore[arg-type]
        discount_percent=str((Decimal(invoice.discount_bps) / 100).normalize()) if invoice.discount_bps else None,
        discount_until=invoice.discount_until,
        settled_outside_amount=amount(invoice.settled_outside_minor, invoice.currency),
        settled_outside_on=invoice.settled_outside_on, has_pdf=invoice.pdf_key is not None,
        updated_at=invoice.updated_at)


@dataclass(frozen=True)
class InvoiceFilters:
    status: str | None = None
    customer_ref: str | None = None
    due_from: date | None = None
    due_to: date | None = None
    updated_since: datetime | None = None


def list_invoices(session: Session, key: ApiKey, filters: InvoiceFilters, cursor: str | None,
                  limit: int) -> schemas.InvoicePage:
    after = decode_cursor(cursor, 1)
    query = (select(*INVOICE_COLUMNS, Customer.ref).join(Customer, Customer.id == Invoice.customer_id)
             .where(Invoice.company_id == key.company_id).order_by(Invoice.id).limit(limit + 1))
    if filters.status:
        query = query.where(Invoice.status == filters.status)
    if filters.customer_ref:  # with the company, so the unique (company, ref) index finds the customer
        query = query.where(Customer.company_id == key.company_id, Customer.ref == filters.customer_ref)
    if filters.due_from:
        query = query.where(Invoice.due_date >= filters.due_from)
    if filters.due_to:
        query = query.where(Invoice.due_date <= filters.due_to)
    if filters.updated_since:
        query = query.where(Invoice.updated_at >= filters.updated_since)
    if after is not None:
        query = query.where(Invoice.id > int(after[0]))
    rows = session.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.InvoicePage(items=[invoice_out(row, row.ref) for row in rows],
                               next_cursor=encode_cursor(rows[-1].id) if more else None)


def _find_invoice(session: Session, key: ApiKey, number: str) -> tuple[Invoice, str]:
    row = session.execute(select(Invoice, Customer.ref).join(Customer, Customer.id == Invoice.customer_id)
                          .where(Invoice.company_id == key.company_id, Invoice.number == number)).first()
    if row is None:
        raise not_found(f"invoice {number}")
    return row[0], row[1]


def get_invoice(session: Session, key: ApiKey, number: str) -> schemas.InvoiceOut:
    return invoice_out(*_find_invoice(session, key, number))


def _invoice_record(company: Company, number: str, item: schemas.InvoiceIn) -> dict[str, str]:
    return {"company": company.code, "customer_ref": item.customer_ref, "number": number, "type": item.type,
            "issue_date": item.issue_date.isoformat(), "due_date": item.due_date.isoformat(),
            "currency": item.currency, "amount": item.amount, "discount_percent": item.discount_percent or "",
            "discount_until": item.discount_until.isoformat() if item.discount_until else ""}


def _apply_open_amounts(session: Session, key: ApiKey, items: list[tuple[str, schemas.InvoiceIn]],
                        prefix: str) -> None:
    """The ERP's open amounts, as a snapshot would take them: lower only; higher is refused."""
    errors: list[UserError] = []
    today = clock.today(key.company.timezone)
    # The batch's invoices in one query (autoflush writes the import first), not one query per item.
    wanted = [number for number, item in items if item.open_amount is not None]
    invoices = {invoice.number: invoice for invoice in session.scalars(
        select(Invoice).where(Invoice.company_id == key.company_id, Invoice.number.in_(wanted)))} if wanted else {}
    for index, (number, item) in enumerate(items):
        if item.open_amount is None:
            continue
        invoice = invoices[number]
        field = prefix.format(index=index) + "open_amount"
        try:
            wanted = Money.parse(item.open_amount, invoice.currency).minor
        except AmountError as error:
            errors.append(error.at(field=field))
            continue
        if wanted > invoice.open_minor:
            errors.append(UserError(N_("%(value)s is more than the %(open)s open in Encours; an open amount only "
                                       "goes down"), value=item.open_amount,
                                    open=amount(invoice.open_minor, invoice.currency)).at(field=field))
            continue
        lower_open_amount(session, invoice, wanted, today, actor_type="api", actor=key.name)
    if errors:
        raise UserErrors(errors)


def put_invoice(session: Session, key: ApiKey, number: str, item: schemas.InvoiceIn) -> tuple[bool, schemas.InvoiceOut]:
    report = _import(session, key, "invoices", [_invoice_record(key.company, number, item)], "")
    _apply_open_amounts(session, key, [(number, item)], "")
    session.flush()
    return report.created > 0, get_invoice(session, key, number)


def bulk_invoices(session: Session, key: ApiKey, body: schemas.InvoicesBulkIn) -> schemas.BulkReport:
    records = [_invoice_record(key.company, item.number, item) for item in body.items]
    report = _import(session, key, "invoices", records, "items[{index}].")
    if any(item.open_amount is not None for item in body.items):
        _apply_open_amounts(session, key, [(item.number, item) for item in body.items], "items[{index}].")
    return schemas.BulkReport(created=report.created, updated=report.updated, unchanged=report.unchanged)


def void_invoice(session: Session, key: ApiKey, number: str) -> schemas.InvoiceOut:
    invoice, ref = _find_invoice(session, key, number)
    if invoice.status != InvoiceStatus.void.value:
        if invoice.open_minor != invoice.total_minor:
            raise ApiError(409, "Conflict", f"{number} is already partly settled; credit or refund it instead")
        before = {"status": invoice.status}
        invoice.status = InvoiceStatus.void.value
        audit.record(session, actor_type="api", actor=key.name, action="invoice.voided", entity_type="invoice",
                     entity_id=invoice.id, customer_id=invoice.customer_id, company_id=invoice.company_id,
                     before=before, after={"status": invoice.status})
        session.flush()
    return invoice_out(invoice, ref)


# --- the original invoice PDF -----------------------------------------------------------


def _pdf_out(invoice: Invoice) -> schemas.InvoicePdfOut:
    assert invoice.pdf_size is not None and invoice.pdf_sha256 is not None and invoice.pdf_uploaded_at is not None
    return schemas.InvoicePdfOut(number=invoice.number, size=invoice.pdf_size, sha256=invoice.pdf_sha256,
                                 uploaded_at=invoice.pdf_uploaded_at)


def put_invoice_pdf(session: Session, key: ApiKey, number: str, storage: FileStorage, content: bytes,
                    removed: list[str], saved: list[str]) -> tuple[bool, schemas.InvoicePdfOut]:
    """Stores the ERP's PDF of the invoice (created: True when it had none). The same bytes again
    change nothing; other bytes replace it. Keys of objects no longer referenced are appended to
    `removed`: the caller deletes them once the transaction committed (never a row pointing nowhere);
    the key of the object stored is appended to `saved`: the caller deletes it unless the transaction
    committed (never a file nothing points to, when a concurrent request wins)."""
    invoice, _ = _find_invoice(session, key, number)
    if not content.startswith(b"%PDF-"):
        raise ApiError(422, "Invalid body", "the body is not a PDF", [("body", "a PDF starts with %PDF-")])
    sha256 = hashlib.sha256(content).hexdigest()
    if invoice.pdf_key is not None and invoice.pdf_sha256 == sha256 and invoice.pdf_size == len(content):
        return False, _pdf_out(invoice)
    created = invoice.pdf_key is None
    before = None if created else {"pdf_sha256": invoice.pdf_sha256, "pdf_size": invoice.pdf_size}
    if invoice.pdf_key is not None:
        removed.append(invoice.pdf_key)
    stored = storage.save(content)
    saved.append(stored.key)
    invoice.pdf_key, invoice.pdf_size, invoice.pdf_sha256 = stored.key, stored.size, stored.sha256
    invoice.pdf_uploaded_at = clock.now()
    audit.record(session, actor_type="api", actor=key.name, action="invoice.pdf_attached", entity_type="invoice",
                 entity_id=invoice.id, customer_id=invoice.customer_id, company_id=invoice.company_id,
                 before=before, after={"pdf_sha256": stored.sha256, "pdf_size": stored.size})
    session.flush()
    return created, _pdf_out(invoice)


def invoice_pdf_key(session: Session, key: ApiKey, number: str) -> tuple[str, str]:
    """(storage key, invoice number) of the invoice's original PDF; 404 when it has none."""
    invoice, _ = _find_invoice(session, key, number)
    if invoice.pdf_key is None:
        raise not_found(f"an original PDF of invoice {number}")
    return invoice.pdf_key, invoice.number


def delete_invoice_pdf(session: Session, key: ApiKey, number: str, removed: list[str]) -> schemas.InvoiceOut:
    """Forgets the original PDF (the portal serves its summary PDF again); nothing to forget is not an error."""
    invoice, ref = _find_invoice(session, key, number)
    if invoice.pdf_key is not None:
        removed.append(invoice.pdf_key)
        audit.record(session, actor_type="api", actor=key.name, action="invoice.pdf_removed", entity_type="invoice",
                     entity_id=invoice.id, customer_id=invoice.customer_id, company_id=invoice.company_id,
                     before={"pdf_sha256": invoice.pdf_sha256, "pdf_size": invoice.pdf_size}, after=None)
        invoice.pdf_key = invoice.pdf_size = invoice.pdf_sha256 = invoice.pdf_uploaded_at = None
        session.flush()
    return invoice_out(invoice, ref)


# --- payments --------------------------------------------------------------------------


def list_payments(session: Session, key: ApiKey, since: datetime | None, cursor: str | None,
                  limit: int) -> schemas.PaymentPage:
    """Payments of the company's customers in the order they last changed, so polling with the
    cursor sees a payment again when its status moves (e.g. succeeded, then refunded)."""
    after = decode_cursor(cursor, 2)
    query = (select(Payment, Customer.ref).join(Customer, Customer.id == Payment.customer_id)
             .where(Customer.company_id == key.company_id).order_by(Payment.updated_at, Payment.id).limit(limit + 1))
    # Always a lower bound: with it SQLite walks ix_payments_updated in order and stops at the page;
    # without it, it read every payment of the company's customers and sorted them.
    query = query.where(Payment.updated_at >= (since if since is not None else EPOCH))
    if after is not None:
        stamp = datetime.fromisoformat(after[0])
        query = query.where(or_(Payment.updated_at > stamp, and_(Payment.updated_at == stamp, Payment.id > after[1])))
    rows = session.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = _payments_out(session, rows)
    last = rows[-1][0] if rows else None
    return schemas.PaymentPage(items=items, next_cursor=encode_cursor(last.updated_at.isoformat(), last.id)
                               if more and last is not None else None)


def _payments_out(session: Session, rows: Sequence[tuple[Payment, str]]) -> list[schemas.PaymentOut]:
    ids = [payment.id for payment, _ in rows]
    allocations: dict[int, list[schemas.AllocationOut]] = {}
    if ids:
        for allocation, number in session.execute(
                select(Allocation, Invoice.number).join(Invoice, Invoice.id == Allocation.invoice_id)
                .where(Allocation.payment_id.in_(ids)).order_by(Allocation.id)):
            allocations.setdefault(allocation.payment_id, []).append(schemas.AllocationOut(
                invoice_number=number, amount=amount(allocation.amount_minor, allocation.currency),
                discount=amount(allocation.discount_minor, allocation.currency)))
    return [schemas.PaymentOut(
        id=p.id, customer_ref=ref, provider=p.provider, provider_ref=p.provider_ref, method=p.method, status=p.status,
        amount=amount(p.amount_minor, p.currency), currency=p.currency, received_on=p.received_on,
        allocations=allocations.get(p.id, []), created_at=p.created_at, updated_at=p.updated_at) for p, ref in rows]


def payment_out(session: Session, payment: Payment, customer_ref: str) -> schemas.PaymentOut:
    """One payment as `GET /payments` lists it."""
    session.flush()
    session.refresh(payment)  # created_at/updated_at as the database stamped them
    return _payments_out(session, [(payment, customer_ref)])[0]


def _body_field(service_field: str) -> str:
    """The request body's name for a field the manual-payment service names (its arguments')."""
    if service_field == "customer":
        return "customer_ref"
    if service_field.startswith("allocations[") and service_field.endswith("].invoice"):
        return service_field + "_number"
    return service_field


def record_payment(session: Session, key: ApiKey, body: schemas.PaymentIn) -> schemas.PaymentOut:
    """A payment received outside Encours, through the back-office's own service (payments.manual):
    allocated to the invoices named, or oldest due first; audited under the key's name."""
    errors: list[UserError] = []
    customer = session.scalar(select(Customer).where(Customer.company_id == key.company_id,
                                                     Customer.ref == body.customer_ref))
    if customer is None:
        errors.append(UserError(N_("unknown customer %(ref)s in company %(company)s"), ref=body.customer_ref,
                                company=key.company.code).at(field="customer_ref"))
    try:
        currency = check_currency(body.currency)
    except CurrencyError as error:
        raise error.at(field="currency") from None
    total: Money | None = None
    try:
        total = Money.parse(body.amount, currency)
    except AmountError as error:
        errors.append(error.at(field="amount"))
    allocations: list[tuple[int, Money]] | None = None
    if body.allocations is not None and customer is not None:
        numbers = [item.invoice_number for item in body.allocations]
        ids = dict(session.execute(select(Invoice.number, Invoice.id).where(
            Invoice.customer_id == customer.id, Invoice.number.in_(numbers))).all())
        allocations = []
        for index, item in enumerate(body.allocations):
            invoice_id = ids.get(item.invoice_number)
            if invoice_id is None:
                errors.append(UserError(N_("%(number)s is not an invoice of this customer"),
                                        number=item.invoice_number).at(field=f"allocations[{index}].invoice_number"))
                continue
            try:
                allocations.append((invoice_id, Money.parse(item.amount, currency)))
            except AmountError as error:
                errors.append(error.at(field=f"allocations[{index}].amount"))
    if errors:
        raise UserErrors(errors)
    assert customer is not None and total is not None
    try:
        payment = record_manual_payment(session, customer, total, body.received_on, body.method, body.reference,
                                        allocations, KeyActor(key.name, key.company_id))
    except UserError as refused:
        raise refused if refused.field is None else refused.at(field=_body_field(refused.field)) from None
    return payment_out(session, payment, customer.ref)


def cancel_payment(session: Session, key: ApiKey, payment_id: str) -> schemas.PaymentOut:
    """Cancel a payment recorded by hand (here or in the back-office): what it settled reopens."""
    row = session.execute(select(Payment, Customer.ref).join(Customer, Customer.id == Payment.customer_id)
                          .where(Customer.company_id == key.company_id,
                                 Payment.id == (int(payment_id) if payment_id.isascii() and payment_id.isdigit()
                                                and len(payment_id) <= 12 else -1))).first()
    if row is None:
        raise not_found(f"payment {payment_id}")
    payment, ref = row
    try:
        reverse_manual_payment(session, payment, KeyActor(key.name, key.company_id))
    except UserError as refused:
        raise ApiError(409, "Conflict", str(refused)) from None
    return payment_out(session, payment, ref)


# --- bank statements -----------------------------------------------------------------


def import_bank_statement(session: Session, key: ApiKey, data: bytes, filename: str | None,
                          settings: Settings | None) -> schemas.BankImportReport:
    """The file, through the same import as `encours import bank --company` and /admin/bank: booked to
    the key's company only (an account registered to another company refuses the whole file)."""
    report = import_statement_file(session, data, filename or "statement", company_code=key.company.code,
                                   settings=settings, actor=("api", key.name))
    return schemas.BankImportReport(statements=[schemas.StatementSummaryOut(
        file_name=s.file_name, statement_ref=s.statement_ref, account=s.account, company_code=s.company_code,
        format=s.format, entries_read=s.entries_read, matched=s.matched, suggested=s.suggested,
        unmatched=s.unmatched, debits=s.debits, already_imported=s.already_imported, warnings=s.warnings)
        for s in report.statements])


# --- events ----------------------------------------------------------------------------


def event_out(event: AuditEvent, customer_ref: str | None) -> schemas.EventOut:
    """An event as the feed and the webhooks publish it."""
    return schemas.EventOut(id=event.id, type=EVENT_TYPES[event.action], occurred_at=event.created_at,
                            customer_ref=customer_ref, record=event.entity_type, record_id=event.entity_id,
                            data=event.after)


def list_events(session: Session, key: ApiKey, after: str | None, limit: int) -> schemas.EventPage:
    """What happened, from the audit trail (one log, not two), oldest first after the cursor."""
    last = decode_cursor(after, 1)
    query = (select(AuditEvent, Customer.ref).outerjoin(Customer, Customer.id == AuditEvent.customer_id)
             .where(AuditEvent.company_id == key.company_id, AuditEvent.action.in_(list(EVENT_TYPES)))
             .order_by(AuditEvent.id).limit(limit + 1))
    if last is not None:
        query = query.where(AuditEvent.id > int(last[0]))
    rows = session.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [event_out(e, ref) for e, ref in rows]
    # The cursor always moves to the last event seen, so an ERP polling an empty page keeps its place.
    cursor = encode_cursor(rows[-1][0].id) if rows else after
    return schemas.EventPage(items=items, next_cursor=cursor if (more or rows or after) else None)


# --- open items ------------------------------------------------------------------------


def put_open_items(session: Session, key: ApiKey, body: schemas.OpenItemsIn) -> schemas.OpenItemsReport:
    items = [OpenItem(index, item.number, item.open_amount, item.currency) for index, item in enumerate(body.items)]
    as_of = body.as_of or clock.today(key.company.timezone)
    try:
        report = apply_snapshot(session, key.company, items, as_of=as_of, force=body.force, actor_type="api",
                                actor=key.name)
    except UserErrors as refused:
        errors = [(f"items[{p.line}].{p.field}" if p.line is not None else p.field or "items", p.render("en"))
                  for p in refused]
        raise ApiError(422, "Snapshot refused", "nothing was applied", errors) from None
    return snapshot_report(report)


def snapshot_report(report: SnapshotReport) -> schemas.OpenItemsReport:
    return schemas.OpenItemsReport(
        lowered=report.lowered, settled_outside=report.settled_outside, unchanged=report.unchanged,
        higher_not_applied=[schemas.HigherItem(number=n, encours_open_amount=str(ours.to_decimal()),
                                               snapshot_open_amount=str(theirs.to_decimal()))
                            for n, ours, theirs in report.higher],
        unknown=report.unknown)

