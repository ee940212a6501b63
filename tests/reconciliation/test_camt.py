from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.money import Money
from kernel.user_error import UserError
from reconciliation.entries import CreditDebit, EntryStatus
from reconciliation.parsers import MAX_FILE_BYTES, detect_format, parse_statement_file
from tests.reconciliation.camt_builder import Doc, Ntry, Stmt, Tx, build

OCA = "oca-bank-statement-import/"
EUR = "EUR"


def credits(statement) -> int:
    return sum(e.amount.minor for e in statement.entries if e.amount.minor > 0)


# -- real files ---------------------------------------------------------------------------------


def test_oca_camt053_001_02_abn_amro_layout(read):
    [stmt] = parse_statement_file(read(OCA + "test-camt053.xml"))
    assert stmt.format == "camt.053.001.02"
    assert stmt.statement_id == "1234Test/1"
    assert stmt.account_iban == "NL77ABNA0574908765"
    assert stmt.account_currency == EUR
    assert stmt.opening_balance == Money(1556827, EUR)
    assert stmt.closing_balance == Money(1512112, EUR)
    assert stmt.from_date == date(2014, 1, 5)
    # three booked entries; the second is a batch of two direct debits, unfolded
    assert len(stmt.entries) == 4
    assert credits(stmt) == 140531
    first, batch_a, batch_b, credit = stmt.entries
    assert first.amount == Money(-75425, EUR) and first.credit_debit is CreditDebit.DEBIT
    assert first.counterparty_name == "INSURANCE COMPANY TESTX"
    assert first.counterparty_iban == "NL46ABNA0499998748"
    assert first.end_to_end_id == "435005714488-ABNO33052620"
    assert first.bank_transaction_code == "PMNT/RDDT/ESDD"
    assert batch_a.reversal and batch_b.reversal
    assert (batch_a.amount.minor, batch_b.amount.minor) == (-56405, -10000)
    assert batch_a.batch_size == 2
    assert batch_b.location == "/Document/BkToCstmrStmt/Stmt[1]/Ntry[2]/NtryDtls/TxDtls[2]"
    assert credit.counterparty_name == "3rd party Media"
    assert credit.counterparty_iban == "NL69ABNA0522123643"
    assert credit.counterparty_bic == "ABNANL2A"
    assert credit.remittance_text == "#RD PARTY MEDIA CUSNO 90782 4210773"  # AddtlTxInf when no RmtInf
    assert credit.status is EntryStatus.BOOKED and credit.booking_date == date(2014, 1, 5)
    # 15568.27 - 754.25 - 664.05 + 1405.31 = 15555.28, not the file's 15121.12
    assert len(stmt.warnings) == 1 and "do not add up" in stmt.warnings[0]


def test_oca_camt053_001_04_swiss_batch(read):
    [stmt] = parse_statement_file(read(OCA + "test-camt053-txdtls.xml"))
    assert stmt.format == "camt.053.001.04"
    assert stmt.account_iban == "CH1111000000123456789"
    assert stmt.account_currency == "CHF"
    assert len(stmt.entries) == 2
    assert credits(stmt) == 218700 + 129600
    assert stmt.warnings == ()  # 75960.15 + 3483.00 = 79443.15 and 2187 + 1296 = 3483
    a, b = stmt.entries
    assert a.entry_reference == b.entry_reference == "20170323001234567891234567891234"
    assert a.bank_reference == "123456CHCAFEBABE"
    assert a.counterparty_name == "Banque Cantonale Vaudoise"
    assert a.counterparty_iban == "CH2222000000123456789"
    assert b.counterparty_bic == "POFICHBEYYY"  # BICFI in 001.04
    assert a.structured_reference == "302388292000011111111111111"
    assert a.structured_reference_type == "ISR Reference"
    assert a.booking_date == date(2017, 3, 22) and a.value_date == date(2017, 3, 23)


def test_oca_camt054_notification(read):
    [ntf] = parse_statement_file(read(OCA + "test-camt054.xml"))
    assert ntf.format == "camt.054.001.04"
    assert ntf.opening_balance is None and ntf.closing_balance is None
    [entry] = ntf.entries
    assert entry.amount == Money(500, EUR)
    assert entry.end_to_end_id == "ENDTOENDID-01"
    assert entry.structured_reference == "000000000000000000000000003"
    assert entry.structured_reference_type == "QRR"
    assert entry.counterparty_name == "Test Customer"
    assert entry.entry_reference == "98888208N8"


def test_oca_statement_without_entries(read):
    [stmt] = parse_statement_file(read(OCA + "test-camt053-no-ntry.xml"))
    assert stmt.entries == ()
    assert stmt.opening_balance == stmt.closing_balance == Money(152076, "CHF")


# -- generated files, one per version -------------------------------------------------------------


@pytest.mark.parametrize("version", ["02", "04", "06", "08", "10"])
def test_generated_camt053_versions(read, version):
    first, second = parse_statement_file(read(f"generated/camt053.001.{version}.xml"))
    assert first.format == f"camt.053.001.{version}"
    assert first.account_iban == "FR7630006000011234567890189"
    assert first.opening_balance == Money(100000, EUR) and first.closing_balance == Money(238010, EUR)
    assert len(first.entries) == 7  # six entries, the batch of two unfolded
    assert credits(first) == 120000 + 12000 + 17500 + 1000 + 50000
    rf, bakery, garage, debit, reversal, bare, pending = first.entries
    assert rf.structured_reference == "RF18539007547034" and rf.structured_reference_type == "SCOR"
    assert rf.counterparty_name == "ACME SARL" and rf.counterparty_bic == "COBADEFFXXX"
    assert rf.end_to_end_id == "E2E-0001" and rf.bank_reference == "TX-1"
    assert bakery.entry_reference == garage.entry_reference == "SVC-E2"
    assert garage.remittance_text == "Paiement facture F 2026 0470 merci"  # two Ustrd joined
    assert [w for w in first.warnings if "Ntry[2]" in w and "difference 5.00" in w]
    assert debit.amount == Money(-4990, EUR) and debit.counterparty_name == "Fournisseur SA"
    assert reversal.reversal and reversal.amount == Money(-8000, EUR)
    assert reversal.counterparty_name == "Martin Dupont"  # the original payer, not the creditor
    assert bare.booking_date is None and bare.status is None
    assert bare.structured_reference == "RF882026000012345"  # found in AddtlNtryInf text
    assert pending.status is EntryStatus.PENDING
    assert not [w for w in first.warnings if "balances" in w]  # pending entry left out of the sum
    assert second.account_currency == "CHF" and second.opening_balance == Money(-10000, "CHF")
    assert second.entries[0].counterparty_name == "Müller & Söhne AG"
    assert second.entries[0].booking_date == date(2026, 3, 2)  # BookgDt/DtTm
    assert second.warnings == ()


def test_generated_camt053_001_02_charges(read):
    # A single-transaction entry with charges keeps them; 001.02 repeats Chrgs/Amt.
    data = build(Doc("053", 2, (Stmt("S", "FR7630006000011234567890189", EUR, (Ntry("10.00", charges="1.50", txs=(Tx("10.00"),)),)),)))
    [stmt] = parse_statement_file(data)
    assert stmt.entries[0].charges == Money(150, EUR)


def test_generated_camt052_report(read):
    [rpt] = parse_statement_file(read("generated/camt052.001.08.xml"))
    assert rpt.format == "camt.052.001.08"
    assert rpt.statement_id == "RPT-2026-03-02-1200"
    assert rpt.closing_balance is None  # ITBD is not a closing balance
    assert [e.amount.minor for e in rpt.entries] == [45000, 9900]
    assert rpt.entries[1].status is EntryStatus.PENDING and rpt.entries[1].booking_date is None


def test_generated_camt054_two_notifications(read):
    one, two = parse_statement_file(read("generated/camt054.001.08.xml"))
    assert (one.statement_id, two.statement_id) == ("NTF-1", "NTF-2")
    assert one.entries[0].structured_reference == "RF18539007547034"
    assert one.entries[0].counterparty_name == "SCI Les Tilleuls"
    assert two.entries[0].amount == Money(-1500, EUR)
    assert two.entries[0].bank_transaction_code == "ACMT/MDOP/CHRG"


# -- refusals -----------------------------------------------------------------------------------


def _doc(entry_xml: str, version: str = "08") -> bytes:
    return (
        f'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{version}"><BkToCstmrStmt>'
        "<GrpHdr><MsgId>M</MsgId><CreDtTm>2026-03-02T18:00:00</CreDtTm></GrpHdr>"
        "<Stmt><Id>1</Id><Acct><Id><IBAN>FR7630006000011234567890189</IBAN></Id></Acct></Stmt>"
        f"<Stmt><Id>2</Id><Acct><Id><IBAN>FR7630006000011234567890189</IBAN></Id></Acct>{entry_xml}</Stmt>"
        "</BkToCstmrStmt></Document>"
    ).encode()


GOOD = '<Ntry><Amt Ccy="EUR">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd></Ntry>'


def test_too_many_decimals_refused_with_location():
    with pytest.raises(UserError) as err:
        parse_statement_file(_doc(GOOD + '<Ntry><Amt Ccy="EUR">10.005</Amt><CdtDbtInd>CRDT</CdtDbtInd></Ntry>'))
    assert err.value.values["path"] == "/Document/BkToCstmrStmt/Stmt[2]/Ntry[2]/Amt"
    assert str(err.value) == ("amount 10.005 has more than 2 decimals for EUR "
                              "(at /Document/BkToCstmrStmt/Stmt[2]/Ntry[2]/Amt)")
    assert err.value.render("fr") == ("le montant 10.005 a plus de 2 décimales pour la devise EUR "
                                      "(à /Document/BkToCstmrStmt/Stmt[2]/Ntry[2]/Amt)")


def test_an_amount_no_ledger_column_holds_is_refused_with_location():
    """The ledger keeps minor units in 64-bit integers: one more is refused where it is read (not
    as a database error once part of the file is written); the largest that fits is read."""
    with pytest.raises(UserError) as err:
        parse_statement_file(_doc('<Ntry><Amt Ccy="EUR">92233720368547758.08</Amt><CdtDbtInd>CRDT</CdtDbtInd></Ntry>'))
    assert str(err.value) == ("amount 92233720368547758.08 is too large "
                              "(at /Document/BkToCstmrStmt/Stmt[2]/Ntry[1]/Amt)")
    assert err.value.render("fr").startswith("le montant 92233720368547758.08 est trop grand")
    [_, stmt] = parse_statement_file(_doc('<Ntry><Amt Ccy="EUR">92233720368547758.07</Amt>'
                                          '<CdtDbtInd>DBIT</CdtDbtInd></Ntry>'))
    assert stmt.entries[0].amount == Money(-(2**63 - 1), "EUR")


def test_zero_decimal_currency():
    [_, stmt] = parse_statement_file(_doc('<Ntry><Amt Ccy="JPY">1200</Amt><CdtDbtInd>CRDT</CdtDbtInd></Ntry>'))
    assert stmt.entries[0].amount == Money(1200, "JPY")
    with pytest.raises(UserError, match="more than 0 decimals for JPY"):
        parse_statement_file(_doc('<Ntry><Amt Ccy="JPY">1200.5</Amt><CdtDbtInd>CRDT</CdtDbtInd></Ntry>'))


@pytest.mark.parametrize(
    "entry, location, words",
    [
        ('<Ntry><CdtDbtInd>CRDT</CdtDbtInd></Ntry>', "Stmt[2]/Ntry[1]/Amt", "expected an amount"),
        ('<Ntry><Amt Ccy="EUR">1.00</Amt></Ntry>', "Stmt[2]/Ntry[1]/CdtDbtInd", "CRDT or DBIT"),
        ('<Ntry><Amt Ccy="XXY">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd></Ntry>', "Stmt[2]/Ntry[1]/Amt", "currency"),
        ('<Ntry><Amt Ccy="EUR">-1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd></Ntry>', "Stmt[2]/Ntry[1]/Amt", "1405.31"),
        ('<Ntry><Amt Ccy="EUR">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><BookgDt><Dt>2026-02-30</Dt></BookgDt></Ntry>',
         "Stmt[2]/Ntry[1]/BookgDt/Dt", "date"),
    ],
)
def test_bad_entries_name_their_element(entry, location, words):
    with pytest.raises(UserError) as err:
        parse_statement_file(_doc(entry))
    assert err.value.values["path"] == "/Document/BkToCstmrStmt/" + location
    assert words in str(err.value.values["problem"])


def test_malformed_xml_has_a_line():
    data = _doc(GOOD).replace(b"</Ntry>", b"</Ntr>").replace(b"><", b">\n<")
    with pytest.raises(UserError) as err:
        parse_statement_file(data)
    assert err.value.line is not None and err.value.line > 1
    assert "not well-formed XML" in str(err.value)


def test_other_xml_refused():
    with pytest.raises(UserError, match="camt.053"):
        parse_statement_file(b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"/>')
    with pytest.raises(UserError, match="001.02 to 001.13"):
        parse_statement_file(_doc(GOOD, version="01"))


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt><Id>&xxe;</Id>
<Acct><Id><IBAN>FR7630006000011234567890189</IBAN></Id></Acct></Stmt></BkToCstmrStmt></Document>"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt><Id>&lol9;</Id>
<Acct><Id><IBAN>FR7630006000011234567890189</IBAN></Id></Acct></Stmt></BkToCstmrStmt></Document>"""


@pytest.mark.parametrize("data", [XXE, LAUGHS, XXE.replace(b"<!DOCTYPE", b"<!doctype")], ids=["xxe", "billion-laughs", "lowercase"])
def test_doctype_refused(data):
    with pytest.raises(UserError, match="DOCTYPE") as err:
        parse_statement_file(data)
    assert err.value.line == 1


def test_oversize_refused_unread():
    data = b"<" + b" " * MAX_FILE_BYTES
    with pytest.raises(UserError, match="up to 50 MiB"):
        parse_statement_file(data)


def test_a_large_statement_parses_whole():
    # Speed is measured in bench/, never asserted here; this checks a big file comes out whole.
    entry = Ntry("12.34", ref="E", txs=(Tx("12.34", "Payer Name SARL", "FR7630006000011234567890189", "AGRIFRPPXXX", ("Facture F-2026-0468 et autres références",), "RF18539007547034", "E2E-1", "R-1"),))
    data = build(Doc("053", 8, (Stmt("BIG", "FR7630006000011234567890189", EUR, (entry,) * 5_000),)))
    [stmt] = parse_statement_file(data)
    assert len(stmt.entries) == 5_000
    assert stmt.total_credits() == {"EUR": 5_000 * 1234}


def test_sniffing():
    assert detect_format(b"\xef\xbb\xbf  <?xml version='1.0'?><Document/>") == "camt"
    assert detect_format(b":20:X\r\n:25:Y\r\n:60F:C140219EUR1,00\r\n") == "mt940"
    assert detect_format(b"date;montant;devise\n") == "csv"


# -- round trip ---------------------------------------------------------------------------------

names = st.text(alphabet=st.characters(whitelist_categories=("L", "N", "Zs"), max_codepoint=0x17F), min_size=1, max_size=40).map(
    lambda s: " ".join(s.split())
).filter(bool)
entries = st.builds(
    lambda cents, debit, name, text, reversal: (cents, debit, name, text, reversal),
    st.integers(min_value=1, max_value=10**11),
    st.booleans(),
    names,
    names,
    st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(entries, min_size=1, max_size=8), st.sampled_from([2, 4, 6, 8, 10]), st.sampled_from(["052", "053", "054"]))
def test_generated_documents_round_trip(rows, version, message):
    ntries = tuple(
        Ntry(
            f"{cents // 100}.{cents % 100:02d}",
            side="DBIT" if debit else "CRDT",
            reversal=reversal,
            txs=(Tx(f"{cents // 100}.{cents % 100:02d}", name=name, ustrd=(text,)),),
        )
        for cents, debit, name, text, reversal in rows
    )
    [stmt] = parse_statement_file(build(Doc(message, version, (Stmt("S", "FR7630006000011234567890189", EUR, ntries),))))
    assert [e.amount.minor for e in stmt.entries] == [-c if d else c for c, d, *_ in rows]
    assert [e.counterparty_name for e in stmt.entries] == [r[2] for r in rows]
    assert [e.remittance_text for e in stmt.entries] == [r[3] for r in rows]
    assert [e.reversal for e in stmt.entries] == [r[4] for r in rows]


@pytest.mark.parametrize("name", ["test-camt053.xml", "test-camt053-txdtls.xml", "test-camt054.xml"])
def test_comments_and_processing_instructions_anywhere_change_nothing(read, name):
    data = read(OCA + name)
    noisy = data
    for tag in (b"<Ntry>", b"<TxDtls>", b"<RmtInf>", b"<Bal>", b"<NtryDtls>"):
        noisy = noisy.replace(tag, tag + b"<!-- a note --><?bank keep?>")
    noisy = noisy.replace(b"</Ntry>", b"<!-- end --></Ntry>")
    assert noisy != data
    assert parse_statement_file(noisy) == parse_statement_file(data)
