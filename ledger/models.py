"""The domain's tables. Amounts are BigInteger minor units beside a CHAR(3) currency."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    CHAR,
    text,
)
from sqlalchemy import false, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from ledger.money import Money

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and gives them back aware, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


def _utcnow() -> datetime:
    from kernel.clock import clock

    return clock.now()


class InvoiceKind(str, enum.Enum):
    invoice = "invoice"
    credit_note = "credit_note"


class InvoiceStatus(str, enum.Enum):
    open = "open"
    partially_paid = "partially_paid"
    paid = "paid"
    disputed = "disputed"
    void = "void"


class PaymentStatus(enum.StrEnum):
    pending = "pending"
    processing = "processing"
    succeeded = "succeeded"
    failed = "failed"
    refunded = "refunded"
    charged_back = "charged_back"
    cancelled = "cancelled"  # a payment staff recorded by hand, then took back (payments.manual)


class PaymentMethod(enum.StrEnum):
    """How money came in; the value is what `payments.method` stores."""

    card = "card"
    instant_transfer = "instant_transfer"
    direct_debit = "direct_debit"
    bank_transfer = "bank_transfer"
    # Recorded by staff: a cheque, a bill of exchange (LCR), cash, a set-off against what we owe.
    cheque = "cheque"
    bill_of_exchange = "bill_of_exchange"
    cash = "cash"
    set_off = "set_off"


# What a debtor may be offered, in the order the portal lists them (each through a provider,
# or the bank statement for a transfer).
DEBTOR_METHODS = (PaymentMethod.card, PaymentMethod.instant_transfer, PaymentMethod.direct_debit,
                  PaymentMethod.bank_transfer)
# What staff record by hand, in the order the payment form lists them.
STAFF_METHODS = (PaymentMethod.cheque, PaymentMethod.bill_of_exchange, PaymentMethod.cash, PaymentMethod.set_off,
                 PaymentMethod.bank_transfer)


class Role(str, enum.Enum):
    admin = "admin"
    manager = "manager"
    collector = "collector"
    viewer = "viewer"


user_companies = Table(
    "user_companies",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("company_id", ForeignKey("companies.id", ondelete="CASCADE"), primary_key=True),
)


class Company(Base):
    __tablename__ = "companies"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    base_currency: Mapped[str] = mapped_column(CHAR(3))
    country: Mapped[str] = mapped_column(CHAR(2), default="FR")
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Paris")
    brand_color: Mapped[str] = mapped_column(String(7), default="#1d4f91")
    # Loaded only when read (up to 512 KB): every portal page loads its company, and asks `has_logo`.
    logo: Mapped[bytes | None] = mapped_column(LargeBinary, default=None, deferred=True)
    logo_mime: Mapped[str | None] = mapped_column(String(64), default=None)
    iban: Mapped[str | None] = mapped_column(String(34), default=None)
    bic: Mapped[str | None] = mapped_column(String(11), default=None)
    address: Mapped[str | None] = mapped_column(Text, default=None)
    support_email: Mapped[str | None] = mapped_column(String(254), default=None)
    link_lifetime_days: Mapped[int] = mapped_column(Integer, default=30)
    # Methods this company turned off ("card", "instant_transfer", "direct_debit", "bank_transfer").
    disabled_methods: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    allow_partial_payments: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    default_discount_bps: Mapped[int | None] = mapped_column(Integer, default=None)
    default_discount_days: Mapped[int | None] = mapped_column(Integer, default=None)
    promise_horizon_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    promise_grace_days: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    reminder_hour: Mapped[int] = mapped_column(Integer, default=9, server_default="9")  # company-local hour of the daily run
    reminder_from: Mapped[str | None] = mapped_column(String(254), default=None)
    collections_email: Mapped[str | None] = mapped_column(String(254), default=None)
    # Which bank entries are matched without a person: see reconciliation.matching.AUTO_LEVELS.
    auto_match_level: Mapped[str] = mapped_column(String(16), default="invoice_number",
                                                  server_default="invoice_number")
    # An under-payment up to this many minor units may be written off when staff match it.
    write_off_tolerance_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # A new company sends no reminder until someone switches them on (companies that existed
    # before this setting keep theirs on: the migration's server default).
    reminders_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=true())
    # The day's run waits in a review queue until a manager sends it.
    reminders_need_approval: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Fewest days between two reminders to the same customer.
    reminder_gap_days: Mapped[int] = mapped_column(Integer, default=7, server_default="7")
    # A bank-transfer checkout that received nothing after this many days expires and frees its invoices.
    transfer_expiry_days: Mapped[int] = mapped_column(Integer, default=10, server_default="10")
    # The largest share of the open book (basis points) an ERP open-items snapshot may close
    # without --force: a truncated export must never wipe the book.
    snapshot_max_close_bps: Mapped[int] = mapped_column(Integer, default=2000, server_default="2000")
    # Receipt numbers given so far: the next receipt is this plus one (ledger.receipts).
    receipts_issued: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    customers: Mapped[list[Customer]] = relationship(back_populates="company")

    @property
    def has_logo(self) -> bool:
        """Whether a logo is set, without loading it: its type is stored with it (`logo_mime`)."""
        return self.logo_mime is not None


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)
    # Sessions carry the version they were opened under: bumping it (sign-out, password change) ends them all.
    session_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Set when someone else chose the password (generated on creation or reset): the user picks
    # its own before opening any other page.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    companies: Mapped[list[Company]] = relationship(secondary=user_companies)

    __table_args__ = (CheckConstraint("role IN ('admin','manager','collector','viewer')", name="role"),)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    ref: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(2), default="fr")
    segment: Mapped[str | None] = mapped_column(String(64), default=None)
    collector_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), default=None)
    gocardless_customer_id: Mapped[str | None] = mapped_column(String(64), default=None)
    gocardless_mandate_id: Mapped[str | None] = mapped_column(String(64), default=None)
    gocardless_mandate_status: Mapped[str | None] = mapped_column(String(32), default=None)
    gocardless_mandate_scheme: Mapped[str | None] = mapped_column(String(32), default=None)  # sepa_core, bacs
    reminders_paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    company: Mapped[Company] = relationship(back_populates="customers")
    # A contact staff removed stays as the record of what it was sent, out of this list.
    contacts: Mapped[list[Contact]] = relationship(
        back_populates="customer", order_by="(Contact.is_primary.desc(), Contact.id)",
        primaryjoin="and_(Customer.id == Contact.customer_id, Contact.removed_at.is_(None))",
    )

    __table_args__ = (
        UniqueConstraint("company_id", "ref", name="uq_customers_company_ref"),
        Index("ix_customers_name", "name", "id"),
        Index("ix_customers_collector", "collector_id"),
        Index("ix_customers_segment", "company_id", "segment"),
    )

    @property
    def primary_contact(self) -> Contact | None:
        return next((c for c in self.contacts if c.is_primary), self.contacts[0] if self.contacts else None)


class ContactRole(str, enum.Enum):
    accounts_payable = "accounts_payable"
    manager = "manager"
    other = "other"


CONTACT_ROLES = tuple(role.value for role in ContactRole)


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    phone: Mapped[str | None] = mapped_column(String(40), default=None)
    language: Mapped[str] = mapped_column(String(2), default="fr")
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    # Who the person is at the customer (ContactRole): accounts payable, a manager, someone else.
    role: Mapped[str] = mapped_column(String(24), default=ContactRole.accounts_payable.value,
                                      server_default=ContactRole.accounts_payable.value)
    # Reminders go to every contact of the customer that has this set, each with its own link.
    receives_reminders: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Bumping this revokes every link (and portal session) the contact was given.
    link_version: Mapped[int] = mapped_column(Integer, default=1)
    # Portal sessions carry it: signing out bumps it (ending every copy of the cookie) without revoking links.
    session_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Set when the mail server refused the address for good (a 5xx at RCPT); reminders skip it.
    email_failing_since: Mapped[datetime | None] = mapped_column(default=None)
    email_failure: Mapped[str | None] = mapped_column(Text, default=None)
    # Removed by staff: kept because reminders, disputes and payments name it; no longer written to.
    removed_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    customer: Mapped[Customer] = relationship(back_populates="contacts")


class Invoice(Base):
    """An invoice or a credit note (kind); amounts always positive."""

    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default=InvoiceKind.invoice.value)
    number: Mapped[str] = mapped_column(String(64))
    issue_date: Mapped[date] = mapped_column(Date)
    due_date: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(CHAR(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    open_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=InvoiceStatus.open.value)
    discount_bps: Mapped[int | None] = mapped_column(Integer, default=None)
    discount_until: Mapped[date | None] = mapped_column(Date, default=None)
    pdf: Mapped[bytes | None] = mapped_column(LargeBinary, default=None, deferred=True)
    # The original PDF an ERP sent (api PUT /invoices/{number}/pdf), in the file storage under pdf_key.
    pdf_key: Mapped[str | None] = mapped_column(String(32), default=None)
    pdf_size: Mapped[int | None] = mapped_column(Integer, default=None)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    pdf_uploaded_at: Mapped[datetime | None] = mapped_column(default=None)
    # What the ERP says was settled without Encours (its own books: a cheque, a set-off): not a
    # payment, so it has no allocation; it counts in the ledger invariant beside them.
    settled_outside_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    settled_outside_on: Mapped[date | None] = mapped_column(Date, default=None)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow, onupdate=_utcnow)

    customer: Mapped[Customer] = relationship()
    company: Mapped[Company] = relationship()

    __table_args__ = (
        UniqueConstraint("company_id", "number", name="uq_invoices_company_number"),
        CheckConstraint("total_minor >= 0", name="total_not_negative"),
        CheckConstraint("open_minor >= 0", name="open_not_negative"),
        CheckConstraint("open_minor <= total_minor", name="open_within_total"),
        CheckConstraint("kind IN ('invoice','credit_note')", name="kind"),
        CheckConstraint(
            "status IN ('open','partially_paid','paid','disputed','void')", name="status"
        ),
        CheckConstraint("discount_bps IS NULL OR (discount_bps > 0 AND discount_bps < 10000)", name="discount_bps"),
        Index("ix_invoices_customer_open", "customer_id", "status"),
        # The dashboard's aggregates read only these covering indexes (see admin/dashboard_service.py):
        # open items by company and due date, open items by customer, and what was issued by date.
        Index("ix_invoices_open_items", "company_id", "currency", "kind", "status", "due_date", "open_minor",
              "customer_id", sqlite_where=text("open_minor > 0"), postgresql_where=text("open_minor > 0")),
        Index("ix_invoices_open_by_customer", "company_id", "currency", "customer_id", "kind", "status",
              "due_date", "open_minor", sqlite_where=text("open_minor > 0"), postgresql_where=text("open_minor > 0")),
        Index("ix_invoices_issued", "issue_date", "company_id", "currency", "kind", "status", "total_minor",
              "customer_id"),
        # The customers list sums what is still open per customer; this covers it without
        # touching the settled bulk of the book.
        Index("ix_invoices_open_per_customer", "customer_id", "currency", "kind", "status", "due_date", "open_minor",
              sqlite_where=text("open_minor > 0"), postgresql_where=text("open_minor > 0")),
        Index("ix_invoices_due_date", "due_date", "id"),
        Index("ix_invoices_company_updated", "company_id", "updated_at", "id"),
        # The API's invoices of a company in a rare status, in id order (one in a thousand is disputed):
        # partial, so no other query is drawn to it (a full (company_id, status, id) index was: see bench/RESULTS.md).
        Index("ix_invoices_disputed", "company_id", "id", sqlite_where=text("status = 'disputed'"),
              postgresql_where=text("status = 'disputed'")),
    )

    @property
    def total(self) -> Money:
        return Money(self.total_minor, self.currency)

    @property
    def open(self) -> Money:
        return Money(self.open_minor, self.currency)

    @property
    def is_credit_note(self) -> bool:
        return self.kind == InvoiceKind.credit_note.value


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_ref: Mapped[str | None] = mapped_column(String(128), default=None)
    method: Mapped[str] = mapped_column(String(32))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(CHAR(3))
    status: Mapped[str] = mapped_column(String(16), default=PaymentStatus.pending.value)
    received_on: Mapped[date | None] = mapped_column(Date, default=None)
    checkout_id: Mapped[int | None] = mapped_column(ForeignKey("checkouts.id"), index=True, default=None)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # Refunded so far of a payment that still stands (partial refunds); amount_minor is what is kept.
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # What staff read on the payment they record by hand: a cheque or bill number, a set-off note.
    reference: Mapped[str | None] = mapped_column(String(64), default=None)
    # How it was paid, as the provider reported it when it succeeded: the debtor's history shows it.
    card_brand: Mapped[str | None] = mapped_column(String(20), default=None)
    card_last4: Mapped[str | None] = mapped_column(String(4), default=None)
    mandate_ref: Mapped[str | None] = mapped_column(String(64), default=None)
    # Given once, in order per company, when the receipt is first needed (ledger.receipts).
    receipt_number: Mapped[str | None] = mapped_column(String(48), default=None)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow, onupdate=_utcnow)

    __table_args__ = (
        UniqueConstraint("provider", "provider_ref", name="uq_payments_provider_ref"),
        Index("uq_payments_receipt_number", "receipt_number", unique=True),
        Index("ix_payments_created", "created_at", "id"),
        Index("ix_payments_updated", "updated_at", "id"),  # the API's payments list, in the order they changed
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint(
            "status IN ('pending','processing','succeeded','failed','refunded','charged_back','cancelled')",
            name="status",
        ),
        CheckConstraint(f"method IN ({', '.join(repr(m.value) for m in PaymentMethod)})", name="method"),
        # Cash collected by day and method (dashboard), without reading the table itself.
        Index("ix_payments_received", "status", "received_on", "currency", "method", "amount_minor", "customer_id"),
    )

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)


class Allocation(Base):
    """Part of a payment or credit note settling part of an invoice."""

    __tablename__ = "allocations"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True, default=None)
    credit_note_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True, default=None)
    currency: Mapped[str] = mapped_column(CHAR(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    discount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Credit applied because this checkout's payment succeeded (undone if that success is undone).
    # A checkout id (no foreign key: SQLite cannot add one to this table in place).
    credit_for_checkout_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    invoice: Mapped[Invoice] = relationship(foreign_keys=[invoice_id])
    payment: Mapped[Payment | None] = relationship()
    credit_note: Mapped[Invoice | None] = relationship(foreign_keys=[credit_note_id])

    __table_args__ = (
        # Days to pay (dashboard): from a payment to the invoices it settled without reading the table.
        Index("ix_allocations_payment_invoice", "payment_id", "invoice_id", "currency", "amount_minor"),
        CheckConstraint("amount_minor >= 0 AND discount_minor >= 0", name="amounts_not_negative"),
        CheckConstraint("amount_minor + discount_minor > 0", name="not_empty"),
        CheckConstraint(
            "(payment_id IS NULL) <> (credit_note_id IS NULL)", name="one_source"
        ),
    )

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)

    @property
    def discount(self) -> Money:
        return Money(self.discount_minor, self.currency)


FAR_FUTURE = date(9999, 12, 31)


class OpenItemsByDue(Base):
    """Running total of open amounts by company, currency, kind, status and due date, moved by the
    triggers of migration 0010_dashboard_days at each change of an invoice (never recounted):
    the dashboard's outstanding, overdue, aging, disputed and credit figures read it instead of
    the invoices. A row whose total fell to zero stays, at zero."""

    __tablename__ = "open_items_by_due"

    company_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    currency: Mapped[str] = mapped_column(CHAR(3), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    due_date: Mapped[date] = mapped_column(Date, primary_key=True)
    open_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class InvoicesIssuedByDay(Base):
    """Running total of invoices (not credit notes, not void) issued per company, currency and
    day, kept by the same triggers: the dashboard's sales for DSO."""

    __tablename__ = "invoices_issued_by_day"

    company_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    currency: Mapped[str] = mapped_column(CHAR(3), primary_key=True)
    issue_date: Mapped[date] = mapped_column(Date, primary_key=True)
    total_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class PaymentDay(Base):
    """Succeeded payments per company, currency, method and day received, kept by triggers on
    payments, allocations and invoices: the cash collected, what those payments settled, and
    that amount times the days from each invoice's issue date to the payment (days to pay)."""

    __tablename__ = "payment_days"

    company_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    currency: Mapped[str] = mapped_column(CHAR(3), primary_key=True)
    method: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_on: Mapped[date] = mapped_column(Date, primary_key=True)
    collected_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    settled_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    settled_days_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class CustomerBalance(Base):
    """Sort keys of the customers list, one row per customer, kept by database triggers on
    `invoices` (migration 0005_customers): the largest per-currency outstanding (open invoices
    less open credit notes) and overdue amounts, and the oldest due date of an open chased invoice
    (FAR_FUTURE when none). Overdue counts as of `BalanceState.as_of`, moved daily
    (`admin.customers_service.refresh_overdue`). Amounts of different currencies are never added:
    the list shows them per currency, computed from the invoices."""

    __tablename__ = "customer_balances"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True,
                                             autoincrement=False)
    outstanding_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    overdue_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    oldest_due: Mapped[date] = mapped_column(Date, default=FAR_FUTURE)

    __table_args__ = (
        Index("ix_customer_balances_outstanding", "outstanding_minor", "customer_id"),
        Index("ix_customer_balances_overdue", "overdue_minor", "customer_id"),
        Index("ix_customer_balances_oldest", "oldest_due", "customer_id"),
    )


class BalanceState(Base):
    """One row: the day `CustomerBalance.overdue_minor` counts from."""

    __tablename__ = "balance_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    as_of: Mapped[date | None] = mapped_column(Date, default=None)


class CustomerNote(Base):
    """A staff note on a customer, shown on its timeline. With `next_action_on` it is also a task
    (on the collector's "My day" from that date) until someone marks it done."""

    __tablename__ = "customer_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    kind: Mapped[str] = mapped_column(String(16), default="note", server_default="note")  # note, call
    body: Mapped[str] = mapped_column(Text)
    next_action_on: Mapped[date | None] = mapped_column(Date, default=None)
    done_at: Mapped[datetime | None] = mapped_column(default=None)
    done_by: Mapped[str | None] = mapped_column(String(254), default=None)  # staff email
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    author: Mapped[User | None] = relationship()

    __table_args__ = (
        CheckConstraint("kind IN ('note','call')", name="kind"),
        # Open tasks by date: "My day" reads the few that are due, not every note.
        Index("ix_customer_notes_open_tasks", "next_action_on", "customer_id",
              sqlite_where=text("done_at IS NULL AND next_action_on IS NOT NULL"),
              postgresql_where=text("done_at IS NULL AND next_action_on IS NOT NULL")),
    )


class SavedView(Base):
    """A named set of customers-list filters (its URL query), a user's own or shared with the staff."""

    __tablename__ = "saved_views"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    query: Mapped[str] = mapped_column(Text)
    shared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    user: Mapped[User] = relationship()

    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_saved_views_user_name"),)


class LinkOpen(Base):
    __tablename__ = "link_opens"

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    opened_at: Mapped[datetime] = mapped_column(default=_utcnow)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(400), default=None)

    # The dashboard's funnel reads opens by date; a contact's recent opens are a short range
    # (tokens.check_link).
    __table_args__ = (
        Index("ix_link_opens_opened_at", "opened_at"),
        Index("ix_link_opens_contact_opened", "contact_id", "opened_at"),
    )


class Throttle(Base):
    """Counts failures per key (e.g. bad link tokens per client) in a fixed window."""

    __tablename__ = "throttles"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column()
    count: Mapped[int] = mapped_column(Integer, default=0)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_type: Mapped[str] = mapped_column(String(16))  # user, contact, provider, system
    actor: Mapped[str | None] = mapped_column(String(254), default=None)
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[int | None] = mapped_column(Integer, default=None)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True, default=None)
    # Whose record it is, so a manager reads its companies' trail; None for staff accounts and the like.
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True, default=None)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    __table_args__ = (
        Index("ix_audit_events_entity", "entity_type", "entity_id"),
        Index("ix_audit_events_created", "created_at"),
    )


class OutboxMessage(Base):
    """An email waiting for (or done with) SMTP delivery."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True, default=None)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), default=None)
    kind: Mapped[str] = mapped_column(String(32))
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=_utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        # held: a reminder waiting for a manager's approval; cancelled: one the manager did not send.
        CheckConstraint("status IN ('queued','sent','failed','held','cancelled')", name="status"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_sent", "status", "sent_at"),
    )


# --- Payments: what the debtor chose to pay, and what providers told us -------------------------


class Checkout(Base):
    """The debtor's choice: invoices, amount per invoice, discounts locked at that moment, method."""

    __tablename__ = "checkouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), default=None)
    method: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(CHAR(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # what is charged
    discount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # The customer's credit (credit notes, unapplied money) applied when the checkout was made.
    credit_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(16), default="open")
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    reference: Mapped[str | None] = mapped_column(String(35), unique=True, default=None)  # ISO 11649 RF
    provider: Mapped[str | None] = mapped_column(String(32), default=None)
    provider_ref: Mapped[str | None] = mapped_column(String(128), index=True, default=None)
    # Direct debit: also pay this checkout at once by instant bank transfer, not on the new mandate.
    instant_first_payment: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Why it failed or was cancelled, as a code of payments.failures' catalog (never a provider's text).
    failure_code: Mapped[str | None] = mapped_column(String(40), default=None)
    # Provider attempts made for it: a retry after an attempt that can no longer be confirmed gets a
    # fresh provider intent under the key "checkout-<id>-<attempt>".
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Its credit (credit_minor) is reserved while it lives and applied to the invoices only once its
    # payment succeeds (checkouts made before reservations applied it at once: true for them).
    credit_applied: Mapped[bool] = mapped_column(Boolean, default=False, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow, onupdate=_utcnow)

    lines: Mapped[list[CheckoutLine]] = relationship(back_populates="checkout", order_by="CheckoutLine.id")

    __table_args__ = (
        CheckConstraint("amount_minor > 0 AND discount_minor >= 0", name="amounts"),
        CheckConstraint(
            "status IN ('open','processing','succeeded','failed','cancelled')", name="status"
        ),
    )

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)

    @property
    def discount(self) -> Money:
        return Money(self.discount_minor, self.currency)


class CheckoutLine(Base):
    __tablename__ = "checkout_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    checkout_id: Mapped[int] = mapped_column(ForeignKey("checkouts.id", ondelete="CASCADE"), index=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    discount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Settled by the customer's credit when the checkout was made; `amount_minor` is what was left.
    credit_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    checkout: Mapped[Checkout] = relationship(back_populates="lines")
    invoice: Mapped[Invoice] = relationship()

    @property
    def requested(self) -> Money:
        """The part of the invoice this line settles, before credit and discount."""
        return Money(self.amount_minor + self.credit_minor, self.invoice.currency)

    @property
    def discount(self) -> Money:
        return Money(self.discount_minor, self.invoice.currency)

    @property
    def credit(self) -> Money:
        return Money(self.credit_minor, self.invoice.currency)

    __table_args__ = (
        UniqueConstraint("checkout_id", "invoice_id", name="uq_checkout_lines_invoice"),
        CheckConstraint("amount_minor > 0 AND discount_minor >= 0", name="amounts"),
    )


class WebhookEvent(Base):
    """A provider event, stored raw before anything is done with it."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(default=_utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # "not_ours" for a processed event about something we did not create (note says why);
    # None for an event applied or ignored.
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event"),
        # What the worker retries and the back-office counts as failed: the unprocessed events only
        # (migration 0041), so an event stored processed, nearly every one, adds no entry to it.
        # processed_at stays its first column: SQLite's planner then picks it for the worker's query.
        Index("ix_webhook_events_pending", "processed_at", "next_attempt_at",
              sqlite_where=text("processed_at IS NULL"), postgresql_where=text("processed_at IS NULL")),
        Index("ix_webhook_events_received", "received_at", "id"),
    )


# --- Reminders ("relances groupées") -------------------------------------------------------------


class Scenario(Base):
    """How a company chases one segment of customers (segment None: the company default)."""

    __tablename__ = "scenarios"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    segment: Mapped[str | None] = mapped_column(String(64), default=None)
    # Below these open totals (currency -> minor units) a customer is not chased.
    minimums: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    steps: Mapped[list[ScenarioStep]] = relationship(
        back_populates="scenario", order_by="ScenarioStep.offset_days", cascade="all, delete-orphan"
    )


class ScenarioStep(Base):
    __tablename__ = "scenario_steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    offset_days: Mapped[int] = mapped_column(Integer)  # from the due date; negative is before
    tone: Mapped[str] = mapped_column(String(16), default="courteous")  # courteous, firm, formal
    whole_balance: Mapped[bool] = mapped_column(Boolean, default=False)
    # A customer further along may jump over this step; one that may not be skipped is always sent.
    may_skip: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    channel: Mapped[str] = mapped_column(String(16), default="email")
    subject_fr: Mapped[str] = mapped_column(Text)
    body_fr: Mapped[str] = mapped_column(Text)
    subject_en: Mapped[str] = mapped_column(Text)
    body_en: Mapped[str] = mapped_column(Text)

    scenario: Mapped[Scenario] = relationship(back_populates="steps")

    __table_args__ = (UniqueConstraint("scenario_id", "offset_days", name="uq_scenario_steps_offset"),)


class ReminderRun(Base):
    __tablename__ = "reminder_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True, default=None)
    run_date: Mapped[date] = mapped_column(Date)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(default=_utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    planned: Mapped[int] = mapped_column(Integer, default=0)
    queued: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    problems: Mapped[list[str]] = mapped_column(JSON, default=list)


class ReminderClaim(Base):
    """Which worker plans a company's daily reminder run: the first to insert this row (or to
    take it over once its lease ran out without it finishing) plans; the others skip the run."""

    __tablename__ = "reminder_claims"

    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"), primary_key=True)
    run_date: Mapped[date] = mapped_column(Date, primary_key=True)
    token: Mapped[str] = mapped_column(String(32))  # this claim's own, changed by a takeover
    holder: Mapped[str] = mapped_column(String(200))  # host and process id, for people reading the table
    claimed_at: Mapped[datetime] = mapped_column(default=_utcnow)
    lease_until: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    claims: Mapped[int] = mapped_column(Integer, default=1)  # 2 and more: taken over after a lease ran out


reminder_invoices = Table(
    "reminder_invoices",
    Base.metadata,
    Column("reminder_id", ForeignKey("reminders.id", ondelete="CASCADE"), primary_key=True),
    Column("invoice_id", ForeignKey("invoices.id"), primary_key=True),
)


def reminder_invoice_key(invoice_ids: Iterable[int]) -> str:
    """The identity of "the same invoices": a digest of their sorted ids, of fixed length so the
    unique index holds it whatever the number of invoices (PostgreSQL refuses index rows over
    2,704 bytes: a few hundred ids joined)."""
    joined = ",".join(str(i) for i in sorted(invoice_ids))
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


class Reminder(Base):
    """One message to one contact, for one step, covering a set of invoices; never queued twice."""

    __tablename__ = "reminders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    step_id: Mapped[int | None] = mapped_column(ForeignKey("scenario_steps.id"), default=None)  # None: by hand
    run_id: Mapped[int | None] = mapped_column(ForeignKey("reminder_runs.id"), index=True, default=None)
    # reminder_invoice_key(the invoices' ids): the identity of "the same invoices".
    invoice_key: Mapped[str] = mapped_column(Text)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    invoices: Mapped[list[Invoice]] = relationship(secondary=reminder_invoices)

    __table_args__ = (
        UniqueConstraint("customer_id", "contact_id", "step_id", "invoice_key", name="uq_reminders_once"),
        Index("ix_reminders_outbox", "outbox_id"),
    )


# --- Disputes, questions and promises to pay -------------------------------------------------------


class DisputeReason(Base):
    __tablename__ = "dispute_reasons"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    label_fr: Mapped[str] = mapped_column(String(200))
    label_en: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (UniqueConstraint("company_id", "code", name="uq_dispute_reasons_code"),)


dispute_invoices = Table(
    "dispute_invoices",
    Base.metadata,
    Column("dispute_id", ForeignKey("disputes.id", ondelete="CASCADE"), primary_key=True),
    Column("invoice_id", ForeignKey("invoices.id"), primary_key=True),
    # The primary key leads with dispute_id: one invoice's disputes (its dispute form, its page, a
    # checkout's disputed parts) are found through this one, not by reading every row (0042).
    Index("ix_dispute_invoices_invoice_id", "invoice_id"),
)


class Dispute(Base):
    """A case opened by the debtor: a dispute (kind 'dispute') or a question (kind 'question')."""

    __tablename__ = "disputes"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), default=None)
    kind: Mapped[str] = mapped_column(String(16), default="dispute")
    reason_id: Mapped[int | None] = mapped_column(ForeignKey("dispute_reasons.id"), default=None)
    status: Mapped[str] = mapped_column(String(16), default="open")
    assigned_to_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    resolution_note: Mapped[str | None] = mapped_column(Text, default=None)
    credit_note_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), default=None)
    # The part of its one invoice disputed (minor units); None: the whole invoice. The rest of the
    # invoice stays due and chased (ledger.disputes.disputed_parts).
    disputed_minor: Mapped[int | None] = mapped_column(BigInteger, default=None)
    opened_at: Mapped[datetime] = mapped_column(default=_utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)

    invoices: Mapped[list[Invoice]] = relationship(secondary=dispute_invoices)
    messages: Mapped[list[DisputeMessage]] = relationship(
        back_populates="dispute", order_by="DisputeMessage.created_at"
    )

    __table_args__ = (
        CheckConstraint("kind IN ('dispute','question')", name="kind"),
        CheckConstraint("status IN ('open','accepted','rejected','closed')", name="status"),
    )


class DisputeMessage(Base):
    __tablename__ = "dispute_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("disputes.id", ondelete="CASCADE"), index=True)
    author_type: Mapped[str] = mapped_column(String(16))  # contact, user
    author_id: Mapped[int | None] = mapped_column(Integer, default=None)
    internal: Mapped[bool] = mapped_column(Boolean, default=False)  # staff notes the debtor never sees
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    dispute: Mapped[Dispute] = relationship(back_populates="messages")
    attachments: Mapped[list[Attachment]] = relationship(back_populates="message")


class Attachment(Base):
    """A file stored outside the web root under `storage_key`; served only to those allowed."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("dispute_messages.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    message: Mapped[DisputeMessage] = relationship(back_populates="attachments")


promise_invoices = Table(
    "promise_invoices",
    Base.metadata,
    Column("promise_id", ForeignKey("promises.id", ondelete="CASCADE"), primary_key=True),
    Column("invoice_id", ForeignKey("invoices.id"), primary_key=True),
)


class PromiseToPay(Base):
    __tablename__ = "promises"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), default=None)
    promised_for: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(CHAR(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(default=None)

    invoices: Mapped[list[Invoice]] = relationship(secondary=promise_invoices)

    __table_args__ = (
        CheckConstraint("status IN ('pending','kept','broken','cancelled')", name="status"),
        Index("ix_promises_status_date", "status", "promised_for"),
    )


# --- Exchange rates -------------------------------------------------------------------------------


class FxRate(Base):
    """1 `base` = `rate` `quote` from `valid_on` on (until a later rate); the same for every company.

    The rate is a decimal written as text ("1.0842"), never a float.
    """

    __tablename__ = "fx_rates"

    id: Mapped[int] = mapped_column(primary_key=True)
    base: Mapped[str] = mapped_column(CHAR(3))
    quote: Mapped[str] = mapped_column(CHAR(3))
    rate: Mapped[str] = mapped_column(String(32))
    valid_on: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow, onupdate=_utcnow)

    __table_args__ = (
        UniqueConstraint("base", "quote", "valid_on", name="uq_fx_rates_pair_day"),
        CheckConstraint("base <> quote", name="pair"),
    )


class WorkerHeartbeat(Base):
    """When each background job of `encours worker` last ran and last succeeded (read by /metrics):
    in the database, so any web process can tell whether some worker is alive."""

    __tablename__ = "worker_heartbeats"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[datetime] = mapped_column()
    last_ok_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    runs: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    failures: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class SchemaRevision(Base):
    """Every migration revision applied to this database, kept by migrations/env.py: a process
    whose code does not know the database's newer revision can still tell that its own head
    is among its ancestors (readiness during a rolling upgrade, kernel.db.schema_problem)."""

    __tablename__ = "schema_revisions"

    revision: Mapped[str] = mapped_column(String(64), primary_key=True)


# --- Bank reconciliation: statements from the company's bank, matched to open items ---------------


class BankEntryState(str, enum.Enum):
    unmatched = "unmatched"
    suggested = "suggested"  # a proposal waits for staff
    matched = "matched"
    ignored = "ignored"  # not a customer payment (staff said so)
    debit = "debit"  # money out: not ours to match


class BankMatchState(str, enum.Enum):
    suggested = "suggested"
    confirmed = "confirmed"
    undone = "undone"


class BankAccount(Base):
    """An account of the company at its bank: statements are booked to the company by its IBAN."""

    __tablename__ = "bank_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    iban: Mapped[str] = mapped_column(String(34), unique=True)  # electronic form, or the bank's account number
    bic: Mapped[str | None] = mapped_column(String(11), default=None)
    currency: Mapped[str] = mapped_column(CHAR(3))
    label: Mapped[str | None] = mapped_column(String(100), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    company: Mapped[Company] = relationship()


class BankStatement(Base):
    """One statement (camt.053/054 statement or notification, MT940 message, CSV file) as imported."""

    __tablename__ = "bank_statements"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("bank_accounts.id"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    file_sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))
    statement_ref: Mapped[str | None] = mapped_column(String(64), default=None)  # the statement id in the file
    from_date: Mapped[date | None] = mapped_column(Date, default=None)
    to_date: Mapped[date | None] = mapped_column(Date, default=None)
    currency: Mapped[str | None] = mapped_column(CHAR(3), default=None)
    opening_balance_minor: Mapped[int | None] = mapped_column(BigInteger, default=None)
    closing_balance_minor: Mapped[int | None] = mapped_column(BigInteger, default=None)
    entries_read: Mapped[int] = mapped_column(Integer, default=0)
    entries_new: Mapped[int] = mapped_column(Integer, default=0)
    imported_at: Mapped[datetime] = mapped_column(default=_utcnow)
    imported_by: Mapped[str | None] = mapped_column(String(254), default=None)  # staff email; None: the CLI
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)

    account: Mapped[BankAccount] = relationship()

    __table_args__ = (
        # What each entry's one foreign key points at (its statement, account and company).
        Index("uq_bank_statements_keys", "id", "account_id", "company_id", unique=True),
    )


class BankEntry(Base):
    """One movement on the account. Amounts are signed: credits positive, debits negative."""

    __tablename__ = "bank_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The statement's, its account's and its company's: one foreign key for the three (migration 0039_bank).
    statement_id: Mapped[int] = mapped_column(index=True)
    company_id: Mapped[int] = mapped_column()
    account_id: Mapped[int] = mapped_column()
    booking_date: Mapped[date | None] = mapped_column(Date, default=None)
    value_date: Mapped[date | None] = mapped_column(Date, default=None)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(CHAR(3))
    credit_debit: Mapped[str] = mapped_column(String(4))  # CRDT, DBIT
    reversal: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    state: Mapped[str] = mapped_column(String(16), default=BankEntryState.unmatched.value)
    payer_name: Mapped[str | None] = mapped_column(String(200), default=None)
    payer_iban: Mapped[str | None] = mapped_column(String(34), default=None)
    payer_bic: Mapped[str | None] = mapped_column(String(11), default=None)
    remittance_text: Mapped[str | None] = mapped_column(Text, default=None)
    structured_reference: Mapped[str | None] = mapped_column(String(35), default=None)
    end_to_end_id: Mapped[str | None] = mapped_column(String(64), default=None)
    bank_reference: Mapped[str | None] = mapped_column(String(64), default=None)
    # (booking date, amount, the bank's reference) or a hash of the other fields and the
    # occurrence index in its file: the same entry loaded twice is found, two identical ones kept.
    identity_key: Mapped[str] = mapped_column(String(120))
    location: Mapped[str | None] = mapped_column(String(200), default=None)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Who matched it ("rule" or "person"), written with the state: the dashboard's totals
    # (`BankEntryDay`) tell automatic from by-hand matches without reading the matches.
    matched_by: Mapped[str | None] = mapped_column(String(8), default=None)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow, onupdate=_utcnow)

    statement: Mapped[BankStatement] = relationship()
    account: Mapped[BankAccount] = relationship(primaryjoin="BankAccount.id == foreign(BankEntry.account_id)",
                                                viewonly=True)

    __table_args__ = (
        ForeignKeyConstraint(["statement_id", "account_id", "company_id"],
                             ["bank_statements.id", "bank_statements.account_id", "bank_statements.company_id"],
                             name="fk_bank_entries_statement_id_bank_statements"),
        UniqueConstraint("account_id", "identity_key", name="uq_bank_entries_identity"),
        CheckConstraint("credit_debit IN ('CRDT','DBIT')", name="credit_debit"),
        CheckConstraint("state IN ('unmatched','suggested','matched','ignored','debit')", name="state"),
        Index("ix_bank_entries_queue", "company_id", "state", "id"),
        # The queue's open entries (`reconciliation.queue.OPEN_STATES`), newest first, page after page.
        Index("ix_bank_entries_open", "id", sqlite_where=text("state IN ('unmatched', 'suggested')"),
              postgresql_where=text("state IN ('unmatched', 'suggested')")),
    )

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)


class BankEntryDay(Base):
    """Credits received per company, currency, what became of them (`kind`: automatic, by_hand,
    set_aside, unmatched) and day booked (value day without one; FAR_FUTURE without either): the
    dashboard's reconciliation state, kept by triggers on bank_entries (migration 0019_bank_perf).
    Money out and returned transfers are not counted. A row whose entries went elsewhere stays, at 0."""

    __tablename__ = "bank_entry_days"

    company_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    currency: Mapped[str] = mapped_column(CHAR(3), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    entries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class BankMatch(Base):
    """Why an entry pays what it pays: the evidence, who decided, and the payments it created.

    A `confirmed` match has created its payments; `undone` keeps the record of a match taken
    back (by staff, or by the bank returning the transfer)."""

    __tablename__ = "bank_matches"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("bank_entries.id"), index=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=BankMatchState.suggested.value)
    evidence: Mapped[str] = mapped_column(String(32))  # reconciliation.matching.Evidence
    reason: Mapped[str] = mapped_column(Text)  # what staff read: "RF18 0000 0001 2 of checkout 12"
    score: Mapped[int] = mapped_column(Integer, default=0)  # 0..100
    method: Mapped[str] = mapped_column(String(32), default="bank_transfer")
    checkout_id: Mapped[int | None] = mapped_column(ForeignKey("checkouts.id"), default=None)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True, default=None)
    decided_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)  # None: the rule
    undone_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    undo_reason: Mapped[str | None] = mapped_column(Text, default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)
    undone_at: Mapped[datetime | None] = mapped_column(default=None)

    entry: Mapped[BankEntry] = relationship()
    lines: Mapped[list[BankMatchLine]] = relationship(back_populates="match", order_by="BankMatchLine.id",
                                                      cascade="all, delete-orphan")

    __table_args__ = (
        CheckConstraint("state IN ('suggested','confirmed','undone')", name="state"),
        CheckConstraint("score >= 0 AND score <= 100", name="score"),
    )

    @property
    def decided_by(self) -> str:
        return "rule" if self.decided_by_user_id is None else f"user:{self.decided_by_user_id}"


class BankMatchLine(Base):
    """What one match gives one invoice (or, with no invoice, the customer's unapplied credit)."""

    __tablename__ = "bank_match_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    match_id: Mapped[int] = mapped_column(ForeignKey("bank_matches.id", ondelete="CASCADE"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True, default=None)
    currency: Mapped[str] = mapped_column(CHAR(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # money of the entry
    discount_minor: Mapped[int] = mapped_column(BigInteger, default=0)  # early-payment discount granted
    write_off_minor: Mapped[int] = mapped_column(BigInteger, default=0)  # small short payment let go
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), default=None)

    match: Mapped[BankMatch] = relationship(back_populates="lines")

    __table_args__ = (
        CheckConstraint("amount_minor >= 0 AND discount_minor >= 0 AND write_off_minor >= 0", name="amounts"),
    )


class PayerAccount(Base):
    """A payer IBAN seen paying a customer in a confirmed match: evidence for the next entry."""

    __tablename__ = "payer_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    iban: Mapped[str] = mapped_column(String(34))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    times_seen: Mapped[int] = mapped_column(Integer, default=1)
    last_seen_at: Mapped[datetime] = mapped_column(default=_utcnow)

    __table_args__ = (UniqueConstraint("company_id", "iban", "customer_id", name="uq_payer_accounts_customer"),)
class ApiKey(Base):
    """A company's ERP key: only its SHA-256 is kept, the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(20))  # shown in lists so staff can tell keys apart
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    created_by: Mapped[str | None] = mapped_column(String(254), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    company: Mapped[Company] = relationship()

    __table_args__ = (UniqueConstraint("company_id", "name", name="uq_api_keys_company_name"),)


class ApiKeyReveal(Base):
    """A new API key waiting for the one page that shows it to the staff user who created it
    (post/redirect/get): sealed with a key derived from the app's secret (`kernel.sealing`),
    deleted as it is shown, or once stale (`ledger.api_keys.REVEAL_WITHIN`)."""

    __tablename__ = "api_key_reveals"

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)


class ApiIdempotency(Base):
    """The first response to a write sent with an Idempotency-Key, replayed to a retry."""

    __tablename__ = "api_idempotency"

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    __table_args__ = (
        UniqueConstraint("api_key_id", "key", name="uq_api_idempotency_key"),
        Index("ix_api_idempotency_created", "created_at"),  # the worker deletes old replies by age
    )


class WebhookEndpoint(Base):
    """A URL of a company's ERP that is sent the events it asked for, signed with its own secret
    (kept as is: signing needs it; shown to staff once)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    created_by: Mapped[str | None] = mapped_column(String(254), default=None)

    company: Mapped[Company] = relationship()


class WebhookDelivery(Base):
    """One event to send to one endpoint: the outbox row written with the event, then its attempts."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    audit_event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=_utcnow)
    response_code: Mapped[int | None] = mapped_column(Integer, default=None)
    latency_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)

    event: Mapped[AuditEvent] = relationship()
    endpoint: Mapped[WebhookEndpoint] = relationship()

    __table_args__ = (
        CheckConstraint("status IN ('queued','sent','failed')", name="status"),
        UniqueConstraint("endpoint_id", "audit_event_id", name="uq_webhook_deliveries_endpoint_event"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_status", "status", "id"),  # the delivery log by state, newest first
    )
