"""The dated exchange-rate table: adding and importing rates, and converting with them.

A rate says 1 `base` = `rate` `quote`, from `valid_on` until a later rate of the same pair.
The rate used for a day is the latest on or before that day, of the pair in either direction
(EUR/USD 1.08 converts USD to EUR too, by dividing); when there is none, there is no
conversion: callers say so, they never invent one. Rates are decimals (stored as text),
conversion is Decimal arithmetic rounded half up to the target currency's minor units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from kernel.i18n import N_
from kernel.user_error import UserError, UserErrors
from ledger import audit
from ledger.csv_import import Row, read_table
from ledger.models import FxRate
from ledger.money import CurrencyError, Money, check_currency, decimals

COLUMNS = ("date", "base", "quote", "rate")
MAX_RATE_DIGITS = 12  # on each side of the decimal point
_RATE = re.compile(r"^\d{1,12}(?:[.,]\d{1,12})?$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class RatesFile:
    """A rates file read by the shared CSV reader: its rows, and the lines of the wrong width."""

    rows: list[Row]
    wrong_width: frozenset[int]


@dataclass
class FxImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class Rate:
    base: str
    quote: str
    rate: Decimal
    valid_on: date

    @property
    def pair(self) -> str:
        return f"{self.base}/{self.quote}"


@dataclass(frozen=True)
class Conversion:
    """`amount` in the target currency, got from `source` with `rate` (divided when `inverse`)."""

    source: Money
    amount: Money
    rate: Rate
    inverse: bool


# --- parsing ------------------------------------------------------------------------------------


def parse_currency(text: str, column: str) -> str:
    value = (text or "").strip()
    if not value:
        raise UserError(N_("%(column)s is empty"), column=column).at(field=column)
    try:
        return check_currency(value)
    except CurrencyError:
        raise UserError(N_("%(column)s %(value)s is not a currency code (ISO 4217, e.g. EUR)"),
                        column=column, value=value).at(field=column) from None


def parse_rate(text: str) -> Decimal:
    """A positive decimal with '.' or ',' and at most 12 digits on each side; never a float."""
    value = (text or "").strip().replace(" ", "").replace("\u00a0", "")
    if not value:
        raise UserError(N_("rate is empty")).at(field="rate")
    if not _RATE.match(value):
        raise UserError(N_("rate %(value)s is not a decimal number such as 1.0842"), value=value).at(field="rate")
    rate = Decimal(value.replace(",", "."))
    if rate <= 0:
        raise UserError(N_("rate %(value)s must be more than zero"), value=value).at(field="rate")
    return rate


def parse_day(text: str) -> date:
    value = (text or "").strip()
    if not value:
        raise UserError(N_("date is empty")).at(field="valid_on")
    if _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise UserError(N_("date %(value)s is not a date (expected YYYY-MM-DD)"), value=value).at(field="valid_on")


def rate_text(rate: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros: '1.0842', '150'."""
    return format(rate.normalize(), "f")


def _pair(base_text: str, quote_text: str) -> tuple[str, str]:
    problems: list[UserError] = []
    base = quote = ""
    try:
        base = parse_currency(base_text, "base")
    except UserError as error:
        problems.append(error)
    try:
        quote = parse_currency(quote_text, "quote")
    except UserError as error:
        problems.append(error)
    if problems:
        raise UserErrors(problems)
    if base == quote:
        raise UserError(N_("base and quote are both %(currency)s"), currency=base).at(field="quote")
    return base, quote


@dataclass(frozen=True)
class _Wanted:
    line: int
    base: str
    quote: str
    valid_on: date
    rate: Decimal


def _parse_line(line: int, base: str, quote: str, day: str, rate: str) -> tuple[_Wanted | None, list[UserError]]:
    problems: list[UserError] = []
    valid_on = parsed_rate = None
    pair: tuple[str, str] | None = None
    try:
        valid_on = parse_day(day)
    except UserError as error:
        problems.append(error)
    try:
        pair = _pair(base, quote)
    except UserErrors as many:
        problems.extend(many)
    except UserError as error:
        problems.append(error)
    try:
        parsed_rate = parse_rate(rate)
    except UserError as error:
        problems.append(error)
    if problems or pair is None or valid_on is None or parsed_rate is None:
        return None, problems
    return _Wanted(line, pair[0], pair[1], valid_on, parsed_rate), []


# --- writing ------------------------------------------------------------------------------------


def _apply(session: Session, wanted: _Wanted, existing: FxRate | None, actor: str) -> str:
    """'created', 'updated' or 'unchanged'; audited when something changed."""
    text = rate_text(wanted.rate)
    if existing is None:
        row = FxRate(base=wanted.base, quote=wanted.quote, valid_on=wanted.valid_on, rate=text)
        session.add(row)
        session.flush()
        audit.record(session, actor_type="user", actor=actor, action="fx_rate.created", entity_type="fx_rate",
                     entity_id=row.id, after=_state(row))
        return "created"
    if Decimal(existing.rate) == wanted.rate:
        return "unchanged"
    before = _state(existing)
    existing.rate = text
    session.flush()
    audit.record(session, actor_type="user", actor=actor, action="fx_rate.updated", entity_type="fx_rate",
                 entity_id=existing.id, before=before, after=_state(existing))
    return "updated"


def _state(row: FxRate) -> dict[str, Any]:
    return {"base": row.base, "quote": row.quote, "valid_on": row.valid_on.isoformat(), "rate": row.rate}


def _find(session: Session, base: str, quote: str, valid_on: date) -> FxRate | None:
    return session.scalar(select(FxRate).where(FxRate.base == base, FxRate.quote == quote,
                                               FxRate.valid_on == valid_on))


def set_rate(session: Session, *, base: str, quote: str, valid_on: str, rate: str, actor: str) -> str:
    """Add (or correct) one rate from a form's text; UserErrors naming every bad field otherwise."""
    wanted, problems = _parse_line(0, base, quote, valid_on, rate)
    if wanted is None:
        raise UserErrors(problems)
    return _apply(session, wanted, _find(session, wanted.base, wanted.quote, wanted.valid_on), actor)


def read_rates(raw: bytes) -> RatesFile:
    """The file's rows; `UserErrors` (each at its line) when it cannot be read at all."""
    rows, reader_problems = read_table(raw, COLUMNS)
    return RatesFile(rows, frozenset(reader_problems.by_line))


def import_rates(session: Session, raw: bytes | RatesFile, *, actor: str) -> FxImportReport:
    """`date,base,quote,rate` (`,` or `;`), all-or-nothing: every bad line is reported (one
    `UserErrors`, each problem at its line), or every line is applied (flushed, not committed).
    The same file twice changes nothing. Given bytes, an unreadable file raises `UserErrors` too;
    callers that tell the two apart call `read_rates` first."""
    table = read_rates(raw) if isinstance(raw, bytes) else raw
    problems: dict[int, list[UserError]] = {
        line: [UserError(N_("expected 4 values (date, base, quote, rate), found another number"))]
        for line in table.wrong_width
    }
    wanted: dict[tuple[str, str, date], _Wanted] = {}
    for row in table.rows:
        parsed, reasons = _parse_line(row.line, row.get("base"), row.get("quote"), row.get("date"), row.get("rate"))
        if parsed is None:
            problems.setdefault(row.line, []).extend(reasons)
            continue
        key = (parsed.base, parsed.quote, parsed.valid_on)
        earlier = wanted.get(key)
        if earlier is not None and earlier.rate != parsed.rate:
            problems.setdefault(row.line, []).append(UserError(
                N_("%(pair)s on %(day)s is already on line %(line)s with another rate"),
                pair=f"{parsed.base}/{parsed.quote}", day=parsed.valid_on.isoformat(), line=earlier.line))
            continue
        wanted.setdefault(key, parsed)
    if problems:
        raise UserErrors([reason.at(line=line) for line, reasons in sorted(problems.items()) for reason in reasons])
    existing = _existing(session, list(wanted))
    report = FxImportReport()
    for key, line in wanted.items():
        outcome = _apply(session, line, existing.get(key), actor)
        setattr(report, outcome, getattr(report, outcome) + 1)
    return report


def _existing(session: Session, keys: list[tuple[str, str, date]]) -> dict[tuple[str, str, date], FxRate]:
    found: dict[tuple[str, str, date], FxRate] = {}
    for start in range(0, len(keys), 300):
        chunk = keys[start:start + 300]
        query = select(FxRate).where(tuple_(FxRate.base, FxRate.quote, FxRate.valid_on).in_(chunk))
        for row in session.scalars(query):
            found[(row.base, row.quote, row.valid_on)] = row
    return found


def list_rates(session: Session, limit: int = 500) -> list[FxRate]:
    return list(session.scalars(
        select(FxRate).order_by(FxRate.valid_on.desc(), FxRate.base, FxRate.quote).limit(limit)))


# --- converting ---------------------------------------------------------------------------------


def convert(amount: Money, rate: Rate, *, inverse: bool = False) -> Money:
    """`amount` (in rate.base, or rate.quote when `inverse`) in the other currency of the pair,
    rounded half up to that currency's minor units."""
    source, target = (rate.quote, rate.base) if inverse else (rate.base, rate.quote)
    if amount.currency != source:
        raise CurrencyError(N_("%(currency)s is not %(other)s"), currency=amount.currency, other=source)
    with localcontext() as context:
        context.prec = 60
        value = amount.to_decimal()
        converted = value / rate.rate if inverse else value * rate.rate
        minor = converted.scaleb(decimals(target)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return Money(int(minor), target)


@dataclass
class RateBook:
    """The latest rate on or before `day` of every pair, loaded once for a page."""

    day: date
    rates: dict[tuple[str, str], Rate] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, day: date, currencies: set[str] | None = None) -> RateBook:
        latest = select(FxRate.base, FxRate.quote, func.max(FxRate.valid_on).label("valid_on")).where(
            FxRate.valid_on <= day)
        if currencies is not None:
            latest = latest.where(FxRate.base.in_(currencies), FxRate.quote.in_(currencies))
        sub = latest.group_by(FxRate.base, FxRate.quote).subquery()
        rows = session.execute(
            select(FxRate.base, FxRate.quote, FxRate.rate, FxRate.valid_on).join(
                sub, (sub.c.base == FxRate.base) & (sub.c.quote == FxRate.quote) & (sub.c.valid_on == FxRate.valid_on))
        ).all()
        book = cls(day)
        for base, quote, rate, valid_on in rows:
            try:
                book.rates[(base, quote)] = Rate(base, quote, Decimal(rate), valid_on)
            except InvalidOperation:  # never written by this module; a hand-edited row is skipped
                continue
        return book

    def rate_for(self, source: str, target: str) -> tuple[Rate, bool] | None:
        """(rate, inverse) converting `source` into `target`: the more recent of the two directions,
        the direct one on a tie; None when neither exists."""
        direct = self.rates.get((source, target))
        reverse = self.rates.get((target, source))
        if direct and (not reverse or direct.valid_on >= reverse.valid_on):
            return direct, False
        if reverse:
            return reverse, True
        return None

    def convert(self, amount: Money, target: str) -> Conversion | None:
        if amount.currency == target:
            return None
        found = self.rate_for(amount.currency, target)
        if found is None:
            return None
        rate, inverse = found
        return Conversion(amount, convert(amount, rate, inverse=inverse), rate, inverse)

