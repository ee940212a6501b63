"""Plain CSV bank exports: one header row, one movement per line, all-or-nothing.

Columns are found by name, in English or French (``date``/``montant``/``devise``/``nom``/
``iban``/``libelle`` …); ``,`` or ``;`` delimits; amounts take ``.`` or ``,`` as the decimal
mark. A signed ``amount`` column, or ``debit`` and ``credit`` columns as French banks export.
Every bad line is reported with its number and reason, and nothing of the file is kept.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from datetime import date, datetime

from stdnum import iban as stdnum_iban

from kernel.i18n import N_
from kernel.user_error import Translated, UserError, UserErrors
from ledger.money import AmountError, CurrencyError, Money, check_currency
from reconciliation.entries import CreditDebit, ParsedEntry, ParsedStatement, within_range
from reconciliation.references import first_rf_reference

# canonical column → accepted headers, after lower-casing, accents removed, spaces → "_"
ALIASES: dict[str, tuple[str, ...]] = {
    "date": ("date", "booking_date", "date_operation", "date_comptable", "date_de_comptabilisation", "transaction_date"),
    "value_date": ("value_date", "date_valeur", "date_de_valeur", "valuta"),
    "amount": ("amount", "montant", "montant_eur", "signed_amount"),
    "debit": ("debit", "debit_amount", "montant_debit"),
    "credit": ("credit", "credit_amount", "montant_credit"),
    "currency": ("currency", "devise", "ccy", "monnaie"),
    "name": ("counterparty_name", "counterparty", "name", "nom", "payer", "payeur", "tiers", "beneficiaire", "emetteur"),
    "iban": ("counterparty_iban", "iban", "iban_tiers", "iban_contrepartie"),
    "text": ("remittance_text", "remittance", "remittance_information", "text", "libelle", "label", "description",
             "motif", "communication", "details"),
    "reference": ("reference", "ref", "structured_reference", "end_to_end_id"),
    "account_iban": ("account_iban", "compte", "iban_compte", "account"),
}
REQUIRED_HINT = "date, amount (or debit and credit), currency"
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%d-%m-%Y")


def _key(header: str) -> str:
    plain = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode().strip().lower()
    return re.sub(r"[^a-z0-9]+", "_", plain).strip("_")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # French spreadsheet exports


def parse(data: bytes) -> list[ParsedStatement]:
    text = _decode(data)
    lines = text.splitlines()
    header_line = next((line for line in lines if line.strip()), "")
    if not header_line:
        raise UserError(N_("the file is empty")).at(line=1)
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader)
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        key = _key(name)
        for canonical, names in ALIASES.items():
            if key in names and canonical not in columns:
                columns[canonical] = index
    # A column no alias names is not read: said on each statement, never dropped silently.
    unread = [name.strip() for index, name in enumerate(header) if index not in columns.values() and name.strip()]
    has_amount = "amount" in columns or ("debit" in columns and "credit" in columns)
    missing = [c for c in ("date", "currency") if c not in columns] + ([] if has_amount else ["amount"])
    if missing:
        found = ", ".join(h.strip() for h in header)
        raise UserError(N_("expected a header row with the columns %(columns)s; missing %(missing)s (found %(found)s)"),
                        columns=REQUIRED_HINT, missing=", ".join(missing),
                        found=found or Translated(N_("nothing"))).at(line=1)

    problems: list[UserError] = []
    rows: list[tuple[str | None, ParsedEntry]] = []
    for row in reader:
        line_no = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        try:
            rows.append(_row(row, columns, line_no))
        except UserError as problem:
            problems.append(problem.at(line=line_no))
    if problems:
        raise UserErrors(problems)
    if not rows:
        raise UserError(N_("the file has a header but no movements")).at(line=2)

    # One statement per account and currency, in the order they first appear.
    groups: dict[tuple[str | None, str], list[ParsedEntry]] = {}
    for account, entry in rows:
        groups.setdefault((account, entry.currency), []).append(entry)
    statements = []
    for (account, currency), entries in groups.items():
        dates = [e.booking_date or e.value_date for e in entries if (e.booking_date or e.value_date)]
        statements.append(
            ParsedStatement(
                format="csv",
                statement_id=None,
                account_iban=account if account and stdnum_iban.is_valid(account) else None,
                account_id=account,
                account_currency=currency,
                from_date=min(dates) if dates else None,
                to_date=max(dates) if dates else None,
                entries=tuple(entries),
                warnings=(f"columns not read: {', '.join(unread)}",) if unread else (),
            )
        )
    return statements


def _cell(row: list[str], columns: dict[str, int], name: str) -> str:
    index = columns.get(name)
    if index is None or index >= len(row):
        return ""
    return " ".join(row[index].split())


def _date(raw: str, column: str) -> date:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(raw, fmt).date()
        except ValueError:
            continue
    raise UserError(N_("%(column)s: expected a date such as 2026-03-31 or 31/03/2026, got %(value)s"), column=column,
                    value=repr(raw))


def _money(raw: str, currency: str, column: str) -> Money:
    negative = raw.startswith("-")
    body = raw.lstrip("+-").strip()
    try:
        money = Money.parse(body, currency)
    except AmountError as exc:
        raise UserError(N_("%(column)s: %(problem)s"), column=column, problem=exc) from None
    try:
        within_range(money.minor, repr(body))
    except UserError as exc:
        raise UserError(N_("%(column)s: %(problem)s"), column=column, problem=exc) from None
    return -money if negative else money


def _row(row: list[str], columns: dict[str, int], line_no: int) -> tuple[str | None, ParsedEntry]:
    try:
        currency = check_currency(_cell(row, columns, "currency"))
    except CurrencyError:
        raise UserError(N_("currency: expected an ISO 4217 code such as EUR, got %(value)s"),
                        value=repr(_cell(row, columns, "currency"))) from None
    raw_date = _cell(row, columns, "date")
    if not raw_date:
        raise UserError(N_("%(column)s: empty"), column="date")
    booking = _date(raw_date, "date")
    raw_value = _cell(row, columns, "value_date")
    value = _date(raw_value, "value_date") if raw_value else booking
    if "amount" in columns:
        raw = _cell(row, columns, "amount")
        if not raw:
            raise UserError(N_("%(column)s: empty"), column="amount")
        amount = _money(raw, currency, "amount")
    else:
        debit, credit = _cell(row, columns, "debit"), _cell(row, columns, "credit")
        if bool(debit) == bool(credit):
            raise UserError(N_("expected an amount in exactly one of the debit and credit columns"))
        amount = -_magnitude(_money(debit, currency, "debit")) if debit else _magnitude(_money(credit, currency, "credit"))
    iban = _cell(row, columns, "iban").replace(" ", "").upper() or None
    if iban and not stdnum_iban.is_valid(iban):
        raise UserError(N_("iban: %(value)s is not a valid IBAN"), value=repr(iban))
    text = _cell(row, columns, "text") or None
    reference = _cell(row, columns, "reference") or None
    rf = first_rf_reference(reference) or first_rf_reference(text)
    account = _cell(row, columns, "account_iban").replace(" ", "").upper() or None
    entry = ParsedEntry(
        amount=amount,
        credit_debit=CreditDebit.DEBIT if amount.minor < 0 else CreditDebit.CREDIT,
        value_date=value,
        booking_date=booking,
        counterparty_name=_cell(row, columns, "name") or None,
        counterparty_iban=iban,
        remittance_text=text,
        structured_reference=rf,
        structured_reference_type="SCOR" if rf else None,
        end_to_end_id=reference if reference and reference != rf else None,
        location=f"line {line_no}",
    )
    return account, entry


def _magnitude(money: Money) -> Money:
    return money if money.minor >= 0 else -money
