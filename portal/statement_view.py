"""The statement page's table rows, formatted once per page in Python.

The page lists every open item (200 and more for some customers); built in the template, each
row cost a dozen attribute lookups through Jinja, several gettext and Babel calls and a
discount computation. Here each row becomes plain strings the template only prints: the
messages are translated once per page, amounts and dates go through the memoized formatters
of `encours.i18n`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from encours import i18n
from encours.templating import status_label
from ledger.money import decimals
from ledger.statement import Statement, available_discount


@dataclass(frozen=True, slots=True)
class StatementRow:
    id: str  # the invoice's id, as text: printed four to six times per row
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


def pick_from(select: str | None, currency: str | None, statement: Statement) -> tuple[str, str]:
    """Which invoices start ticked, from ?select=due|overdue|none&currency=XXX: everything due
    in the first currency unless asked otherwise."""
    pick = select if select is not None else "due"
    pick_currency = currency or (statement.sections[0].currency if statement.sections else "")
    return pick, pick_currency


def statement_rows(
    statement: Statement, language: str, today: date, pick: str, pick_currency: str, partial: bool
) -> dict[str, list[StatementRow]]:
    """Each currency section's rows, in the section's order of lines."""
    language = i18n.normalize(language)
    translations = i18n.translations(language)

    def _(message: str) -> str:
        return translations.gettext(message)

    invoice_title, credit_title, pay_label = _("Invoice %(number)s"), _("Credit note %(number)s"), _("Pay invoice %(number)s")
    saving = _("Pay by %(date)s and save %(amount)s")
    credit_label, overdue_label = _("Credit"), _("Overdue")
    fmt_day, fmt_minor = i18n.format_day, i18n.format_minor
    rows: dict[str, list[StatementRow]] = {}
    for section in statement.sections:
        currency = section.currency
        places = decimals(currency)
        pick_section = currency == pick_currency and pick in ("due", "overdue")
        out = rows[currency] = []
        for line in section.lines:
            inv = line.invoice
            late = line.days_overdue
            number = {"number": inv.number}
            if line.is_credit_note:
                out.append(StatementRow(
                    id=str(inv.id), css="is-credit", payable=False, ticked=False, title=credit_title % number,
                    pay_label="", placeholder="", issued=fmt_day(inv.issue_date, language), due="—",
                    total=fmt_minor(-inv.total_minor, currency, language),
                    open=fmt_minor(-inv.open_minor, currency, language), late=str(late) if late else "—",
                    badge_class="badge badge-credit", badge=credit_label, discount="",
                ))
                continue
            disputed = line.is_disputed
            if disputed:
                badge_class, badge = "badge badge-disputed", status_label(inv.status, _)
            elif late:
                badge_class, badge = "badge badge-overdue", overdue_label
            else:
                badge_class, badge = "badge", status_label(inv.status, _)
            offer = available_discount(inv, today)
            out.append(StatementRow(
                id=str(inv.id),
                css="is-overdue" if late else "",
                payable=True,
                ticked=pick_section and not disputed and (pick == "due" or late > 0),
                title=invoice_title % number,
                pay_label=pay_label % number,
                placeholder=str(Decimal(inv.open_minor).scaleb(-places)) if partial else "",
                issued=fmt_day(inv.issue_date, language),
                due=fmt_day(inv.due_date, language),
                total=fmt_minor(inv.total_minor, currency, language),
                open=fmt_minor(inv.open_minor, currency, language),
                late=str(late) if late else "—",
                badge_class=badge_class,
                badge=badge,
                discount=saving % {"date": i18n.day_month(offer.until, language),
                                   "amount": i18n.format_money(offer.amount, language)} if offer else "",
            ))
    return rows
