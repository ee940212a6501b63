"""What the API reads and writes: strict pydantic models (unknown fields refused), which also
give the OpenAPI document its schemas.

Amounts are decimal strings in the currency's precision ("1234.56" in EUR, "1234" in JPY): exact,
and what an ERP exports. A number with more decimals than the currency has is refused, naming the field.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_BULK = 1000


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Amount = Annotated[str, Field(pattern=r"^[0-9]{1,15}(\.[0-9]{1,6})?$", examples=["1234.56"],
                              description="Decimal string in the currency's precision (EUR: 2 decimals, JPY: 0)")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]
Ref = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
Percent = Annotated[str, Field(pattern=r"^[0-9]{1,2}(\.[0-9]{1,2})?$", examples=["2"])]


class CustomerIn(Model):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Annotated[str, Field(max_length=254, pattern=r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")]
    language: Literal["fr", "en"] | None = None
    phone: Annotated[str, Field(max_length=40)] | None = None
    segment: Annotated[str, Field(max_length=64)] | None = None


class CustomerBulkItem(CustomerIn):
    ref: Ref


class CustomersBulkIn(Model):
    items: Annotated[list[CustomerBulkItem], Field(min_length=1, max_length=MAX_BULK)]


class ContactOut(Model):
    email: str
    name: str | None
    phone: str | None
    language: str
    is_primary: bool


class CustomerOut(Model):
    ref: str
    name: str
    language: str
    segment: str | None
    contacts: list[ContactOut]
    created_at: datetime


class CustomerPage(Model):
    items: list[CustomerOut]
    next_cursor: str | None


class InvoiceIn(Model):
    customer_ref: Ref
    type: Literal["invoice", "credit_note"] = "invoice"
    issue_date: date
    due_date: date
    currency: Currency
    amount: Amount
    discount_percent: Percent | None = None
    discount_until: date | None = None
    open_amount: Amount | None = Field(
        default=None, description="What the ERP still shows as open; lower than Encours knows: the difference is "
                                  "settled outside Encours (never a payment); higher: refused")


class InvoiceBulkItem(InvoiceIn):
    number: Ref


class InvoicesBulkIn(Model):
    items: Annotated[list[InvoiceBulkItem], Field(min_length=1, max_length=MAX_BULK)]


class InvoiceOut(Model):
    number: str
    type: str
    customer_ref: str
    issue_date: date
    due_date: date
    currency: str
    amount: str
    open_amount: str
    status: Literal["open", "partially_paid", "paid", "disputed", "void"]
    discount_percent: str | None
    discount_until: date | None
    settled_outside_amount: str
    settled_outside_on: date | None
    has_pdf: bool = Field(description="An original PDF was sent (GET /invoices/{number}/pdf); "
                                      "the portal serves it instead of its summary PDF")
    updated_at: datetime


class InvoicePdfOut(Model):
    number: str
    size: int = Field(description="Bytes")
    sha256: str
    uploaded_at: datetime


class InvoicePage(Model):
    items: list[InvoiceOut]
    next_cursor: str | None


class BulkReport(Model):
    created: int
    updated: int
    unchanged: int


class AllocationOut(Model):
    invoice_number: str
    amount: str
    discount: str


class PaymentOut(Model):
    id: int
    customer_ref: str
    provider: str
    provider_ref: str | None
    method: str
    status: str
    amount: str
    currency: str
    received_on: date | None
    allocations: list[AllocationOut]
    created_at: datetime
    updated_at: datetime


class PaymentAllocationIn(Model):
    invoice_number: Ref
    amount: Amount


class PaymentIn(Model):
    """A payment the ERP knows of, received outside Encours; recorded as the back-office records one."""

    customer_ref: Ref
    amount: Amount
    currency: Currency
    received_on: date
    method: Literal["cheque", "bill_of_exchange", "cash", "set_off", "bank_transfer"] = Field(
        description="bill_of_exchange: an LCR; set_off: against what the company owes the customer")
    reference: Annotated[str, Field(max_length=64, description="Required for a cheque or a bill of exchange")] = ""
    allocations: Annotated[list[PaymentAllocationIn], Field(max_length=MAX_BULK)] | None = Field(
        default=None, description="Invoices it settles and how much of each; left out: the customer's open "
                                  "invoices, oldest due first. What is not allocated is the customer's credit")


class PaymentPage(Model):
    items: list[PaymentOut]
    next_cursor: str | None


class EventOut(Model):
    id: int
    type: str
    occurred_at: datetime
    customer_ref: str | None
    record: str
    record_id: int | None
    data: dict[str, Any] | None


class EventPage(Model):
    items: list[EventOut]
    next_cursor: str | None


class OpenItemIn(Model):
    number: Ref
    open_amount: Amount
    currency: Currency | None = None


class OpenItemsIn(Model):
    items: list[OpenItemIn]
    as_of: date | None = Field(default=None, description="The snapshot's date; today when left out")
    force: bool = Field(default=False, description="Apply even when it closes more than the company's share")


class HigherItem(Model):
    number: str
    encours_open_amount: str
    snapshot_open_amount: str


class OpenItemsReport(Model):
    lowered: list[str]
    settled_outside: list[str]
    unchanged: int
    higher_not_applied: list[HigherItem]
    unknown: list[str]


class FieldError(Model):
    field: str
    message: str


class Problem(Model):
    """RFC 9457 problem details (media type application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []


class StatementSummaryOut(Model):
    """One statement of the file, as `encours import bank` prints it."""

    file_name: str
    statement_ref: str | None
    account: str
    company_code: str
    format: str
    entries_read: int
    matched: int = Field(description="Credits matched automatically")
    suggested: int
    unmatched: int
    debits: int = Field(description="Money out: not matched")
    already_imported: int = Field(description="Entries loaded before (the same file twice changes nothing)")
    warnings: list[str]


class BankImportReport(Model):
    statements: list[StatementSummaryOut]
