"""Reminder messages: scenario texts rendered in a sandboxed Jinja environment, text and HTML.

Scenario subjects and bodies are data written by staff: they are rendered by
`jinja2.sandbox.SandboxedEnvironment` with `StrictUndefined`, and see only the plain values
below, never a model (so no template can walk from a customer to another one).

Placeholders (`PLACEHOLDERS`):

- `{{ customer.name }}`, `{{ customer.ref }}`
- `{{ contact.name }}` (may be empty), `{{ contact.email }}`
- `{{ company.name }}`, `{{ company.support_email }}`, `{{ company.address }}`
- `{{ invoices }}`: every invoice the message lists, overdue ones first, then, under their own
  heading, the ones not yet due (so a grouped message never calls an upcoming invoice overdue);
  also iterable: `{% for row in invoices %}{{ row.number }} {{ row.due_date }} {{ row.open }}
  {{ row.days_late }}{% endfor %}` (days_late is negative for an invoice not yet due)
- `{{ overdue }}`: the overdue invoices listed (number, due date, open amount, days overdue);
  empty when none; `overdue.total` is their total per currency
- `{{ upcoming }}`: the invoices listed that are not yet due (number, due date, open amount, days
  left); empty when none; `upcoming.total`
- `{{ reminded_before }}`: true when every overdue invoice listed was in an earlier reminder, so
  "despite our previous reminder" is true (`{% if reminded_before %}…{% endif %}`)
- `{{ totals }}`: the total chased per currency, e.g. `1 234,56 € · 300,00 $US`; iterable
  (`row.currency`, `row.amount`)
- `{{ savings }}`: early-payment discounts still on offer, one line each; empty when none
  (`{% if savings %}…{% endif %}`); iterable (`row.number`, `row.amount`, `row.until`)
- `{{ late_charges }}`: the statutory late charges per late invoice, as a table, for companies
  in France (interest and the 40 € indemnity, Code de commerce L441-10) and in the United
  Kingdom (interest at base rate + 8 points and £40/£70/£100 compensation, Late Payment of
  Commercial Debts (Interest) Act 1998); empty elsewhere (`dunning.interest`); also
  `late_charges.law` (the sentence citing the law, in the reader's language),
  `late_charges.rate` ("12,15 %") and `late_charges.indemnity` ("40,00 €", France)
- `{{ broken_promise }}`: when the debtor promised to pay some of the invoices listed and did
  not, a sentence saying so ("You promised to pay 1 200,00 € by 12 November; we have not
  received it."); empty otherwise (`{% if broken_promise %}…{% endif %}`); also
  `broken_promise.amount` and `broken_promise.date`
- `{{ link }}`: the debtor's fresh magic link (the HTML part also shows a pay button)
- `{{ today }}`: the run's date, formatted

Each table renders as aligned text in the text part and as an HTML table in the HTML part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jinja2
from babel.numbers import format_decimal
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from dunning import interest
from dunning.template_language import JinjaDetail, ReminderEnvironment
from kernel import i18n
from kernel.i18n import N_
from kernel.user_error import Language, Translated, UserError, UserErrors
from ledger.money import Money, decimals as money_decimals
from ledger.statement import days_overdue

PLACEHOLDERS: dict[str, str] = {
    "customer": "the customer: name, ref",
    "contact": "the contact written to: name, email",
    "company": "the creditor: name, support_email, address",
    "invoices": "the invoices listed: the overdue ones, then the ones not yet due under their own heading",
    "overdue": "table of the overdue invoices listed: number, due_date, open, days_late; total",
    "upcoming": "table of the invoices listed not yet due: number, due_date, open, days_left; total",
    "reminded_before": "true when an earlier reminder listed every overdue invoice of this message",
    "totals": "total chased per currency",
    "savings": "early-payment discounts still on offer",
    "late_charges": "statutory late charges (France L441-10, UK Late Payment Act) per late invoice; rate, law",
    "broken_promise": "when a promise to pay these invoices was broken: a sentence saying so; amount, date",
    "link": "the debtor's magic link",
    "today": "the date of the run",
}
# Attributes a template may read on the plain objects above (checked on save).
ATTRIBUTES: dict[str, frozenset[str]] = {
    "customer": frozenset({"name", "ref"}),
    "contact": frozenset({"name", "email"}),
    "company": frozenset({"name", "support_email", "address"}),
    "late_charges": frozenset({"rate", "indemnity", "law"}),
    "broken_promise": frozenset({"amount", "date"}),
    "overdue": frozenset({"total"}),
    "upcoming": frozenset({"total"}),
}

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def _t(language: str, message: str, **values: object) -> str:
    """gettext in one language; `make i18n` extracts its second argument (babel's `-k _t:2`)."""
    return i18n.gettext(language, message, **values)


# --- facts: what a message is made of, read from the database beforehand ------------------------


@dataclass(frozen=True)
class InvoiceFacts:
    id: int
    number: str
    issue_date: date
    due_date: date
    currency: str
    open_minor: int
    discount_bps: int | None = None
    discount_until: date | None = None
    # An earlier reminder sent after its due date listed it (so "despite our reminder" is true).
    reminded: bool = False

    @property
    def open(self) -> Money:
        return Money(self.open_minor, self.currency)


@dataclass(frozen=True)
class StepTexts:
    id: int | None
    offset_days: int
    tone: str
    whole_balance: bool
    subject_fr: str
    body_fr: str
    subject_en: str
    body_en: str
    may_skip: bool = False

    @property
    def label(self) -> str:
        return f"D{self.offset_days:+d}" if self.offset_days else "D"

    def texts(self, language: str) -> tuple[str, str]:
        if i18n.normalize(language) == "en":
            return self.subject_en, self.body_en
        return self.subject_fr, self.body_fr


@dataclass(frozen=True)
class CompanyView:
    name: str
    support_email: str
    address: str


@dataclass(frozen=True)
class CustomerView:
    name: str
    ref: str


@dataclass(frozen=True)
class ContactView:
    name: str
    email: str


@dataclass(frozen=True)
class PromiseFacts:
    """A promise to pay the debtor broke: how much, by when."""

    promised_for: date
    currency: str
    amount_minor: int


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


# --- the values templates see -------------------------------------------------------------------


def _text_table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths]), *(line(row) for row in rows)])


def _html_table(header: list[str], rows: list[list[str]], right: set[int], foot: list[str] | None = None) -> Markup:
    def cells(tag: str, values: list[str]) -> str:
        return "".join(
            f'<{tag} style="padding:4px 10px;border-bottom:1px solid #d0d7de;'
            f'text-align:{"right" if index in right else "left"}">{escape(value)}</{tag}>'
            for index, value in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    footer = f"<tfoot><tr>{cells('th', foot)}</tr></tfoot>" if foot else ""
    return Markup(
        '<table style="border-collapse:collapse;margin:8px 0">'
        f"<thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody>{footer}</table>"
    )


@dataclass(frozen=True)
class InvoiceRow:
    number: str
    due_date: str
    open: str
    days_late: int
    currency: str


class InvoiceTable(list[InvoiceRow]):
    """Overdue invoices: the last column counts the days overdue. `total`: their total per currency."""

    def __init__(self, rows: Iterable[InvoiceRow], language: str, total: str = "") -> None:
        super().__init__(rows)
        self._language = language
        self.total = total

    def _parts(self) -> tuple[list[str], list[list[str]]]:
        g = self._language
        header = [_t(g, "Invoice"), _t(g, "Due date"), _t(g, "Open amount"),
                  _t(g, "Days overdue")]
        rows = [[row.number, row.due_date, row.open, str(row.days_late)] for row in self]
        return header, rows

    def __str__(self) -> str:
        return _text_table(*self._parts(), right={2, 3}) if self else ""

    def __html__(self) -> Markup:
        return _html_table(*self._parts(), right={2, 3}) if self else Markup("")


class UpcomingTable(InvoiceTable):
    """Invoices not yet due: the last column counts the days left."""

    def _parts(self) -> tuple[list[str], list[list[str]]]:
        g = self._language
        header = [_t(g, "Invoice"), _t(g, "Due date"), _t(g, "Open amount"), _t(g, "Days left")]
        return header, [[row.number, row.due_date, row.open, str(-row.days_late)] for row in self]


class InvoiceSections(list[InvoiceRow]):
    """Every invoice listed: the overdue table, then the not yet due one under its own heading."""

    def __init__(self, overdue: InvoiceTable, upcoming: UpcomingTable, language: str) -> None:
        super().__init__([*overdue, *upcoming])
        self.overdue = overdue
        self.upcoming = upcoming
        self._language = language

    def _heading(self) -> str:
        return _t(self._language, "Not yet due:")

    def __str__(self) -> str:
        if not self.upcoming:
            return str(self.overdue)
        upcoming = f"{self._heading()}\n\n{self.upcoming}"
        return f"{self.overdue}\n\n{upcoming}" if self.overdue else upcoming

    def __html__(self) -> Markup:
        if not self.upcoming:
            return self.overdue.__html__()
        # A table keeps its own paragraph (see _paragraphs): the heading goes in one of its own.
        upcoming = Markup("{}\n\n{}").format(self._heading(), self.upcoming.__html__())
        return Markup("{}\n\n{}").format(self.overdue.__html__(), upcoming) if self.overdue else upcoming


@dataclass(frozen=True)
class TotalRow:
    currency: str
    amount: str


class Totals(list[TotalRow]):
    def __str__(self) -> str:
        return " · ".join(row.amount for row in self)

    def __html__(self) -> Markup:
        return Markup("<strong>{}</strong>").format(str(self))


@dataclass(frozen=True)
class SavingRow:
    number: str
    amount: str
    until: str
    sentence: str


class Savings(list[SavingRow]):
    def __str__(self) -> str:
        return "\n".join(f"- {row.number}: {row.sentence}" for row in self)

    def __html__(self) -> Markup:
        items = "".join(f"<li>{escape(row.number)}: {escape(row.sentence)}</li>" for row in self)
        return Markup(f"<ul>{items}</ul>") if items else Markup("")


@dataclass(frozen=True)
class LateChargeRow:
    number: str
    days_late: int
    interest: str
    indemnity: str
    rate: str = ""


class LateChargesTable(list[LateChargeRow]):
    """The late charges per invoice; `law` is the sentence citing the statute, `rate` the annual
    rate (the highest when invoices bear different ones), `indemnity` the French fixed sum."""

    def __init__(self, rows: Iterable[LateChargeRow], language: str, rate: str, indemnity: str,
                 total_rows: list[str], law: str = "") -> None:
        super().__init__(rows)
        self._language = language
        self.rate = rate
        self.indemnity = indemnity
        self.law = law
        self._total_rows = total_rows

    def _parts(self) -> tuple[list[str], list[list[str]]]:
        g = self._language
        header = [_t(g, "Invoice"), _t(g, "Days overdue"), _t(g, "Annual rate"), _t(g, "Late-payment interest"),
                  _t(g, "Recovery indemnity")]
        return header, [[row.number, str(row.days_late), row.rate, row.interest, row.indemnity] for row in self]

    def __str__(self) -> str:
        header, rows = self._parts()
        table = _text_table(header, rows, right={1, 2, 3, 4})
        return table + "".join(f"\n{line}" for line in self._total_rows)

    def __html__(self) -> Markup:
        header, rows = self._parts()
        table = _html_table(header, rows, right={1, 2, 3, 4})
        totals = "".join(f"<br>{escape(line)}" for line in self._total_rows)
        return Markup(f"{table}<p>{totals[4:]}</p>") if totals else table


class BrokenPromise:
    """The sentence about a broken promise; empty (and false) when there is none."""

    def __init__(self, sentence: str = "", amount: str = "", date: str = "") -> None:
        self.sentence = sentence
        self.amount = amount
        self.date = date

    def __bool__(self) -> bool:
        return bool(self.sentence)

    def __str__(self) -> str:
        return self.sentence

    def __html__(self) -> Markup:
        return Markup("<strong>{}</strong>").format(self.sentence) if self.sentence else Markup("")


def available_saving(invoice: InvoiceFacts, today: date) -> Money | None:
    """The early-payment discount on paying the whole open amount today (as ledger.statement's)."""
    if not invoice.discount_bps or invoice.discount_until is None or today > invoice.discount_until:
        return None
    saving = invoice.open.percent_bps(invoice.discount_bps)
    return saving if saving.minor > 0 else None


@lru_cache(maxsize=64)
def format_rate(rate_bps: int, language: str) -> str:
    value = format_decimal(Decimal(rate_bps).scaleb(-2), format="0.00",
                           locale=i18n.FORMAT_LOCALES[i18n.normalize(language)])
    return f"{value}\u00a0%" if i18n.normalize(language) == "fr" else f"{value}%"


def totals_by_currency(invoices: Iterable[InvoiceFacts]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for invoice in invoices:
        totals[invoice.currency] = totals.get(invoice.currency, 0) + invoice.open_minor
    return totals


@lru_cache(maxsize=256)
def _money_shape(currency: str, language: str) -> tuple[str, str, str, str, int] | None:
    """(prefix, group separator, decimal separator, suffix, decimals) of Babel's format for this
    currency and language, learnt from one sample; None when the sample does not read back."""
    places = money_decimals(currency)
    sample = i18n.format_money(Money(int("1234567" + "8" * places), currency), language)
    match = re.fullmatch(r"(\D*?)1(\D?)234(\D?)567" + (r"(\D+)" + "8" * places if places else "()") + r"(\D*)", sample)
    if match is None or match.group(2) != match.group(3):
        return None
    return match.group(1), match.group(2), match.group(4), match.group(5), places


def _format_money(minor: int, currency: str, language: str) -> str:
    """Same text as i18n.format_money, without Babel's cost per call (a run formats thousands)."""
    shape = _money_shape(currency, language)
    if shape is None or minor < 0:
        return i18n.format_money(Money(minor, currency), language)
    prefix, group, point, suffix, places = shape
    whole, fraction = divmod(minor, 10**places) if places else (minor, 0)
    digits = f"{whole:,}".replace(",", group)
    return f"{prefix}{digits}{point}{fraction:0{places}d}{suffix}" if places else f"{prefix}{digits}{suffix}"


def build_context(
    *,
    language: str,
    today: date,
    company: CompanyView,
    country: str,
    base_currency: str,
    customer: CustomerView,
    contact: ContactView,
    invoices: list[InvoiceFacts],
    all_open: list[InvoiceFacts],
    link: str,
    needed: frozenset[str] | None = None,
    broken_promise: PromiseFacts | None = None,
) -> dict[str, Any]:
    """The template context for one message; `all_open` gives the savings still on offer.

    `needed`: the placeholders the texts use (None: all); the costly ones are left empty otherwise.
    """
    language = i18n.normalize(language)
    money = lambda m: _format_money(m.minor, m.currency, language)  # noqa: E731
    day = lambda d: i18n.format_day(d, language)  # noqa: E731 - cached there
    ordered = sorted(invoices, key=lambda i: (i.currency != base_currency, i.currency, i.due_date, i.number))

    def totals_of(chosen: list[InvoiceFacts]) -> Totals:
        return Totals(
            TotalRow(currency=currency, amount=money(Money(minor, currency)))
            for currency, minor in sorted(totals_by_currency(chosen).items(),
                                          key=lambda item: (item[0] != base_currency, item[0]))
        )

    def rows(chosen: list[InvoiceFacts]) -> list[InvoiceRow]:
        return [InvoiceRow(number=i.number, due_date=day(i.due_date), open=money(i.open),
                           days_late=(today - i.due_date).days, currency=i.currency) for i in chosen]

    late = [i for i in ordered if days_overdue(i.due_date, today) > 0]
    not_due = [i for i in ordered if days_overdue(i.due_date, today) <= 0]
    overdue = InvoiceTable(rows(late), language, total=str(totals_of(late)))
    upcoming = UpcomingTable(rows(not_due), language, total=str(totals_of(not_due)))
    table = InvoiceSections(overdue, upcoming, language)
    totals = totals_of(ordered)
    reminded_before = bool(late) and all(invoice.reminded for invoice in late)
    savings = Savings()
    for invoice in [] if needed is not None and "savings" not in needed else sorted(all_open, key=lambda i: (i.discount_until or today, i.number)):
        saving = available_saving(invoice, today)
        if saving is not None and invoice.discount_until is not None:
            savings.append(SavingRow(
                number=invoice.number, amount=money(saving), until=day(invoice.discount_until),
                sentence=_t(language, "Pay by %(date)s and save %(amount)s",
                                      date=i18n.day_month(invoice.discount_until, language), amount=money(saving)),
            ))
    broken = BrokenPromise()
    if broken_promise is not None:
        amount = money(Money(broken_promise.amount_minor, broken_promise.currency))
        broken = BrokenPromise(
            _t(language, "You promised to pay %(amount)s by %(date)s; we have not received it.",
               amount=amount, date=day(broken_promise.promised_for)),
            amount=amount, date=day(broken_promise.promised_for),
        )
    return {
        "customer": customer,
        "contact": contact,
        "broken_promise": broken,
        "company": company,
        "invoices": table,
        "overdue": overdue,
        "upcoming": upcoming,
        "reminded_before": reminded_before,
        "totals": totals,
        "savings": savings,
        "late_charges": _late_charges(ordered if needed is None or "late_charges" in needed else [], today,
                                      language, country),
        "link": link,
        "today": day(today),
    }


_LAW_SENTENCES = {
    # (country, one rate for every invoice) -> the sentence that cites the law
    ("FR", True): N_("Under article L441-10 of the French Commercial Code, late payment makes due, by operation of "
                     "law, late-payment interest at the annual rate of %(rate)s and a fixed recovery indemnity of "
                     "%(indemnity)s per invoice, that is, as of today:"),
    ("FR", False): N_("Under article L441-10 of the French Commercial Code, late payment makes due, by operation of "
                      "law, late-payment interest at the annual rate shown for each invoice (the European Central "
                      "Bank rate plus 10 points) and a fixed recovery indemnity of %(indemnity)s per invoice, that "
                      "is, as of today:"),
    ("GB", True): N_("Under the Late Payment of Commercial Debts (Interest) Act 1998, statutory interest is due at "
                     "%(rate)s a year (the Bank of England base rate plus 8 points), together with fixed "
                     "compensation per invoice of £40 under £1,000, £70 from £1,000 to £9,999.99 and £100 from "
                     "£10,000, that is, as of today:"),
    ("GB", False): N_("Under the Late Payment of Commercial Debts (Interest) Act 1998, statutory interest is due at "
                      "the annual rate shown for each invoice (the Bank of England base rate plus 8 points), "
                      "together with fixed compensation per invoice of £40 under £1,000, £70 from £1,000 to "
                      "£9,999.99 and £100 from £10,000, that is, as of today:"),
}


def _late_charges(invoices: list[InvoiceFacts], today: date, language: str, country: str) -> LateChargesTable:
    """The statutory late charges of the company's country (France, UK) on the late invoices listed;
    empty (and false) where we know no such law."""
    law = interest.law_of(country)
    if law is None:
        return LateChargesTable([], language, "", "", [])
    rows = []
    rates: set[int] = set()
    interest_totals: dict[str, int] = {}
    indemnity_totals: dict[str, int] = {}
    for invoice in invoices:
        charges = interest.late_charges(invoice.open, invoice.due_date, today, law.country)
        if charges is None:
            continue
        rates.add(charges.rate_bps)
        indemnity = charges.indemnity
        rows.append(LateChargeRow(
            number=invoice.number, days_late=charges.days_late, rate=format_rate(charges.rate_bps, language),
            interest=_format_money(charges.interest.minor, charges.interest.currency, language),
            indemnity=_format_money(indemnity.minor, indemnity.currency, language) if indemnity else "—"))
        interest_totals[invoice.currency] = interest_totals.get(invoice.currency, 0) + charges.interest.minor
        if indemnity is not None:
            indemnity_totals[indemnity.currency] = indemnity_totals.get(indemnity.currency, 0) + indemnity.minor
    if not rows:
        return LateChargesTable([], language, "", "", [])
    rate = format_rate(max(rates), language)
    indemnity_text = i18n.format_money(interest.RECOVERY_INDEMNITY, language) if law.country == "FR" else ""
    amounts = lambda totals: " · ".join(i18n.format_money(Money(minor, currency), language)  # noqa: E731
                                        for currency, minor in sorted(totals.items()))
    total_rows = [_t(language, "Total late-payment interest: %(amount)s", amount=amounts(interest_totals))]
    if indemnity_totals:
        total_rows.append(_t(language, "Total recovery indemnities: %(amount)s", amount=amounts(indemnity_totals)))
    law_sentence = _t(language, _LAW_SENTENCES[(law.country, len(rates) == 1)], rate=rate, indemnity=indemnity_text)
    return LateChargesTable(rows, language, rate, indemnity_text, total_rows, law=law_sentence)


# --- sandboxed rendering ------------------------------------------------------------------------


def _sandbox(autoescape: bool) -> SandboxedEnvironment:
    # The cut-down language and its limits (dunning.template_language): texts are data from staff.
    return ReminderEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=False,
    )


TEXT_ENV = _sandbox(autoescape=False)
HTML_ENV = _sandbox(autoescape=True)


@lru_cache(maxsize=256)
def _compiled(autoescape: bool, source: str) -> jinja2.Template:
    """Compiled once per text: a run renders the same few texts thousands of times."""
    return (HTML_ENV if autoescape else TEXT_ENV).from_string(source)


_layout_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True, undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)


@lru_cache(maxsize=1)
def _layout() -> jinja2.Template:
    return _layout_env.get_template("reminder.html")


def _paragraphs(html: Markup) -> Markup:
    """Blank lines separate paragraphs; a paragraph that is a table or a list stays as it is."""
    parts = []
    for chunk in re.split(r"\n\s*\n", str(html).strip()):
        chunk = chunk.strip()
        if not chunk:
            continue
        if chunk.startswith(("<table", "<ul")):
            parts.append(chunk)
        else:
            parts.append(f"<p>{chunk.replace(chr(10), '<br>' + chr(10))}</p>")
    return Markup("\n".join(parts))


@lru_cache(maxsize=256)
def placeholders_used(*sources: str) -> frozenset[str]:
    """The placeholders some texts refer to (texts that do not parse refer to none)."""
    from jinja2 import meta

    used: set[str] = set()
    for source in sources:
        try:
            used |= meta.find_undeclared_variables(TEXT_ENV.parse(source))
        except jinja2.TemplateSyntaxError:
            continue
    return frozenset(used)


def render(step: StepTexts, language: str, context: dict[str, Any], *, brand_color: str = "#1d4f91") -> RenderedMessage:
    """Subject, text and HTML of one message, in `language` (fr or en)."""
    language = i18n.normalize(language)
    subject_source, body_source = step.texts(language)
    subject = " ".join(_compiled(False, subject_source).render(context).split())
    text = _compiled(False, body_source).render(context).strip() + "\n"
    body_html = _paragraphs(Markup(_compiled(True, body_source).render(context)))
    html = _layout().render(
        lang=language, subject=subject, body=body_html, link=context["link"],
        company_name=context["company"].name, brand_color=brand_color,
        pay_label=_t(language, "View and pay my invoices"),
    )
    return RenderedMessage(subject=subject, text=text, html=html)


# --- validation on save -------------------------------------------------------------------------


PARTS = {"subject": N_("subject"), "body": N_("body")}


@dataclass(frozen=True)
class TemplateIssue:
    """One problem in one template text: `kind` is "syntax" (detail: Jinja's message) or
    "placeholder" (detail: the unknown name, e.g. "client" or "company.siren")."""

    line: int | None
    kind: str
    detail: str
    known: tuple[str, ...] = ()


def template_issues(source: str) -> list[TemplateIssue]:
    """Syntax errors, unknown placeholders and attributes in one template text."""
    from jinja2 import meta, nodes

    try:
        tree = TEXT_ENV.parse(source)
        TEXT_ENV.compile(source)  # unknown filters and tests are only found when compiling
    except jinja2.TemplateSyntaxError as error:
        return [TemplateIssue(error.lineno, "syntax", error.message or "")]
    issues = []
    unknown = meta.find_undeclared_variables(tree) - set(PLACEHOLDERS)
    for name_node in tree.find_all(nodes.Name):
        if name_node.ctx == "load" and name_node.name in unknown:
            issues.append(TemplateIssue(name_node.lineno, "placeholder", name_node.name, tuple(sorted(PLACEHOLDERS))))
            unknown.discard(name_node.name)
    for getattr_node in tree.find_all(nodes.Getattr):
        target = getattr_node.node
        if isinstance(target, nodes.Name) and target.name in ATTRIBUTES \
                and getattr_node.attr not in ATTRIBUTES[target.name]:
            issues.append(TemplateIssue(getattr_node.lineno, "placeholder", f"{target.name}.{getattr_node.attr}",
                                        tuple(f"{target.name}.{a}" for a in sorted(ATTRIBUTES[target.name]))))
    return issues


def check_template(source: str, part: str, language: str | None = None) -> list[UserError]:
    """Problems in one template text (`part`: "subject" or "body"), each naming the part (and the
    language, when given) and the line, at its form field (`body_fr`, or `body` without language)."""
    where: Any = Translated(PARTS[part])
    if language is not None:
        where = UserError(N_("%(language)s %(field)s"), language=Language(language), field=where)
    field = f"{part}_{language}" if language is not None else part
    problems = []
    for issue in template_issues(source):
        if issue.kind == "syntax":
            problem = UserError(N_("%(where)s, line %(line)s: syntax error (%(detail)s)."), where=where,
                                line=issue.line, detail=JinjaDetail(issue.detail))
        else:
            problem = UserError(N_("%(where)s, line %(line)s: unknown placeholder “%(name)s” (known: %(known)s)."),
                                where=where, line=issue.line, name=issue.detail, known=", ".join(issue.known))
        problems.append(problem.at(field=field, line=issue.line))
    if not problems:
        trouble = render_issue(source)
        if trouble is not None:
            problems.append(UserError(N_("%(where)s: cannot be rendered (%(detail)s)."), where=where,
                                      detail=JinjaDetail(trouble)).at(field=field))
    return problems


def render_issue(source: str) -> str | None:
    """What goes wrong rendering a (well-formed) text on sample data, text and HTML; None if nothing."""
    for autoescape in (False, True):
        try:
            _compiled(autoescape, source).render(sample_context())
        except jinja2.TemplateError as error:  # SecurityError and UndefinedError included
            return str(error)
    return None


def sample_context(language: str = "fr", country: str = "FR") -> dict[str, Any]:
    """A made-up context, to try a text before saving it."""
    today = date(2026, 11, 25)
    invoices = [
        InvoiceFacts(1, "F-0001", date(2026, 9, 1), date(2026, 10, 1), "EUR", 1234_56),
        InvoiceFacts(2, "F-0002", date(2026, 11, 1), date(2026, 12, 1), "EUR", 500_00, 200, date(2026, 12, 5)),
    ]
    return build_context(
        language=language, today=today, company=CompanyView("Exemple SAS", "compta@exemple.test", ""),
        country=country, base_currency="EUR", customer=CustomerView("Client SARL", "C-0001"),
        contact=ContactView("", "ap@client.test"), invoices=invoices, all_open=invoices,
        link="https://encours.test/p/sample", broken_promise=PromiseFacts(date(2026, 11, 10), "EUR", 1234_56),
    )


def validate_step(subject: str, body: str, language: str | None = None) -> None:
    """Refuse a text that would fail at send time: raise `UserErrors`, each naming part and line."""
    problems = check_template(subject, "subject", language) + check_template(body, "body", language)
    if problems:
        raise UserErrors(problems)


__all__ = [
    "PLACEHOLDERS", "InvoiceFacts", "PromiseFacts", "StepTexts", "CompanyView", "CustomerView", "ContactView", "RenderedMessage",
    "build_context", "render", "validate_step", "check_template", "totals_by_currency",
    "available_saving", "sample_context",
]
