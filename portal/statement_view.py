"""The statement page's table rows, formatted once per page in Python.

The page lists every open item (200 and more for some customers); built in the template, each
row cost a dozen attribute lookups through Jinja, several gettext and Babel calls, a discount
computation and ~25 autoescapes. Here each row becomes escaped strings the template only
prints: the messages are translated and escaped once per page, each date and amount formatted
and escaped once (memoized, as `kernel.i18n` memoizes the Babel formatting).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Mapping

from markupsafe import escape

from kernel import i18n
from kernel.i18n import N_
from kernel.templating import status_label
from ledger.models import Invoice, InvoiceStatus
from ledger.money import decimals
from ledger.statement import Statement, available_discount
from payments.checkout import InProgress

# How each method's payment in progress reads (N_: for extraction; translated per page).
METHOD_LABELS = {
    "card": N_("Card payment of %(date)s in progress"),
    "instant_transfer": N_("Instant bank transfer of %(date)s in progress"),
    "direct_debit": N_("Direct debit of %(date)s in progress"),
    "bank_transfer": N_("Bank transfer of %(date)s awaited"),
}


@dataclass(frozen=True, slots=True)
class StatementRow:
    """One line of the table. Every text is HTML already (escaped here): the template prints the
    rows with autoescaping off, since escaping ~25 values per row was a quarter of the page's
    server time. Plain `str` rather than Markup: building a Markup is a Python call too."""

    id: str  # the invoice's id, as text (digits): printed four to six times per row
    css: str  # the row's class: "is-credit", "is-overdue" or ""
    payable: bool  # an invoice (credit notes are not paid)
    ticked: bool  # starts ticked in the pay form
    title: str  # "Invoice F-1" / "Credit note AV-1"
    pay_label: str  # the checkbox's label, "Pay invoice F-1"
    placeholder: str  # the open amount as a decimal, for the partial amount field ("" when not offered)
    issued: str
    due: str
    total: str
    open: str
    late: str  # days overdue, or "—"
    badge_class: str
    badge: str
    discount: str  # the early-payment offer, or ""
    progress: str = ""  # the payment in progress that covers it (a link), or "": it cannot be ticked then
    promise: str = ""  # "Promised for 12 December", or ""
    disputed: str = ""  # "120,00 € under dispute" for an invoice disputed in part, or ""


# A page repeats the same dates and amounts, and pages repeat them: each formatted and escaped once.
@functools.lru_cache(maxsize=8192)
def _day_html(value: date, language: str) -> str:
    return str(escape(i18n.format_day(value, language)))


@functools.lru_cache(maxsize=16384)
def _amount_html(minor: int, currency: str, language: str) -> str:
    return str(escape(i18n.format_minor(minor, currency, language)))


def pick_from(select: str | None, currency: str | None, statement: Statement) -> tuple[str, str]:
    """Which invoices start ticked, from ?select=due|overdue|none&currency=XXX: everything due
    in the first currency unless asked otherwise."""
    pick = select if select is not None else "due"
    pick_currency = currency or (statement.sections[0].currency if statement.sections else "")
    return pick, pick_currency


def payable_here(invoice: Invoice, in_progress: bool) -> bool:
    """An invoice the debtor may start paying: open, not a credit note, no payment on its way."""
    return (not invoice.is_credit_note and invoice.open_minor > 0 and not in_progress
            and invoice.status not in (InvoiceStatus.void.value, InvoiceStatus.paid.value))


def decimal_text(minor: int, currency: str) -> str:
    """Minor units as digits and a point, the way the amount fields show their placeholder."""
    return str(Decimal(minor).scaleb(-decimals(currency)))


def progress_html(progress: InProgress, language: str) -> str:
    """"Bank transfer of 12 March awaited", linking to that payment's page (escaped HTML)."""
    text = i18n.gettext(language, METHOD_LABELS.get(progress.method, METHOD_LABELS["card"]),
                        date=i18n.day_month(progress.day, language))
    return f'<a class="in-progress" href="/portal/pay/{progress.checkout_id}">{escape(text)}</a>'


def statement_rows(
    statement: Statement, language: str, today: date, pick: str, pick_currency: str, partial: bool,
    in_progress: Mapping[int, InProgress] | None = None, promised: Mapping[int, date] | None = None,
) -> dict[str, list[StatementRow]]:
    """Each currency section's rows, in the section's order of lines. An invoice a payment in
    progress covers is shown so and is not payable (never pre-selected)."""
    in_progress = in_progress or {}
    promised = promised or {}
    language = i18n.normalize(language)
    translations = i18n.translations(language)

    def _(message: str) -> str:
        return translations.gettext(message)

    def t(message: str) -> str:
        return str(escape(_(message)))

    # The messages are escaped, then formatted with the escaped number (N_: for extraction).
    invoice_title, credit_title, pay_label = t(N_("Invoice %(number)s")), t(N_("Credit note %(number)s")), t(N_("Pay invoice %(number)s"))
    credit_label, overdue_label, none = t(N_("Credit")), t(N_("Overdue")), "—"
    progress_label = t(N_("Payment in progress"))
    promise_text = t(N_("Promised for %(date)s"))
    part_text = t(N_("%(amount)s under dispute"))
    statuses: dict[str, str] = {}

    def status(value: str) -> str:
        text = statuses.get(value)
        if text is None:
            text = statuses[value] = str(escape(status_label(value, _)))
        return text

    rows: dict[str, list[StatementRow]] = {}
    for section in statement.sections:
        currency = section.currency
        places = decimals(currency)
        pick_section = currency == pick_currency and pick in ("due", "overdue")
        out: list[StatementRow] = []
        rows[currency] = out
        for line in section.lines:
            inv = line.invoice
            late = line.days_overdue
            number = {"number": escape(inv.number)}
            if line.is_credit_note:
                out.append(StatementRow(
                    id=str(inv.id), css="is-credit", payable=False, ticked=False, title=credit_title % number,
                    pay_label="", placeholder="", issued=_day_html(inv.issue_date, language), due=none,
                    total=_amount_html(-inv.total_minor, currency, language), open=_amount_html(-inv.open_minor, currency, language),
                    late=str(late) if late else none, badge_class="badge badge-credit", badge=credit_label,
                    discount="",
                ))
                continue
            disputed = line.is_disputed
            progress = in_progress.get(inv.id)
            if progress is not None:
                badge_class, badge = "badge badge-progress", progress_label
            elif disputed:
                badge_class, badge = "badge badge-disputed", status(inv.status)
            elif late:
                badge_class, badge = "badge badge-overdue", overdue_label
            else:
                badge_class, badge = "badge", status(inv.status)
            offer = available_discount(inv, today) if inv.discount_bps else None
            out.append(StatementRow(
                id=str(inv.id),
                css="is-overdue" if late else "",
                payable=progress is None,
                ticked=progress is None and pick_section and not disputed and (pick == "due" or late > 0),
                title=invoice_title % number,
                pay_label=pay_label % number,
                # digits and a point; what is not disputed
                placeholder=str(Decimal(line.payable_minor).scaleb(-places)) if partial else "",
                issued=_day_html(inv.issue_date, language),
                due=_day_html(inv.due_date, language),
                total=_amount_html(inv.total_minor, currency, language),
                open=_amount_html(inv.open_minor, currency, language),
                late=str(late) if late else none,
                badge_class=badge_class,
                badge=badge,
                discount=t(N_("Pay by %(date)s and save %(amount)s")) % {
                    "date": escape(i18n.day_month(offer.until, language)),
                    "amount": escape(i18n.format_money(offer.amount, language)),
                } if offer and progress is None and not line.disputed_part else "",  # only a whole payment earns it
                progress=progress_html(progress, language) if progress is not None else "",
                promise=promise_text % {"date": escape(i18n.day_month(promised[inv.id], language))}
                if inv.id in promised else "",
                disputed=part_text % {"amount": _amount_html(line.disputed_part, currency, language)}
                if line.disputed_part else "",
            ))
    return rows
