from datetime import date

import pytest

from ledger.money import Money
from kernel.user_error import UserError, UserErrors
from reconciliation.parsers import parse_statement_file


def test_french_headers_semicolons_decimal_comma():
    data = (
        "Date;Montant;Devise;Nom;IBAN;Libellé;Date valeur\n"
        "02/03/2026;1 234,56;EUR;ACME SARL;FR76 3000 6000 0112 3456 7890 189;Facture F-2026-0468 RF18 5390 0754 7034;03/03/2026\n"
        "2026-03-02;-12,50;EUR;Banque;;Frais;\n"
    ).encode("cp1252")
    [stmt] = parse_statement_file(data)
    assert stmt.format == "csv" and stmt.account_currency == "EUR"
    first, fee = stmt.entries
    assert first.amount == Money(123456, "EUR")
    assert first.counterparty_name == "ACME SARL"
    assert first.counterparty_iban == "FR7630006000011234567890189"
    assert first.structured_reference == "RF18539007547034"
    assert first.booking_date == date(2026, 3, 2) and first.value_date == date(2026, 3, 3)
    assert first.location == "line 2"
    assert fee.amount == Money(-1250, "EUR")


def test_english_headers_commas_and_accounts():
    data = (
        "date,amount,currency,counterparty_name,counterparty_iban,remittance_text,reference,account_iban\n"
        '2026-03-02,100.00,EUR,"Smith, J.",,"invoice 12",E2E-9,FR7630006000011234567890189\n'
        "2026-03-02,7,JPY,Tanaka,,,,CH9300762011623852957\n"
    ).encode()
    eur, jpy = parse_statement_file(data)
    assert eur.account_iban == "FR7630006000011234567890189"
    assert eur.entries[0].counterparty_name == "Smith, J."
    assert eur.entries[0].end_to_end_id == "E2E-9"
    assert jpy.entries[0].amount == Money(7, "JPY")


def test_debit_and_credit_columns():
    data = "date;débit;crédit;devise\n2026-03-02;;50,00;EUR\n2026-03-02;20,00;;EUR\n".encode()
    [stmt] = parse_statement_file(data)
    assert [e.amount.minor for e in stmt.entries] == [5000, -2000]


def test_every_bad_line_reported_nothing_kept():
    data = (
        "date;montant;devise;iban\n"
        "2026-03-02;10,00;EUR;\n"
        "2026-13-02;10,00;EUR;\n"
        "2026-03-02;10,005;EUR;\n"
        "2026-03-02;10,00;EURO;\n"
        "2026-03-02;10,00;EUR;FR00 1234\n"
        "2026-03-02;-99999999999999999999,99;EUR;\n"
    ).encode()
    with pytest.raises(UserErrors) as err:
        parse_statement_file(data)
    assert [problem.line for problem in err.value] == [3, 4, 5, 6, 7]
    assert str(err.value.errors[1]) == "amount: '10,005' has more than 2 decimals for EUR"
    assert str(err.value.errors[4]) == "amount: amount '99999999999999999999,99' is too large"
    assert err.value.errors[1].render("fr").startswith("amount : ")


def test_missing_columns_named():
    with pytest.raises(UserError, match="missing currency") as err:
        parse_statement_file(b"date,amount,name\n2026-03-02,1.00,x\n")
    assert err.value.line == 1


def test_empty_file():
    with pytest.raises(UserError, match="empty"):
        parse_statement_file(b"  \n")
