"""ERP imports of customers and invoices from CSV, all-or-nothing.

The whole file is parsed and checked against the database before anything is written:
either every line is good and all of it is applied, or nothing is and every bad line is
reported with its number (as a spreadsheet counts them: the header is line 1).

Each reason is a `kernel.user_error.UserError` (a message id with named values) set at its
line; a refused file raises `UserErrors` holding them all (`by_line` groups them), so the
back-office shows them in the staff member's language, the command line in English.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.util import identity_key

from kernel import i18n
from kernel.clock import clock
from kernel.db import analyze_if_outgrown, insert_rows, insert_rows_with_ids, update_rows
from kernel.i18n import N_
from kernel.user_error import Count, UserError, UserErrors
from ledger import audit
from ledger.allocation import status_of
from ledger.events import queue_deliveries_for_ids
from ledger.models import CONTACT_ROLES, AuditEvent, Company, Contact, ContactRole, Customer, Invoice, InvoiceKind, \
    InvoiceStatus
from ledger.money import AmountError, CurrencyError, Money, check_currency, decimals

ImportKind = Literal["customers", "invoices", "contacts"]

MAX_DATA_LINES = 50_000
# Keeps IN (...) lists well under every database's bound-parameter limit.
_CHUNK = 500
_MAX_MINOR = 2**63 - 1

CUSTOMER_COLUMNS: tuple[str, ...] = ("company", "customer_ref", "name", "email", "language", "phone", "segment")
INVOICE_COLUMNS: tuple[str, ...] = (
    "company",
    "customer_ref",
    "number",
    "issue_date",
    "due_date",
    "currency",
    "amount",
    "discount_percent",
    "discount_until",
)
# The contacts file names no company: the command gives it (`encours import contacts FILE --company CODE`).
CONTACT_COLUMNS: tuple[str, ...] = ("customer_ref", "email")
CONTACT_OPTIONAL: tuple[str, ...] = ("name", "phone", "language", "role", "receives_reminders")
_REQUIRED: dict[str, tuple[str, ...]] = {"customers": CUSTOMER_COLUMNS, "invoices": INVOICE_COLUMNS}
_OPTIONAL: dict[str, tuple[str, ...]] = {"customers": (), "invoices": ("type",)}
_YES = ("1", "yes", "y", "true", "oui", "o", "vrai")
_NO = ("0", "no", "n", "false", "non", "faux")

_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PERCENT = re.compile(r"^\d+(\.\d+)?$")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_EXPONENT = re.compile(r"\d[eE][+-]?\d")
_LANGUAGES = ("fr", "en")
_ACTOR = "import"

T = TypeVar("T")


class _FileAmount(Money):
    """An amount in a reason: in the reader's format, except English, which is also the command
    line's, which has always printed "69.99 EUR"."""

    def localized(self, language: str) -> str:
        return str(self) if language == "en" else i18n.format_money(self, language)


def _reason(message: str, values: Mapping[str, Any] | None = None) -> UserError:
    """Why a line is bad: a UserError whose values show as the imports always showed them.

    Values are shown as given, except: an int (a count) with the language's digit grouping, an
    amount in the language's format, a tuple of reasons joined by "; ". Identifiers (line
    numbers, references) are passed as text; a value from the file as `_quoted` text."""
    return UserError(message, **{name: _as_shown(value) for name, value in (values or {}).items()})


def _as_shown(value: Any) -> Any:
    if isinstance(value, Money) and not isinstance(value, _FileAmount):
        return _FileAmount(value.minor, value.currency)
    if isinstance(value, int) and not isinstance(value, (bool, Count)):
        return Count(value)
    return value


def _quoted(value: str) -> str:
    """A value from the file as reasons show it: quoted, anything invisible escaped."""
    return repr(value)


@dataclass
class ImportReport:
    kind: ImportKind
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def summary(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"


def import_csv(session: Session, kind: ImportKind, raw: bytes, *, allowed_companies: Collection[str] | None = None,
               actor: str | None = None, filename: str | None = None) -> ImportReport:
    """Validate the whole file, then apply it with `session` (flushed, not committed).

    `allowed_companies` (codes; None: all) limits whom the file may touch: a line naming another
    company is a bad line. `actor` (a staff email; None: the command line) is who the audit trail
    names; each company the file touched gets one "import" event, each customer one on its timeline.
    """
    if kind not in _REQUIRED:
        raise ValueError(f"unknown import kind {kind!r}")
    rows, problems = _read_rows(kind, raw)
    scope = _Scope(None if allowed_companies is None else frozenset(allowed_companies))
    actor_type, actor_name = ("user", actor) if actor else ("system", _ACTOR)
    return _import_rows(session, kind, rows, problems, scope, actor_type, actor_name, filename)


def import_records(session: Session, kind: ImportKind, records: Sequence[Mapping[str, str]], *, company_code: str,
                   actor_type: str, actor: str) -> ImportReport:
    """What `import_csv` does for a file, for records already split into columns (the JSON API):
    the same checks, the same all-or-nothing upsert. A record's "line" is its index in `records`;
    every record belongs to `company_code` (a record naming another is refused as in a file)."""
    if kind not in _REQUIRED:
        raise ValueError(f"unknown import kind {kind!r}")
    known = set(_REQUIRED[kind]) | set(_OPTIONAL[kind])
    rows = [Row(index, {column: value for column, value in record.items() if column in known})
            for index, record in enumerate(records)]
    scope = _Scope(frozenset({company_code}), update_actor=(actor_type, actor))
    return _import_rows(session, kind, rows, _Problems(), scope, actor_type, actor, None)


def _import_rows(session: Session, kind: ImportKind, rows: list[Row], problems: _Problems, scope: _Scope,
                 actor_type: str, actor: str, filename: str | None) -> ImportReport:
    if kind == "customers":
        report = _import_customers(session, rows, problems, scope)
    else:
        report = _import_invoices(session, rows, problems, scope)
    _audit_import(session, report, scope, actor_type, actor, filename)
    return report


@dataclass
class _Scope:
    allowed: frozenset[str] | None
    # who the audit trail names on each record an import updates (a file: the import itself)
    update_actor: tuple[str, str] = ("system", _ACTOR)
    # company id -> customer id -> what this import did to it (for the customers' timelines)
    touched: dict[int, dict[int, dict[str, list[str]]]] = field(default_factory=dict)

    def company(self, companies: dict[str, Company], code: str, line: int, problems: _Problems) -> Company | None:
        if self.allowed is not None and code not in self.allowed:
            # Same words whether or not it exists: a manager learns nothing of other companies.
            problems.add(line, N_("you may not import into company %(company)s"), company=_quoted(code))
            return None
        company = companies.get(code)
        if company is None:
            problems.add(line, N_("unknown company %(company)s"), company=_quoted(code))
        return company

    def note(self, company_id: int, customer_id: int, what: str, label: str) -> None:
        self.touched.setdefault(company_id, {}).setdefault(customer_id, {}).setdefault(what, []).append(label)


_TIMELINE_LABELS = 50  # numbers listed per customer event; the count is always whole


def _audit_import(session: Session, report: ImportReport, scope: _Scope, actor_type: str, actor_name: str,
                  filename: str | None) -> None:
    now = clock.now()
    for company_id, customers in scope.touched.items():
        audit.record(session, actor_type=actor_type, actor=actor_name, action=f"import.{report.kind}",
                     entity_type="company", entity_id=company_id, company_id=company_id,
                     after={"file": filename, "customers": len(customers),
                            "file_totals": {"created": report.created, "updated": report.updated,
                                            "unchanged": report.unchanged}})
        rows = [
            {"actor_type": actor_type, "actor": actor_name, "action": f"import.{report.kind}",
             "entity_type": "customer", "entity_id": customer_id, "customer_id": customer_id,
             "company_id": company_id, "before": None, "created_at": now,
             "after": {"file": filename, **{what: {"count": len(labels), "items": labels[:_TIMELINE_LABELS]}
                                            for what, labels in sorted(changes.items())}}}
            for customer_id, changes in customers.items()
        ]
        insert_rows(session, cast(Table, AuditEvent.__table__), rows)


# --- reading -------------------------------------------------------------------------


@dataclass
class Row:
    """A data line of a file: its number (as a spreadsheet counts them) and its values by column."""

    line: int
    values: dict[str, str]

    def get(self, column: str) -> str:
        return self.values.get(column, "").strip()


@dataclass
class _Problems:
    """Reasons per line, raised together as one `UserErrors`, each reason at its line."""

    by_line: dict[int, list[UserError]] = field(default_factory=dict)

    def add(self, line: int, message: str, /, **values: Any) -> None:
        self.add_reason(line, _reason(message, values))

    def add_reason(self, line: int, reason: UserError) -> None:
        self.by_line.setdefault(line, []).append(reason)

    def __bool__(self) -> bool:
        return bool(self.by_line)

    def has(self, line: int) -> bool:
        return line in self.by_line

    def raise_if_any(self) -> None:
        if self.by_line:
            raise UserErrors([reason.at(line=line) for line, reasons in sorted(self.by_line.items())
                              for reason in reasons])


def _fail(line: int, message: str, /, **values: Any) -> UserErrors:
    return UserErrors([_reason(message, values).at(line=line)])


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        byte = raw[error.start : error.start + 1].hex()
        raise _fail(line, N_("the file is not UTF-8 text (byte 0x%(byte)s); export it as CSV UTF-8"),
                    byte=byte) from None


def _read_rows(kind: ImportKind, raw: bytes) -> tuple[list[Row], _Problems]:
    return read_table(raw, _REQUIRED[kind], _OPTIONAL[kind])


def read_table(raw: bytes, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> tuple[list[Row], _Problems]:
    """The file's data rows by column name, with the problems of lines of the wrong width.

    Shared by every CSV import (customers, invoices, exchange rates): UTF-8, a header row,
    `,` or `;`; raises UserErrors for a file that cannot be read at all.
    """
    text = _decode(raw)
    if not text.strip():
        raise _fail(1, N_("the file is empty"))
    first_line = _NEWLINE.split(text, maxsplit=1)[0]
    # The header has no decimals, so the separator it uses most is the file's.
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as error:
        raise _fail(1, N_("cannot read the header: %(error)s"), error=str(error)) from None
    columns = _check_header(required, optional, header)

    rows: list[Row] = []
    problems = _Problems()
    data_lines = 0
    line_end = reader.line_num
    while True:
        start = line_end + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise _fail(start, N_("cannot read this line: %(error)s"), error=str(error)) from None
        line_end = reader.line_num
        if not any(value.strip() for value in fields):
            continue  # blank lines and spreadsheets' trailing ";;;;" rows carry nothing
        data_lines += 1
        if data_lines > MAX_DATA_LINES:
            raise _fail(1, N_("the file has more than %(limit)s data lines; split it into smaller files"),
                        limit=MAX_DATA_LINES)
        if len(fields) > len(columns):
            problems.add(start, N_("expected %(expected)s values, found %(found)s (a '%(separator)s' inside a value "
                                   "needs quotes)"), expected=len(columns), found=len(fields), separator=delimiter)
            continue
        if len(fields) < len(columns):
            problems.add(start, N_("expected %(expected)s values, found %(found)s"), expected=len(columns),
                         found=len(fields))
            continue
        row = Row(start, dict(zip(columns, fields)))
        for column in columns:
            character = _control_character(row.get(column))
            if character is not None:
                # A line break in a name ends up in email headers and subjects, which then never send.
                problems.add(start, N_("%(column)s contains a line break, tab or other control character "
                                       "(%(character)s); remove it"), column=column, character=character)
        rows.append(row)
    if not rows and not problems:
        raise _fail(1, N_("the file has a header but no data lines"))
    return rows, problems


def _control_character(value: str) -> str | None:
    """The first control character (C0, DEL, C1, line or paragraph separator) in value, as U+XXXX."""
    for character in value:
        if unicodedata.category(character) in ("Cc", "Zl", "Zp"):
            return f"U+{ord(character):04X}"
    return None


def _check_header(required: tuple[str, ...], optional: tuple[str, ...], header: list[str]) -> list[str]:
    columns = [name.strip().lower() for name in header]
    problems: list[UserError] = []
    for position, name in enumerate(columns, start=1):
        if not name:
            problems.append(_reason(N_("column %(position)s has no name"), {"position": position}))
        elif name not in required and name not in optional:
            problems.append(_reason(N_("unknown column %(column)s"), {"column": _quoted(name)}))
    duplicated = sorted({name for name in columns if name and columns.count(name) > 1})
    if duplicated:
        problems.append(_reason(N_("duplicated column(s) %(columns)s"), {"columns": ", ".join(duplicated)}))
    missing = [name for name in required if name not in columns]
    if missing:
        problems.append(_reason(N_("missing column(s) %(columns)s"), {"columns": ", ".join(missing)}))
    if problems:
        raise _fail(1, N_("%(problems)s (expected %(columns)s)"), problems=tuple(problems),
                    columns=",".join(required + optional))
    return columns


# --- field parsing -------------------------------------------------------------------


class _Bad(UserError):
    """A bad value of a line, as its parser refuses it (values shown as `_reason` shows them)."""

    def __init__(self, message: str, /, **values: Any) -> None:
        super().__init__(message, **{name: _as_shown(value) for name, value in values.items()})


def _required(row: Row, column: str, max_length: int) -> str:
    value = row.get(column)
    if not value:
        raise _Bad(N_("%(column)s is empty"), column=column)
    return _limited(column, value, max_length)


def _optional(row: Row, column: str, max_length: int) -> str | None:
    value = row.get(column)
    return _limited(column, value, max_length) if value else None


def _limited(column: str, value: str, max_length: int) -> str:
    if len(value) > max_length:
        raise _Bad(N_("%(column)s is longer than %(max)s characters"), column=column, max=max_length)
    return value


def _date(row: Row, column: str) -> date | None:
    value = row.get(column)
    if not value:
        return None
    if _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _Bad(N_("%(column)s %(value)s is not a date (expected YYYY-MM-DD)"), column=column, value=_quoted(value))


def _required_date(row: Row, column: str) -> date:
    value = _date(row, column)
    if value is None:
        raise _Bad(N_("%(column)s is empty"), column=column)
    return value


def _discount_bps(row: Row) -> int | None:
    column = "discount_percent"
    value = row.get(column).replace(" ", "").removesuffix("%")
    if not value:
        return None
    normalized = value.replace(",", ".")
    if not _PERCENT.match(normalized):
        raise _Bad(N_("%(column)s %(value)s is not a number"), column=column, value=_quoted(value))
    percent = Decimal(normalized)
    bps = percent.scaleb(2)
    if bps != bps.to_integral_value():
        raise _Bad(N_("%(column)s %(value)s has more than %(places)s decimals"), column=column,
                   value=_quoted(value), places=2)
    if not 0 < percent < 100:
        raise _Bad(N_("%(column)s %(value)s must be above 0 and below 100"), column=column, value=_quoted(value))
    return int(bps)


def _collect(problems: _Problems, line: int, parse: Callable[..., T], *args: Any) -> T | None:
    """parse(*args), or None with the reason recorded against the line."""
    try:
        return parse(*args)
    except _Bad as error:
        problems.add_reason(line, error)
        return None


def _chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _load_companies(session: Session, codes: Iterable[str]) -> dict[str, Company]:
    wanted = sorted(set(codes))
    found: dict[str, Company] = {}
    for chunk in _chunks(wanted):
        for company in session.scalars(select(Company).where(Company.code.in_(chunk))):
            found[company.code] = company
    return found


def _changes(current: dict[str, Any], wanted: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    before = {key: current[key] for key in wanted if current[key] != wanted[key]}
    after = {key: wanted[key] for key in before}
    return before, after


# --- customers -----------------------------------------------------------------------


@dataclass(frozen=True)
class _CustomerLine:
    line: int
    company_code: str
    ref: str
    name: str
    email: str
    language: str | None  # None: the company's default, known once companies are loaded
    phone: str | None
    segment: str | None


def _parse_customer(row: Row, problems: _Problems) -> _CustomerLine | None:
    line = row.line
    company_code = _collect(problems, line, _required, row, "company", 32)
    ref = _collect(problems, line, _required, row, "customer_ref", 64)
    name = _collect(problems, line, _required, row, "name", 200)
    email = _collect(problems, line, _required, row, "email", 254)
    if email is not None and not _EMAIL.match(email):
        problems.add(line, N_("%(column)s %(value)s is not an email address (one address per line)"),
                     column="email", value=_quoted(email))
    language = row.get("language").lower() or None
    if language is not None and language not in _LANGUAGES:
        problems.add(line, N_("%(column)s %(value)s must be fr or en"), column="language",
                     value=_quoted(row.get("language")))
    phone = _collect(problems, line, _optional, row, "phone", 40)
    segment = _collect(problems, line, _optional, row, "segment", 64)
    # A required value that is None has its reason recorded already: the checks only narrow the types.
    if problems.has(line) or company_code is None or ref is None or name is None or email is None:
        return None
    return _CustomerLine(line, company_code, ref, name, email, language, phone, segment)


def _customer_values(parsed: _CustomerLine, company: Company) -> dict[str, Any]:
    language = parsed.language or ("fr" if company.country == "FR" else "en")
    return {
        "name": parsed.name,
        "language": language,
        "segment": parsed.segment,
        "email": parsed.email,
        "phone": parsed.phone,
        "contact_language": language,
    }


def _current_customer_values(customer: Customer) -> dict[str, Any]:
    contact = customer.primary_contact
    return {
        "name": customer.name,
        "language": customer.language,
        "segment": customer.segment,
        "email": contact.email if contact else None,
        "phone": contact.phone if contact else None,
        "contact_language": contact.language if contact else None,
    }


def _import_customers(session: Session, rows: list[Row], problems: _Problems, scope: _Scope) -> ImportReport:
    parsed = [p for p in (_parse_customer(row, problems) for row in rows) if p is not None]
    companies = _load_companies(session, (p.company_code for p in parsed))

    # (company id, ref) -> (first line, wanted values)
    wanted: dict[tuple[int, str], tuple[int, dict[str, Any]]] = {}
    for p in parsed:
        company = scope.company(companies, p.company_code, p.line, problems)
        if company is None:
            continue
        values = _customer_values(p, company)
        key = (company.id, p.ref)
        earlier = wanted.get(key)
        if earlier is None:
            wanted[key] = (p.line, values)
        elif earlier[1] != values:
            problems.add(p.line, N_("customer %(ref)s is already on line %(line)s with different values"),
                         ref=_quoted(p.ref), line=str(earlier[0]))
    problems.raise_if_any()

    existing = _load_customers(session, wanted.keys())
    report = ImportReport("customers")
    new: list[tuple[int, str, dict[str, Any]]] = []
    for (company_id, ref), (_, values) in wanted.items():
        customer = existing.get((company_id, ref))
        if customer is None:
            new.append((company_id, ref, values))
            report.created += 1
            continue
        before, after = _changes(_current_customer_values(customer), values)
        if not before:
            report.unchanged += 1
            continue
        scope.note(company_id, customer.id, "updated", ", ".join(sorted(after)))
        _update_customer(customer, values)
        audit.record(
            session,
            actor_type=scope.update_actor[0],
            actor=scope.update_actor[1],
            action="customer.updated",
            entity_type="customer",
            entity_id=customer.id,
            customer_id=customer.id,
            before=before,
            after=after,
        )
        report.updated += 1
    session.flush()
    for (company_id, _ref, _values), customer_id in zip(new, _insert_customers(session, new), strict=True):
        scope.note(company_id, customer_id, "created", _ref)
    return report


def _insert_customers(session: Session, new: list[tuple[int, str, dict[str, Any]]]) -> list[int]:
    # Bulk INSERT ... RETURNING: building one ORM object per line is what makes big files slow.
    if not new:
        return []
    customer_rows = [
        {"company_id": company_id, "ref": ref, "name": values["name"], "language": values["language"],
         "segment": values["segment"]}
        for company_id, ref, values in new
    ]
    returning = insert(Customer).returning(Customer.id, sort_by_parameter_order=True)
    ids = session.scalars(returning, customer_rows).all()
    contact_rows = [
        {"customer_id": customer_id, "email": values["email"], "phone": values["phone"],
         "language": values["contact_language"], "is_primary": True}
        for customer_id, (_, _, values) in zip(ids, new, strict=True)
    ]
    session.execute(insert(Contact), contact_rows)
    return list(ids)


def _load_customers(session: Session, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Customer]:
    refs_by_company: dict[int, list[str]] = {}
    for company_id, ref in keys:
        refs_by_company.setdefault(company_id, []).append(ref)
    found: dict[tuple[int, str], Customer] = {}
    for company_id, refs in refs_by_company.items():
        for chunk in _chunks(refs):
            query = (
                select(Customer)
                .where(Customer.company_id == company_id, Customer.ref.in_(chunk))
                .options(selectinload(Customer.contacts))
            )
            for customer in session.scalars(query):
                found[(company_id, customer.ref)] = customer
    return found


def _update_customer(customer: Customer, values: dict[str, Any]) -> None:
    customer.name = values["name"]
    customer.language = values["language"]
    customer.segment = values["segment"]
    contact = customer.primary_contact
    if contact is None:
        customer.contacts.append(
            Contact(email=values["email"], phone=values["phone"], language=values["contact_language"], is_primary=True)
        )
        return
    if contact.email != values["email"]:
        # Links already sent went to the old address: they must stop opening the portal.
        contact.link_version += 1
        # A new address has not failed yet.
        contact.email_failing_since = contact.email_failure = None
    contact.email = values["email"]
    contact.phone = values["phone"]
    contact.language = values["contact_language"]


# --- invoices ------------------------------------------------------------------------


@dataclass(frozen=True)
class _InvoiceLine:
    line: int
    company_code: str
    customer_ref: str
    number: str
    kind: str
    issue_date: date
    due_date: date
    currency: str
    total_minor: int
    discount_bps: int | None
    discount_until: date | None

    def content(self) -> tuple[Any, ...]:
        return (self.customer_ref, self.kind, self.issue_date, self.due_date, self.currency, self.total_minor,
                self.discount_bps, self.discount_until)


def _parse_amount(row: Row, currency: str) -> int:
    column = "amount"
    text = row.get(column)
    if _EXPONENT.search(text):
        # Spreadsheets write big numbers as 1,23E+05: the digits they dropped are gone.
        raise _Bad(N_("%(column)s %(value)s is in scientific notation; format the column as a plain number"),
                   column=column, value=_quoted(text))
    if not text:
        raise _Bad(N_("%(column)s is empty"), column=column)
    try:
        minor = Money.parse(text, currency).minor
    except AmountError as error:
        # Money.parse refuses a number with more decimals than the currency has, or no number.
        if "places" in error.values:
            raise _Bad(N_("%(value)s has more than %(places)s decimals for %(currency)s"), value=_quoted(text),
                       places=decimals(currency), currency=currency, column=column) from None
        raise _Bad(N_("%(value)s is not an amount"), value=_quoted(text), column=column) from None
    if minor <= 0:
        raise _Bad(N_("%(column)s must be positive"), column=column)
    if minor > _MAX_MINOR:
        raise _Bad(N_("%(column)s %(value)s is too large"), column=column, value=_quoted(text))
    return minor


def _currency(code: str) -> str | None:
    try:
        return check_currency(code)
    except CurrencyError:
        return None


def _parse_currency(row: Row) -> str:
    code = row.get("currency")
    if not code:
        raise _Bad(N_("%(column)s is empty"), column="currency")
    currency = _currency(code)
    if currency is None:
        raise _Bad(N_("unknown currency %(value)s"), value=_quoted(code), column="currency")
    return currency


_KINDS = frozenset(k.value for k in InvoiceKind)


def _parse_kind(row: Row) -> str:
    value = row.get("type").lower() or InvoiceKind.invoice.value
    if value not in _KINDS:
        raise _Bad(N_("%(column)s %(value)s must be invoice or credit_note"), column="type",
                   value=_quoted(row.get("type")))
    return value


def _parse_invoice(row: Row, problems: _Problems) -> _InvoiceLine | None:
    line = row.line
    company_code = _collect(problems, line, _required, row, "company", 32)
    customer_ref = _collect(problems, line, _required, row, "customer_ref", 64)
    number = _collect(problems, line, _required, row, "number", 64)
    kind = _collect(problems, line, _parse_kind, row)
    issue_date = _collect(problems, line, _required_date, row, "issue_date")
    due_date = _collect(problems, line, _required_date, row, "due_date")
    if issue_date is not None and due_date is not None and due_date < issue_date:
        problems.add(line, N_("due_date %(due_date)s is before issue_date %(issue_date)s"),
                     due_date=due_date.isoformat(), issue_date=issue_date.isoformat(), column="due_date")

    currency = _collect(problems, line, _parse_currency, row)
    total_minor = _collect(problems, line, _parse_amount, row, currency) if currency else None

    discount_bps = _collect(problems, line, _discount_bps, row)
    discount_until = _collect(problems, line, _date, row, "discount_until")
    percent_given, until_given = bool(row.get("discount_percent")), bool(row.get("discount_until"))
    if kind == InvoiceKind.credit_note.value and (percent_given or until_given):
        problems.add(line, N_("a credit note cannot carry a discount"))
    elif percent_given and not until_given:
        problems.add(line, N_("discount_until is empty but discount_percent is given"))
    elif until_given and not percent_given:
        problems.add(line, N_("discount_percent is empty but discount_until is given"))

    # A required value that is None has its reason recorded already: the checks only narrow the types.
    if (problems.has(line) or company_code is None or customer_ref is None or number is None or kind is None
            or issue_date is None or due_date is None or currency is None or total_minor is None):
        return None
    return _InvoiceLine(line, company_code, customer_ref, number, kind, issue_date, due_date, currency,
                        total_minor, discount_bps, discount_until)


def _import_invoices(session: Session, rows: list[Row], problems: _Problems, scope: _Scope) -> ImportReport:
    parsed = [p for p in (_parse_invoice(row, problems) for row in rows) if p is not None]
    companies = _load_companies(session, (p.company_code for p in parsed))
    if scope.allowed is not None:
        companies = {code: company for code, company in companies.items() if code in scope.allowed}
    parsed = [_with_default_terms(p, companies.get(p.company_code)) for p in parsed]
    known = [p for p in parsed if p.company_code in companies]
    customer_ids = _load_customer_ids(session, ((companies[p.company_code].id, p.customer_ref) for p in known))
    existing = _load_invoices(session, ((companies[p.company_code].id, p.number) for p in known))

    # (company id, number) -> the line that first gave it
    wanted: dict[tuple[int, str], _InvoiceLine] = {}
    for p in parsed:
        company = scope.company(companies, p.company_code, p.line, problems)
        if company is None:
            continue
        if (company.id, p.customer_ref) not in customer_ids:
            problems.add(p.line, N_("unknown customer %(ref)s in company %(company)s"), ref=_quoted(p.customer_ref),
                         company=company.code, column="customer_ref")
        key = (company.id, p.number)
        earlier = wanted.get(key)
        if earlier is not None:
            if earlier.content() != p.content():
                message = _by_kind(p.kind, N_("invoice %(number)s is already on line %(line)s with different values"),
                                   N_("credit note %(number)s is already on line %(line)s with different values"))
                problems.add(p.line, message, number=p.number, line=str(earlier.line))
            continue
        found = existing.get(key)
        if found is not None:
            conflict = _conflict(p, found)
            if conflict:
                problems.add_reason(p.line, conflict)
        if not problems.has(p.line):
            wanted[key] = p
    problems.raise_if_any()

    report = ImportReport("invoices")
    new: list[dict[str, Any]] = []
    updates: list[tuple[_Existing, _InvoiceLine]] = []
    for (company_id, number), p in wanted.items():
        found = existing.get((company_id, number))
        if found is None:
            new.append(
                {
                    "company_id": company_id,
                    "customer_id": customer_ids[(company_id, p.customer_ref)],
                    "kind": p.kind,
                    "number": p.number,
                    "issue_date": p.issue_date,
                    "due_date": p.due_date,
                    "currency": p.currency,
                    "total_minor": p.total_minor,
                    "open_minor": p.total_minor,
                    "status": InvoiceStatus.open.value,
                    "discount_bps": p.discount_bps,
                    "discount_until": p.discount_until,
                }
            )
            report.created += 1
            scope.note(company_id, customer_ids[(company_id, p.customer_ref)], "created", p.number)
        elif _differs(found, p):
            updates.append((found, p))
            report.updated += 1
            scope.note(company_id, found.customer_id, "updated", p.number)
        else:
            report.unchanged += 1
    session.flush()
    if updates:
        _update_invoices(session, updates, scope.update_actor)
    if new:
        _insert_invoices(session, new)
    return report


def _insert_invoices(session: Session, new: list[dict[str, Any]]) -> None:
    """The new invoices in one bulk write (`kernel.db.insert_rows`: a COPY on PostgreSQL, so the
    running totals' statement triggers fire once, not once per invoice; an executemany elsewhere):
    one ORM object per line is what makes big files slow."""
    table = cast(Table, Invoice.__table__)
    insert_rows(session, table, new)
    analyze_if_outgrown(session, table, len(new))  # a first load into an empty book


def _with_default_terms(p: _InvoiceLine, company: Company | None) -> _InvoiceLine:
    """An invoice line without discount columns takes its company's default early-payment terms
    (percent, and days after the issue date), so importing it again compares equal."""
    if (company is None or p.kind != InvoiceKind.invoice.value or p.discount_bps is not None
            or p.discount_until is not None or not company.default_discount_bps or not company.default_discount_days):
        return p
    return replace(p, discount_bps=company.default_discount_bps,
                   discount_until=p.issue_date + timedelta(days=company.default_discount_days))


def _by_kind(kind: str, invoice: str, credit_note: str) -> str:
    """The message for an invoice or for a credit note: languages word them apart."""
    return credit_note if kind == InvoiceKind.credit_note.value else invoice


def _conflict(p: _InvoiceLine, invoice: _Existing) -> UserError | None:
    """Why this line cannot update the existing invoice with its number, if it cannot."""
    kind = invoice.kind
    if invoice.customer_ref != p.customer_ref:
        return _reason(_by_kind(kind, N_("invoice %(number)s already exists for customer %(ref)s"),
                               N_("credit note %(number)s already exists for customer %(ref)s")),
                      {"number": p.number, "ref": invoice.customer_ref})
    if kind != p.kind:
        return _reason(_by_kind(kind, N_("%(number)s already exists as an invoice, not a credit note"),
                               N_("%(number)s already exists as a credit note, not an invoice")), {"number": p.number})
    if invoice.currency != p.currency:
        return _reason(_by_kind(kind, N_("invoice %(number)s already exists in %(currency)s"),
                               N_("credit note %(number)s already exists in %(currency)s")),
                      {"number": p.number, "currency": invoice.currency})
    settled = invoice.total_minor - invoice.open_minor
    if p.total_minor < settled:
        return _reason(_by_kind(kind, N_("amount %(amount)s is below the %(settled)s already settled on invoice "
                                        "%(number)s"),
                               N_("amount %(amount)s is below the %(settled)s already settled on credit note "
                                  "%(number)s")),
                      {"amount": Money(p.total_minor, p.currency), "settled": Money(settled, p.currency),
                       "number": p.number})
    return None


def _load_customer_ids(session: Session, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], int]:
    refs_by_company: dict[int, set[str]] = {}
    for company_id, ref in keys:
        refs_by_company.setdefault(company_id, set()).add(ref)
    found: dict[tuple[int, str], int] = {}
    for company_id, refs in refs_by_company.items():
        for chunk in _chunks(sorted(refs)):
            query = select(Customer.id, Customer.ref).where(Customer.company_id == company_id, Customer.ref.in_(chunk))
            for customer_id, ref in session.execute(query):
                found[(company_id, ref)] = customer_id
    return found


@dataclass(frozen=True)
class _Existing:
    """What an import reads of an invoice it may update: plain values, not an ORM object (the
    identity map's bookkeeping per object was most of the cost of a large update)."""

    id: int
    company_id: int
    customer_id: int
    customer_ref: str
    kind: str
    currency: str
    issue_date: date
    due_date: date
    total_minor: int
    open_minor: int
    status: str
    discount_bps: int | None
    discount_until: date | None

    def terms(self) -> dict[str, Any]:
        return {"issue_date": self.issue_date, "due_date": self.due_date, "total_minor": self.total_minor,
                "open_minor": self.open_minor, "status": self.status, "discount_bps": self.discount_bps,
                "discount_until": self.discount_until}


def _load_invoices(session: Session, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], _Existing]:
    """Existing invoices by (company id, number), each with its customer's ref."""
    numbers_by_company: dict[int, set[str]] = {}
    for company_id, number in keys:
        numbers_by_company.setdefault(company_id, set()).add(number)
    found: dict[tuple[int, str], _Existing] = {}
    for company_id, numbers in numbers_by_company.items():
        for chunk in _chunks(sorted(numbers)):
            query = (
                select(Invoice.id, Invoice.company_id, Invoice.customer_id, Customer.ref, Invoice.kind,
                       Invoice.currency, Invoice.issue_date, Invoice.due_date, Invoice.total_minor,
                       Invoice.open_minor, Invoice.status, Invoice.discount_bps, Invoice.discount_until,
                       Invoice.number)
                .join(Customer, Invoice.customer_id == Customer.id)
                .where(Invoice.company_id == company_id, Invoice.number.in_(chunk))
            )
            for (invoice_id, company, customer_id, ref, kind, currency, issue_date, due_date, total_minor, open_minor,
                 status, discount_bps, discount_until, number) in session.execute(query):
                found[(company_id, number)] = _Existing(
                    invoice_id, company, customer_id, ref, kind, currency, issue_date, due_date, total_minor,
                    open_minor, status, discount_bps, discount_until)
    return found


def _invoice_state(values: Mapping[str, Any]) -> dict[str, Any]:
    """An invoice's terms as its audit rows show them."""
    until = values["discount_until"]
    return {
        "issue_date": values["issue_date"].isoformat(),
        "due_date": values["due_date"].isoformat(),
        "total_minor": values["total_minor"],
        "open_minor": values["open_minor"],
        "status": values["status"],
        "discount_bps": values["discount_bps"],
        "discount_until": until.isoformat() if until else None,
    }


def _differs(invoice: _Existing, p: _InvoiceLine) -> bool:
    current = (invoice.issue_date, invoice.due_date, invoice.total_minor, invoice.discount_bps, invoice.discount_until)
    return current != (p.issue_date, p.due_date, p.total_minor, p.discount_bps, p.discount_until)


_UPDATABLE = ("issue_date", "due_date", "total_minor", "open_minor", "discount_bps", "discount_until", "status")


def _update_invoices(session: Session, updates: list[tuple[_Existing, _InvoiceLine]],
                     actor: tuple[str, str]) -> None:
    """Apply the lines' terms to existing invoices that differ, each with its `invoice.updated`
    audit row, in batched statements (`kernel.db.update_rows`) rather than through the ORM one
    object at a time; what payments, credit notes and discounts already settled stays settled.
    Only the columns that changed are written (invoices grouped by which changed), so indexes and
    the running-total triggers on other columns are left alone."""
    now = clock.now()
    params: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    audits: list[dict[str, Any]] = []
    for invoice, p in updates:
        open_minor = p.total_minor - (invoice.total_minor - invoice.open_minor)
        values: dict[str, Any] = {
            "issue_date": p.issue_date, "due_date": p.due_date, "total_minor": p.total_minor, "open_minor": open_minor,
            "discount_bps": p.discount_bps, "discount_until": p.discount_until,
            "status": status_of(invoice.status, open_minor, p.total_minor)}
        current = invoice.terms()
        changed = tuple(name for name in _UPDATABLE if values[name] != current[name])
        before, after = _changes(_invoice_state(current), _invoice_state(values))
        params.setdefault(changed, []).append({"id": invoice.id, "updated_at": now}
                                              | {name: values[name] for name in changed})
        audits.append({"actor_type": actor[0], "actor": actor[1], "action": "invoice.updated",
                       "entity_type": "invoice", "entity_id": invoice.id, "customer_id": invoice.customer_id,
                       "company_id": invoice.company_id, "before": before, "after": after, "created_at": now})
    table = cast(Table, Invoice.__table__)
    for rows in params.values():
        update_rows(session, table, ("id",), rows)
    ids = insert_rows_with_ids(session, cast(Table, AuditEvent.__table__), audits)
    queue_deliveries_for_ids(session, [(event_id, row["company_id"], row["action"])
                                       for event_id, row in zip(ids, audits)])
    # Invoices this session already holds are read again when next used: the rows changed under them.
    for invoice, _ in updates:
        held = session.identity_map.get(identity_key(Invoice, invoice.id))
        if held is not None:
            session.expire(held)


# --- contacts ------------------------------------------------------------------------


@dataclass(frozen=True)
class _ContactLine:
    line: int
    ref: str
    email: str
    name: str | None
    phone: str | None
    language: str | None  # None: the customer's language
    role: str
    receives_reminders: bool


def _parse_contact(row: Row, problems: _Problems) -> _ContactLine | None:
    line = row.line
    ref = _collect(problems, line, _required, row, "customer_ref", 64)
    email = _collect(problems, line, _required, row, "email", 254)
    if email is not None and not _EMAIL.match(email):
        problems.add(line, N_("%(column)s %(value)s is not an email address (one address per line)"),
                     column="email", value=_quoted(email))
    name = _collect(problems, line, _optional, row, "name", 200)
    phone = _collect(problems, line, _optional, row, "phone", 40)
    language = row.get("language").lower() or None
    if language is not None and language not in _LANGUAGES:
        problems.add(line, N_("%(column)s %(value)s must be fr or en"), column="language",
                     value=_quoted(row.get("language")))
    role = row.get("role").lower() or ContactRole.other.value
    if role not in CONTACT_ROLES:
        problems.add(line, N_("%(column)s %(value)s must be one of %(choices)s"), column="role",
                     value=_quoted(row.get("role")), choices=", ".join(CONTACT_ROLES))
    flag = row.get("receives_reminders").lower()
    if flag and flag not in _YES and flag not in _NO:
        problems.add(line, N_("%(column)s %(value)s must be yes or no"), column="receives_reminders",
                     value=_quoted(row.get("receives_reminders")))
    if problems.has(line):
        return None
    return _ContactLine(line, ref or "", email or "", name, phone, language, role, flag not in _NO)


def _contact_values(parsed: _ContactLine, customer: Customer) -> dict[str, Any]:
    return {"name": parsed.name, "phone": parsed.phone, "language": parsed.language or customer.language,
            "role": parsed.role, "receives_reminders": parsed.receives_reminders}


def _current_contact_values(contact: Contact) -> dict[str, Any]:
    return {"name": contact.name, "phone": contact.phone, "language": contact.language, "role": contact.role,
            "receives_reminders": contact.receives_reminders}


def import_contacts(session: Session, raw: bytes, *, company_code: str,
                    allowed_companies: Collection[str] | None = None, actor: str | None = None,
                    filename: str | None = None) -> ImportReport:
    """A customer's further contacts, all-or-nothing like the other imports: each line adds a
    contact to the customer `customer_ref` of `company_code`, or updates the one with that email
    (an address already on the customer); contacts the file does not name are left as they are.
    The customers import keeps the primary contact; this one never changes which one is primary."""
    rows, problems = read_table(raw, CONTACT_COLUMNS, CONTACT_OPTIONAL)
    scope = _Scope(None if allowed_companies is None else frozenset(allowed_companies))
    actor_type, actor_name = ("user", actor) if actor else ("system", _ACTOR)
    companies = _load_companies(session, [company_code])
    company = scope.company(companies, company_code, 1, problems)
    if company is None:
        problems.raise_if_any()
    assert company is not None
    parsed = [p for p in (_parse_contact(row, problems) for row in rows) if p is not None]
    customers = _load_customers(session, [(company.id, p.ref) for p in parsed])
    wanted: dict[tuple[int, str], tuple[int, Customer, _ContactLine, dict[str, Any]]] = {}
    for p in parsed:
        customer = customers.get((company.id, p.ref))
        if customer is None:
            problems.add(p.line, N_("unknown customer %(ref)s in company %(company)s"), ref=_quoted(p.ref),
                         company=_quoted(company_code))
            continue
        values = _contact_values(p, customer)
        key = (customer.id, p.email.lower())
        earlier = wanted.get(key)
        if earlier is None:
            wanted[key] = (p.line, customer, p, values)
        elif earlier[3] != values:
            problems.add(p.line, N_("contact %(email)s of customer %(ref)s is already on line %(line)s with "
                                    "different values"), email=_quoted(p.email), ref=_quoted(p.ref),
                         line=str(earlier[0]))
    problems.raise_if_any()

    report = ImportReport("contacts")
    for (_customer_id, email), (_line, customer, p, values) in wanted.items():
        contact = next((c for c in customer.contacts if c.email.lower() == email), None)
        if contact is None:
            contact = Contact(email=p.email, is_primary=not customer.contacts, **values)
            customer.contacts.append(contact)
            scope.note(company.id, customer.id, "created", p.email)
            report.created += 1
            continue
        before, after = _changes(_current_contact_values(contact), values)
        if not before:
            report.unchanged += 1
            continue
        for name, field_value in values.items():
            setattr(contact, name, field_value)
        scope.note(company.id, customer.id, "updated", p.email)
        session.flush()
        audit.record(session, actor_type=scope.update_actor[0], actor=scope.update_actor[1],
                     action="contact.updated", entity_type="contact", entity_id=contact.id,
                     customer_id=customer.id, before=before, after=after)
        report.updated += 1
    session.flush()
    _audit_import(session, report, scope, actor_type, actor_name, filename)
    return report
