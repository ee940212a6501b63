from datetime import date

import pytest

from ledger.money import Money
from kernel.user_error import UserError
from reconciliation.entries import CreditDebit
from reconciliation.parsers import parse_statement_file

OCA = "oca-bank-statement-import/"
EUR = "EUR"


def credits(statement) -> int:
    return sum(e.amount.minor for e in statement.entries if e.amount.minor > 0)


def test_ing_with_swift_blocks_and_slashed_details(read):
    [stmt] = parse_statement_file(read(OCA + "test-ing.940"))
    assert stmt.format == "mt940"
    assert stmt.account_id == "NL77INGB0574908765"  # ":25:NL77INGB0574908765EUR", the currency dropped
    assert stmt.opening_balance == Money(66223, EUR) and stmt.closing_balance == Money(56435, EUR)
    assert len(stmt.entries) == 8
    assert credits(stmt) == 156 + 157 + 145 + 3200
    assert stmt.warnings == ()  # 662.23 + 1.56 - 1.57 + 1.57 - 1.14 + 1.45 - 12.75 + 32.00 - 119.00 = 564.35
    first = stmt.entries[0]
    assert first.counterparty_iban == "NL32INGB0000012345"
    assert first.counterparty_bic == "INGBNL2A"
    assert first.counterparty_name == "ING BANK NV INZAKE WEB"
    assert first.end_to_end_id == "EV12341REP1231456T1234"
    assert first.remittance_text == "EV10001REP1000000T1000"
    returned = stmt.entries[2]
    assert returned.counterparty_name == "J.Janssen"
    assert returned.remittance_text == "Factuurnr 123456 Klantnr 00123"
    wrapped = stmt.entries[5]  # "CO\nNTRIBUTIE" and "REM\nI" wrapped mid-word
    assert wrapped.amount == Money(-1275, EUR)
    assert wrapped.remittance_text == "CONTRIBUTIE FEB 2014"
    structured = stmt.entries[6]
    assert structured.structured_reference == "9001123412341234"
    assert structured.structured_reference_type == "CUR"
    assert structured.booking_date == date(2014, 2, 20) and structured.value_date == date(2014, 2, 20)
    assert structured.location == "line 47"


def test_rabobank_four_statements_zero_padded(read):
    statements = parse_statement_file(read(OCA + "test-rabo.swi"))
    assert [s.statement_id for s in statements] == ["940S140102/0", "940S140103/0", "940S140106/0", "940S140107/0"]
    assert [len(s.entries) for s in statements] == [1, 0, 1, 0]
    assert all(s.account_iban == "NL34RABO0142623393" for s in statements)
    assert statements[0].opening_balance == Money(443352, EUR)
    credit = statements[0].entries[0]
    assert credit.amount == Money(40000, EUR)
    assert credit.booking_date is None and credit.value_date == date(2014, 1, 2)  # no entry date
    assert credit.counterparty_name == "R. SMITH"
    assert credit.counterparty_iban == "NL66RABO0160878799"
    assert credit.remittance_text == "Test money paid by other partner:"
    cost = statements[2].entries[0]
    assert cost.amount == Money(-3461, EUR) and cost.counterparty_name == "Kosten"
    assert all(s.warnings == () for s in statements)


def test_sns_framed_messages_free_text(read):
    statements = parse_statement_file(read(OCA + "test-sns.940"))
    assert [len(s.entries) for s in statements] == [4, 2, 2]
    assert [credits(s) for s in statements] == [0, 0, 0]
    assert statements[0].account_iban == "NL05SNSB0908244436"
    first = statements[0].entries[0]
    assert first.amount == Money(-71313, EUR)
    assert first.counterparty_iban == "NL49RABO0166416932"
    assert first.counterparty_name == "gerrits glas en schilderwerk"
    assert "Factuur 17227/248/20" in first.remittance_text
    vitens = statements[0].entries[2]
    assert "VNKlantnr 00000000000" in vitens.remittance_text  # a 65-character line was wrapped, not ended
    assert statements[1].entries[1].amount == Money(0, EUR)
    assert statements[0].warnings == () and statements[1].warnings == ()
    assert any("no closing balance" in w for w in statements[2].warnings)  # the bank left :62F: out


def test_abn_amro_headers_between_messages(read):
    one, two = parse_statement_file(read("wolph-mt940/jejik/abnamro.sta"))
    assert one.statement_id == "ABN AMRO BANK NV/19321/1"
    assert len(one.entries) == 8 and len(two.entries) == 2
    assert one.entries[0].amount == Money(-900, EUR)  # "9," is nine euros
    assert one.entries[0].remittance_text.startswith("GIRO 428428 KPN - DIGITENNE")
    assert one.entries[6].amount == Money(-10700, EUR)
    assert one.entries[1].booking_date == date(2011, 5, 23) and one.entries[1].value_date == date(2011, 5, 21)
    assert two.opening_balance == Money(287684, EUR)  # :60M:
    assert any("do not add up" in w for w in one.warnings)  # the published file's balances are off


def test_triodos_angle_bracket_subfields(read):
    [stmt] = parse_statement_file(read("wolph-mt940/jejik/triodos.sta"))
    assert [e.amount.minor for e in stmt.entries] == [-1570, -70000]
    assert stmt.entries[0].remittance_text == "ALGEMENE TUSSENREKENING KOSTEN VAN 01-10-2010 TOT EN MET 31-12-2010"
    assert stmt.entries[1].remittance_text == "HUUR KANTOOR - FEB 2010"


def test_german_sepa_subfields(read):
    one, two = parse_statement_file(read("wolph-mt940/betterplace/sepa_snippet.sta"))
    assert len(one.entries) == 4 and len(two.entries) == 7
    assert credits(one) == 5099005 + 15455193 + 15455193
    karl = one.entries[0]
    assert karl.counterparty_name == "KARL KAUFMANN"
    assert karl.counterparty_iban == "DE14508800500194785000"
    assert karl.counterparty_bic == "DRESDEFF508"
    assert karl.end_to_end_id == "EndToEndId TFNR 22 004 00001"
    assert karl.remittance_text == "Verw CTSc-01 BC-PPP TFNr 22 004"
    assert karl.value_date == date(2007, 9, 7) and karl.booking_date == date(2007, 9, 4)
    assert karl.bank_reference == "0724710333343453"
    assert karl.bank_transaction_code == "NTRF 166"
    assert one.entries[3].amount == Money(-150000, EUR)  # "DR1500,00": debit, funds code R
    assert two.opening_balance == Money(-197043187, EUR)


BASE = """:20:STMT1
:25:FR7630006000011234567890189
:28C:12/1
:60F:C260301EUR1000,00
{lines}:62F:C260302EUR{closing}
"""


def _file(lines: str, closing: str = "1000,00") -> bytes:
    return BASE.format(lines=lines, closing=closing).encode()


def test_reversals_and_credit_debit():
    data = _file(
        ":61:2603020302RC100,00NTRFNONREF\n:86:/EREF/X//REMI/USTD//retour/\n"
        ":61:2603020302RD40,00NTRFNONREF\n:86:annulation prelevement\n",
        "940,00",
    )
    [stmt] = parse_statement_file(data)
    rc, rd = stmt.entries
    assert rc.amount == Money(-10000, EUR) and rc.reversal and rc.credit_debit is CreditDebit.DEBIT
    assert rd.amount == Money(4000, EUR) and rd.reversal and rd.credit_debit is CreditDebit.CREDIT
    assert stmt.warnings == ()


def test_rf_reference_found_in_free_text_and_entry_date_across_new_year():
    data = _file(":61:2601021231C1200,00NTRFNONREF//B1\n:86:VIR ACME SARL\nref rf18 5390 0754 7034 merci\n", "2200,00")
    data = data.replace(b"C260301", b"C251231")
    [stmt] = parse_statement_file(data)
    entry = stmt.entries[0]
    assert entry.structured_reference == "RF18539007547034"
    assert entry.booking_date == date(2025, 12, 31) and entry.value_date == date(2026, 1, 2)


@pytest.mark.parametrize(
    "line, words",
    [
        (":61:2603020302C10,005NTRFNONREF\n", "more than 2 decimals for EUR"),
        (":61:2603020302C10.00NTRFNONREF\n", "statement line :61:"),
        (":61:2613020302C10,00NTRFNONREF\n", "YYMMDD"),
        (":61:2603020302C99999999999999999999,99NTRFNONREF\n", "amount 99999999999999999999.99 is too large"),
    ],
)
def test_bad_statement_lines_give_the_line(line, words):
    with pytest.raises(UserError) as err:
        parse_statement_file(_file(line))
    assert err.value.line == 5
    assert words in str(err.value)


def test_bad_balance():
    with pytest.raises(UserError, match="C140219EUR662,23") as err:
        parse_statement_file(_file("").replace(b":60F:C260301EUR1000,00", b":60F:C260301EURO1000"))
    assert err.value.line == 4
