"""The dated FX table: conversion, the rate of a day, the form and the all-or-nothing CSV import."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kernel.user_error import UserErrors
from ledger import fx
from ledger.models import AuditEvent, FxRate
from ledger.money import CurrencyError, Money


def _rate(base: str, quote: str, rate: str, day: date) -> fx.Rate:
    return fx.Rate(base, quote, Decimal(rate), day)


def test_convert_rounds_half_up_to_the_target_minor_units():
    eur_usd = _rate("EUR", "USD", "1.0842", date(2026, 11, 1))
    assert fx.convert(Money(100_00, "EUR"), eur_usd) == Money(108_42, "USD")
    assert fx.convert(Money(1, "EUR"), eur_usd) == Money(1, "USD")  # 0.010842 → 0.01
    assert fx.convert(Money(10_842, "USD"), eur_usd, inverse=True) == Money(100_00, "EUR")
    assert fx.convert(Money(5, "USD"), _rate("EUR", "USD", "2", date(2026, 11, 1)), inverse=True) == Money(3, "EUR")
    # JPY has no minor unit, KWD three
    assert fx.convert(Money(1_00, "EUR"), _rate("EUR", "JPY", "161.37", date(2026, 11, 1))) == Money(161, "JPY")
    assert fx.convert(Money(1_00, "EUR"), _rate("EUR", "KWD", "0.33315", date(2026, 11, 1))) == Money(333, "KWD")
    with pytest.raises(CurrencyError):
        fx.convert(Money(1, "GBP"), eur_usd)


def test_the_rate_used_is_the_latest_on_or_before_the_day_in_either_direction(session):
    session.add_all([
        FxRate(base="EUR", quote="USD", rate="1.10", valid_on=date(2026, 10, 1)),
        FxRate(base="EUR", quote="USD", rate="1.25", valid_on=date(2026, 11, 1)),
        FxRate(base="EUR", quote="USD", rate="9", valid_on=date(2026, 11, 26)),  # tomorrow: not yet
        FxRate(base="USD", quote="EUR", rate="0.5", valid_on=date(2026, 11, 10)),  # more recent, reverse pair
    ])
    session.flush()
    book = fx.RateBook.load(session, date(2026, 11, 25))
    conversion = book.convert(Money(100_00, "USD"), "EUR")
    assert conversion is not None and conversion.amount == Money(50_00, "EUR")
    assert (conversion.rate.pair, conversion.rate.valid_on, conversion.inverse) == ("USD/EUR", date(2026, 11, 10), False)
    conversion = book.convert(Money(100_00, "EUR"), "USD")
    assert conversion is not None and conversion.amount == Money(200_00, "USD") and conversion.inverse
    earlier = fx.RateBook.load(session, date(2026, 11, 5)).convert(Money(100_00, "EUR"), "USD")
    assert earlier is not None and earlier.amount == Money(125_00, "USD") and earlier.rate.rate == Decimal("1.25")


def test_no_rate_means_no_conversion(session):
    session.add(FxRate(base="EUR", quote="USD", rate="1.1", valid_on=date(2026, 11, 1)))
    session.flush()
    book = fx.RateBook.load(session, date(2026, 11, 25))
    assert book.convert(Money(1_00, "GBP"), "EUR") is None  # no EUR/GBP, and never via USD
    assert fx.RateBook.load(session, date(2026, 10, 31)).convert(Money(1_00, "USD"), "EUR") is None
    assert book.convert(Money(1_00, "EUR"), "EUR") is None  # nothing to convert


def _count(session) -> int:
    return session.scalar(select(func.count()).select_from(FxRate))


def test_set_rate_adds_corrects_and_audits(session):
    assert fx.set_rate(session, base="eur", quote="usd", valid_on="2026-11-20", rate="1,0842", actor="m@x.fr") == "created"
    assert fx.set_rate(session, base="EUR", quote="USD", valid_on="2026-11-20", rate="1.08420", actor="m@x.fr") == "unchanged"
    assert fx.set_rate(session, base="EUR", quote="USD", valid_on="2026-11-20", rate="1.09", actor="m@x.fr") == "updated"
    [row] = session.scalars(select(FxRate)).all()
    assert (row.base, row.quote, row.rate, row.valid_on) == ("EUR", "USD", "1.09", date(2026, 11, 20))
    events = session.scalars(select(AuditEvent).where(AuditEvent.entity_type == "fx_rate").order_by(AuditEvent.id)).all()
    assert [(e.action, e.actor, e.before, e.after["rate"]) for e in events] == [
        ("fx_rate.created", "m@x.fr", None, "1.0842"),
        ("fx_rate.updated", "m@x.fr", {"base": "EUR", "quote": "USD", "valid_on": "2026-11-20", "rate": "1.0842"}, "1.09"),
    ]


@pytest.mark.parametrize("fields, reason", [
    ({"rate": "0"}, "must be more than zero"),
    ({"rate": "-1.2"}, "is not a decimal number"),
    ({"rate": "1e3"}, "is not a decimal number"),
    ({"rate": "abc"}, "is not a decimal number"),
    ({"rate": ""}, "rate is empty"),
    ({"base": "EURO"}, "base EURO is not a currency code"),
    ({"quote": "XYZ"}, "quote XYZ is not a currency code"),
    ({"quote": "EUR"}, "base and quote are both EUR"),
    ({"valid_on": "25/11/2026"}, "is not a date"),
    ({"valid_on": "2026-02-30"}, "is not a date"),
])
def test_set_rate_refuses_bad_input_and_writes_nothing(session, fields, reason):
    values = {"base": "EUR", "quote": "USD", "valid_on": "2026-11-20", "rate": "1.1", **fields}
    with pytest.raises(UserErrors) as raised:
        fx.set_rate(session, actor="m@x.fr", **values)
    assert reason in str(raised.value)
    assert _count(session) == 0


GOOD = b"date;base;quote;rate\n2026-11-01;EUR;USD;1,0842\n2026-11-01;EUR;GBP;0.8712\n\n2026-11-02;eur;usd;1.09\n"


def test_import_is_applied_once_and_a_second_time_changes_nothing(session):
    report = fx.import_rates(session, GOOD, actor="m@x.fr")
    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    again = fx.import_rates(session, GOOD, actor="m@x.fr")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert _count(session) == 3
    assert session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.entity_type == "fx_rate")) == 3
    corrected = fx.import_rates(session, b"date,base,quote,rate\n2026-11-01,EUR,USD,\"1,1\"\n", actor="m@x.fr")
    assert (corrected.created, corrected.updated, corrected.unchanged) == (0, 1, 0)


def test_import_reports_every_bad_line_and_writes_nothing(session):
    fx.import_rates(session, b"date,base,quote,rate\n2026-10-01,EUR,USD,1.05\n", actor="m@x.fr")
    raw = (b"date,base,quote,rate\n"
           b"2026-11-01,EUR,USD,1.0842\n"  # 2: good
           b"2026-13-01,EUR,USD,1.1\n"  # 3: bad date
           b"2026-11-01,EUR,EUR,1\n"  # 4: same currency
           b"2026-11-01,EUR,XXY,abc\n"  # 5: unknown currency and bad rate
           b"2026-11-01,EUR,USD,1.2\n"  # 6: same pair and day as line 2, another rate
           b"2026-11-01,EUR,USD\n"  # 7: a value missing
           b"2026-11-03,GBP,USD,0\n")  # 8: zero
    table = fx.read_rates(raw)  # readable: the bad lines are the import's to report
    with pytest.raises(UserErrors) as raised:
        fx.import_rates(session, table, actor="m@x.fr")
    problems = dict(raised.value.by_line("en"))
    assert sorted(problems) == [3, 4, 5, 6, 7, 8]
    assert "date 2026-13-01 is not a date" in problems[3]
    assert "base and quote are both EUR" in problems[4]
    assert "quote XXY is not a currency code" in problems[5] and "rate abc is not a decimal" in problems[5]
    assert "already on line 2 with another rate" in problems[6]
    assert "expected 4 values" in problems[7]
    assert "must be more than zero" in problems[8]
    assert _count(session) == 1  # only the earlier import's rate


@pytest.mark.parametrize("raw, detail", [
    (b"", "the file is empty"),
    (b"day,base,quote,rate\n2026-11-01,EUR,USD,1.1\n", "unknown column 'day'"),
    (b"date,base,quote,rate\n", "no data lines"),
    (b"date,base,quote,rate\n2026-11-01,EUR,USD,1.1\xff\n", "not UTF-8"),
])
def test_a_malformed_file_is_refused_whole(session, raw, detail):
    with pytest.raises(UserErrors) as unreadable:
        fx.read_rates(raw)
    assert detail in str(unreadable.value)
    with pytest.raises(UserErrors) as raised:
        fx.import_rates(session, raw, actor="m@x.fr")
    assert detail in str(raised.value)
    assert _count(session) == 0
