from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.user_error import UserErrors
from ledger.csv_import import MAX_DATA_LINES, ImportReport, import_csv
from ledger.models import Allocation, AuditEvent, Company, Contact, Customer, Invoice, InvoiceKind, Payment
from tests import factories

CUSTOMER_HEADER = "company,customer_ref,name,email,language,phone,segment"
INVOICE_HEADER = "company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until"


def csv_bytes(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def failure(session: Session, kind: str, raw: bytes) -> list[str]:
    """Each bad line as the command line prints it."""
    with pytest.raises(UserErrors) as caught:
        import_csv(session, kind, raw)  # type: ignore[arg-type]
    return [f"line {line}: {problems}" for line, problems in caught.value.by_line("en")]


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def audit_events(session: Session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


@pytest.fixture
def acme(session: Session) -> Company:
    return factories.company(session, code="ACME")


@pytest.fixture
def globex(session: Session) -> Company:
    return factories.company(session, code="GLOBEX", country="GB", base_currency="GBP")


@pytest.fixture
def client(session: Session, acme: Company) -> Customer:
    return factories.customer(session, acme, ref="C001")


def invoice_by_number(session: Session, number: str) -> Invoice:
    return session.scalars(select(Invoice).where(Invoice.number == number)).one()


# --- the API -------------------------------------------------------------------------


def test_every_problem_is_a_user_error_at_its_line(session: Session, acme: Company) -> None:
    raw = csv_bytes(CUSTOMER_HEADER, "ACME,C1,One,one@x.fr,de,,", "ACME,C2,Two,two@x.fr,fr,,", "ACME,C3,Three,bad,xx,,")
    with pytest.raises(UserErrors) as caught:
        import_csv(session, "customers", raw)
    assert [(error.line, error.values.get("column")) for error in caught.value] == [
        (2, "language"), (4, "email"), (4, "language")]
    assert count(session, Customer) == 0


def test_report_summary() -> None:
    assert ImportReport("customers", created=3, updated=1, unchanged=2).summary() == "3 created, 1 updated, 2 unchanged"


# --- customers -----------------------------------------------------------------------


def test_customers_are_created_with_a_primary_contact(session: Session, acme: Company) -> None:
    raw = csv_bytes(
        CUSTOMER_HEADER,
        "ACME,C001,Dupont SA,compta@dupont.fr,fr,+33 1 23 45 67 89,pme",
        "ACME,C002,Smith Ltd,ap@smith.co.uk,EN,,",
    )
    report = import_csv(session, "customers", raw)
    assert (report.created, report.updated, report.unchanged) == (2, 0, 0)

    dupont = session.scalars(select(Customer).where(Customer.ref == "C001")).one()
    assert (dupont.company_id, dupont.name, dupont.language, dupont.segment) == (acme.id, "Dupont SA", "fr", "pme")
    contact = dupont.primary_contact
    assert contact is not None
    assert (contact.email, contact.phone, contact.language, contact.is_primary) == (
        "compta@dupont.fr",
        "+33 1 23 45 67 89",
        "fr",
        True,
    )
    assert contact.link_version == 1 and contact.created_at is not None and dupont.created_at is not None
    smith = session.scalars(select(Customer).where(Customer.ref == "C002")).one()
    assert smith.language == "en" and smith.segment is None
    assert smith.primary_contact is not None and smith.primary_contact.phone is None


def test_semicolon_separator_bom_and_loose_header(session: Session, acme: Company) -> None:
    raw = (
        "\ufeff Company ;CUSTOMER_REF;Name;Email;Language;Phone;Segment\r\n"
        "ACME;C001;Dupont, Fils & Cie;a@dupont.fr;fr;;\r\n"
    )
    report = import_csv(session, "customers", raw.encode())
    assert report.created == 1
    assert session.scalars(select(Customer.name).where(Customer.ref == "C001")).one() == "Dupont, Fils & Cie"


def test_empty_language_follows_the_company_country(session: Session, acme: Company, globex: Company) -> None:
    raw = csv_bytes(CUSTOMER_HEADER, "ACME,C001,Dupont,a@dupont.fr,,,", "GLOBEX,C001,Smith,ap@smith.co.uk,,,")
    import_csv(session, "customers", raw)
    query = select(Company.code, Customer.language).join(Customer.company).where(Customer.ref == "C001")
    languages = {code: language for code, language in session.execute(query)}
    assert languages == {"ACME": "fr", "GLOBEX": "en"}


def test_reimporting_the_same_customers_changes_nothing(session: Session, acme: Company) -> None:
    raw = csv_bytes(
        CUSTOMER_HEADER, "ACME,C001,Dupont,a@dupont.fr,,0102030405,pme", "ACME,C002,Durand,b@durand.fr,en,,"
    )
    import_csv(session, "customers", raw)
    audits = count(session, AuditEvent)
    report = import_csv(session, "customers", raw)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)
    assert count(session, Customer) == 2 and count(session, Contact) == 2
    assert count(session, AuditEvent) == audits


def test_changed_customer_is_updated_and_audited(session: Session, acme: Company) -> None:
    import_csv(session, "customers", csv_bytes(CUSTOMER_HEADER, "ACME,C001,Dupont,a@dupont.fr,fr,,pme"))
    contact = session.scalars(select(Contact)).one()
    version = contact.link_version

    raw = csv_bytes(CUSTOMER_HEADER, "ACME,C001,Dupont SA,compta@dupont.fr,fr,,pme")
    report = import_csv(session, "customers", raw)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 0)

    customer = session.scalars(select(Customer)).one()
    assert customer.name == "Dupont SA"
    assert customer.primary_contact is not None and customer.primary_contact.email == "compta@dupont.fr"
    # Links sent to the old address stop working once the address changes.
    assert customer.primary_contact.link_version == version + 1
    [event] = audit_events(session, "customer.updated")
    assert (event.actor_type, event.actor, event.entity_type, event.entity_id, event.customer_id) == (
        "system",
        "import",
        "customer",
        customer.id,
        customer.id,
    )
    assert event.before == {"name": "Dupont", "email": "a@dupont.fr"}
    assert event.after == {"name": "Dupont SA", "email": "compta@dupont.fr"}


def test_language_phone_and_segment_changes_are_updates(session: Session, acme: Company, client: Customer) -> None:
    email = client.primary_contact.email  # type: ignore[union-attr]
    raw = csv_bytes(CUSTOMER_HEADER, f"ACME,C001,{client.name},{email},en,0600000000,grands-comptes")
    assert import_csv(session, "customers", raw).updated == 1
    [event] = audit_events(session, "customer.updated")
    assert event.before == {"language": "fr", "segment": None, "phone": None, "contact_language": "fr"}
    assert event.after == {
        "language": "en",
        "segment": "grands-comptes",
        "phone": "0600000000",
        "contact_language": "en",
    }
    session.refresh(client)
    assert client.language == "en" and client.primary_contact.language == "en"  # type: ignore[union-attr]


def test_identical_duplicate_customer_lines_are_fine(session: Session, acme: Company) -> None:
    line = "ACME,C001,Dupont,a@dupont.fr,FR,,"
    report = import_csv(session, "customers", csv_bytes(CUSTOMER_HEADER, line, line.replace("FR", "fr")))
    assert report.created == 1 and count(session, Customer) == 1


def test_every_bad_customer_line_is_reported_and_nothing_written(session: Session, acme: Company) -> None:
    raw = csv_bytes(
        CUSTOMER_HEADER,
        "ACME,C001,Dupont,a@dupont.fr,fr,,",  # 2: good
        "NOPE,C002,Durand,b@durand.fr,fr,,",  # 3
        "ACME,C003,Martin,not-an-email,fr,,",  # 4
        "ACME,C004,Bernard,c@bernard.fr,de,,",  # 5
        "ACME,,Petit,d@petit.fr,fr,,",  # 6
        "ACME,C005,,e@x.fr,fr,,",  # 7
        "ACME,C001,Dupont Autre,a@dupont.fr,fr,,",  # 8: same ref as line 2, different name
        "ACME,C006,Roux,f@roux.fr;g@roux.fr,fr,,",  # 9
        "ACME,C007,Too,many,values,,,",  # 10
        "ACME,C008,Empty email,,fr,,",  # 11
    )
    assert failure(session, "customers", raw) == [
        "line 3: unknown company 'NOPE'",
        "line 4: email 'not-an-email' is not an email address (one address per line)",
        "line 5: language 'de' must be fr or en",
        "line 6: customer_ref is empty",
        "line 7: name is empty",
        "line 8: customer 'C001' is already on line 2 with different values",
        "line 9: email 'f@roux.fr;g@roux.fr' is not an email address (one address per line)",
        "line 10: expected 7 values, found 8 (a ',' inside a value needs quotes)",
        "line 11: email is empty",
    ]
    assert count(session, Customer) == 0 and count(session, Contact) == 0


def test_several_problems_on_one_line_are_reported_together(session: Session, acme: Company) -> None:
    raw = csv_bytes(CUSTOMER_HEADER, "ACME,C001,,bad,xx,,")
    assert failure(session, "customers", raw) == [
        "line 2: name is empty; email 'bad' is not an email address (one address per line); "
        "language 'xx' must be fr or en"
    ]


def test_overlong_customer_fields_are_refused(session: Session, acme: Company) -> None:
    raw = csv_bytes(CUSTOMER_HEADER, f"ACME,{'R' * 65},Dupont,a@dupont.fr,fr,,")
    assert failure(session, "customers", raw) == ["line 2: customer_ref is longer than 64 characters"]


def test_control_characters_in_any_field_are_refused_naming_line_and_column(session: Session, acme: Company) -> None:
    # A quoted value may hold a line break: in a customer's name it broke every email naming it.
    raw = csv_bytes(
        CUSTOMER_HEADER,
        'ACME,C001,"Dupont\nFreres",a@dupont.fr,fr,,',  # 2 and 3 (the value spans two lines of the file)
        "ACME,C002,Durand,b@durand.fr,fr,01 23\t45,",  # 4
        "ACME,C003,Martin\x1b[31m,c@martin.fr,fr,,pme\u2028x",  # 5
        "ACME,C004,Bernard,d@bernard.fr,fr,,",  # 6: good, still not written
    )
    assert failure(session, "customers", raw) == [
        "line 2: name contains a line break, tab or other control character (U+000A); remove it",
        "line 4: phone contains a line break, tab or other control character (U+0009); remove it",
        "line 5: name contains a line break, tab or other control character (U+001B); remove it; "
        "segment contains a line break, tab or other control character (U+2028); remove it",
    ]
    assert count(session, Customer) == 0


def test_control_characters_in_invoice_fields_are_refused(session: Session, acme: Company, client: Customer) -> None:
    raw = csv_bytes(INVOICE_HEADER, 'ACME,C001,"F-1\rA",2026-10-01,2026-10-31,EUR,100,,',  # 2 and 3
                    "ACME,C001,F\x00-2,2026-10-01,2026-10-31,EUR,100,,")  # 4
    errors = errors_of(session, "invoices", raw)
    assert errors.by_line("en") == [
        (2, "number contains a line break, tab or other control character (U+000D); remove it"),
        (4, "number contains a line break, tab or other control character (U+0000); remove it"),
    ]
    assert errors.by_line("fr")[0][1].startswith("number contient un saut de ligne")
    assert count(session, Invoice) == 0


# --- file-level problems -------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"\n\n  \n", b"\xef\xbb\xbf"])
def test_empty_file(session: Session, raw: bytes) -> None:
    assert failure(session, "customers", raw) == ["line 1: the file is empty"]


def test_header_without_data_lines(session: Session) -> None:
    assert failure(session, "customers", csv_bytes(CUSTOMER_HEADER)) == [
        "line 1: the file has a header but no data lines"
    ]


def test_not_utf8_names_the_line(session: Session, acme: Company) -> None:
    raw = csv_bytes(CUSTOMER_HEADER, "ACME,C001,Dupont,a@dupont.fr,fr,,") + "ACME,C002,Société,b@x.fr,fr,,\n".encode(
        "latin-1"
    )
    [message] = failure(session, "customers", raw)
    assert message.startswith("line 3: the file is not UTF-8 text (byte 0xe9)")
    assert count(session, Customer) == 0


def test_missing_and_unknown_columns(session: Session) -> None:
    raw = csv_bytes("company,customer_ref,name,mail,language,phone,segment,notes", "ACME,C1,X,a@b.fr,fr,,,hi")
    [message] = failure(session, "customers", raw)
    assert message.startswith("line 1: unknown column 'mail'; unknown column 'notes'; missing column(s) email")
    assert "(expected company,customer_ref,name,email,language,phone,segment)" in message


def test_duplicated_and_unnamed_columns(session: Session) -> None:
    raw = csv_bytes(CUSTOMER_HEADER + ",,Email", "x")
    [message] = failure(session, "customers", raw)
    assert message.startswith("line 1: column 8 has no name; duplicated column(s) email")


def test_type_column_is_only_for_invoices(session: Session) -> None:
    [message] = failure(session, "customers", csv_bytes(CUSTOMER_HEADER + ",type", "ACME,C1,X,a@b.fr,fr,,,invoice"))
    assert message.startswith("line 1: unknown column 'type'")


def test_too_many_data_lines(session: Session, acme: Company) -> None:
    lines = [f"ACME,C{n},Name {n},a{n}@x.fr,fr,," for n in range(MAX_DATA_LINES)]
    lines.append("a bad line counts too")
    assert failure(session, "customers", csv_bytes(CUSTOMER_HEADER, *lines)) == [
        "line 1: the file has more than 50,000 data lines; split it into smaller files"
    ]


def test_old_mac_line_endings(session: Session, acme: Company) -> None:
    raw = "\r".join([CUSTOMER_HEADER.replace(",", ";"), "ACME;C001;Dupont, Fils;a@dupont.fr;;;", ""]).encode()
    assert import_csv(session, "customers", raw).created == 1


def test_blank_and_separator_only_lines_are_skipped_and_numbering_follows_the_file(
    session: Session, acme: Company
) -> None:
    raw = csv_bytes(
        CUSTOMER_HEADER,
        "",
        ",,,,,,",
        'ACME,C001,"Dupont',
        'and Sons",a@dupont.fr,fr,,',  # a quoted value spanning two lines: refused, but counted as two
        "ACME,C002,Durand,bad,fr,,",
    )
    assert failure(session, "customers", raw) == [
        "line 4: name contains a line break, tab or other control character (U+000A); remove it",
        "line 6: email 'bad' is not an email address (one address per line)",
    ]


# --- invoices: creation --------------------------------------------------------------


def test_invoices_are_created_open(session: Session, acme: Company, client: Customer) -> None:
    raw = csv_bytes(
        INVOICE_HEADER,
        "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,1234.56,,",
        'ACME,C001,F-2,2026-10-01,2026-11-30,eur,"1 234,56",2,2026-10-11',
        "ACME,C001,F-3,2026-10-01,2026-11-30,EUR,10,1.75,2026-10-11",
        'ACME,C001,F-4,2026-10-01,2026-11-30,EUR,10,"2,5",2026-10-11',
    )
    report = import_csv(session, "invoices", raw)
    assert (report.created, report.updated, report.unchanged) == (4, 0, 0)
    first = invoice_by_number(session, "F-1")
    assert (first.customer_id, first.company_id, first.kind, first.currency) == (client.id, acme.id, "invoice", "EUR")
    assert (first.total_minor, first.open_minor, first.status) == (123456, 123456, "open")
    assert (first.issue_date, first.due_date) == (date(2026, 10, 1), date(2026, 10, 31))
    assert (first.discount_bps, first.discount_until) == (None, None)
    second = invoice_by_number(session, "F-2")
    assert (second.total_minor, second.discount_bps, second.discount_until) == (123456, 200, date(2026, 10, 11))
    assert invoice_by_number(session, "F-3").discount_bps == 175
    assert invoice_by_number(session, "F-4").discount_bps == 250


def test_semicolon_invoices_with_decimal_commas(session: Session, acme: Company, client: Customer) -> None:
    raw = csv_bytes(
        INVOICE_HEADER.replace(",", ";"),
        "ACME;C001;F-1;2026-10-01;2026-10-31;EUR;1 234,56;2,5;2026-10-10",
        "ACME;C001;F-2;2026-10-01;2026-10-31;EUR;1.234,5;;",
        "ACME;C001;F-3;2026-10-01;2026-10-31;EUR;99.9;;",
    )
    import_csv(session, "invoices", raw)
    assert invoice_by_number(session, "F-1").total_minor == 123456
    assert invoice_by_number(session, "F-1").discount_bps == 250
    assert invoice_by_number(session, "F-2").total_minor == 123450
    assert invoice_by_number(session, "F-3").total_minor == 9990


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [("JPY", "120000", 120000), ("KWD", "12.345", 12345), ("TND", "1,5", 1500), ("EUR", "7", 700)],
)
def test_amounts_use_each_currencys_decimals(
    session: Session, acme: Company, client: Customer, currency: str, amount: str, minor: int
) -> None:
    raw = csv_bytes(INVOICE_HEADER.replace(",", ";"), f"ACME;C001;F-1;2026-10-01;2026-10-31;{currency};{amount};;")
    import_csv(session, "invoices", raw)
    invoice = invoice_by_number(session, "F-1")
    assert (invoice.currency, invoice.total_minor, invoice.open_minor) == (currency, minor, minor)


@pytest.mark.parametrize(
    ("currency", "amount", "message"),
    [
        ("JPY", "1200.5", "'1200.5' has more than 0 decimals for JPY"),
        ("EUR", "12.345", "'12.345' has more than 2 decimals for EUR"),
        ("KWD", "1.2345", "'1.2345' has more than 3 decimals for KWD"),
    ],
)
def test_too_many_decimals_are_refused(
    session: Session, acme: Company, client: Customer, currency: str, amount: str, message: str
) -> None:
    raw = csv_bytes(INVOICE_HEADER, f"ACME,C001,F-1,2026-10-01,2026-10-31,{currency},{amount},,")
    assert failure(session, "invoices", raw) == [f"line 2: {message}"]


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("1,23E+05", "amount '1,23E+05' is in scientific notation; format the column as a plain number"),
        ("99999999999999999999", "amount '99999999999999999999' is too large"),
        ("NaN", "'NaN' is not an amount"),
        ("12 EUR", "'12 EUR' is not an amount"),
    ],
)
def test_unusable_amounts_are_refused(
    session: Session, acme: Company, client: Customer, amount: str, message: str
) -> None:
    raw = csv_bytes(INVOICE_HEADER.replace(",", ";"), f"ACME;C001;F-1;2026-10-01;2026-10-31;EUR;{amount};;")
    assert failure(session, "invoices", raw) == [f"line 2: {message}"]


def test_credit_notes(session: Session, acme: Company, client: Customer) -> None:
    raw = csv_bytes(
        INVOICE_HEADER + ",type",
        "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,100,,,invoice",
        "ACME,C001,AV-1,2026-10-05,2026-10-05,EUR,30,,,Credit_Note",
        "ACME,C001,F-2,2026-10-01,2026-10-31,EUR,100,,,",
    )
    assert import_csv(session, "invoices", raw).created == 3
    credit = invoice_by_number(session, "AV-1")
    assert (credit.kind, credit.total_minor, credit.open_minor, credit.status) == ("credit_note", 3000, 3000, "open")
    assert invoice_by_number(session, "F-2").kind == "invoice"


def test_type_column_may_come_anywhere(session: Session, acme: Company, client: Customer) -> None:
    raw = csv_bytes("type," + INVOICE_HEADER, "credit_note,ACME,C001,AV-1,2026-10-05,2026-10-05,EUR,30,,")
    import_csv(session, "invoices", raw)
    assert invoice_by_number(session, "AV-1").kind == "credit_note"


def test_customer_refs_are_looked_up_in_the_lines_company(
    session: Session, acme: Company, globex: Company, client: Customer
) -> None:
    other = factories.customer(session, globex, ref="C001")
    raw = csv_bytes(
        INVOICE_HEADER,
        "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,100,,",
        "GLOBEX,C001,F-1,2026-10-01,2026-10-31,GBP,100,,",
    )
    assert import_csv(session, "invoices", raw).created == 2
    query = select(Invoice.company_id, Invoice.customer_id)
    owners = {(company_id, customer_id) for company_id, customer_id in session.execute(query)}
    assert owners == {(acme.id, client.id), (globex.id, other.id)}


# --- invoices: bad lines -------------------------------------------------------------


def test_every_bad_invoice_line_is_reported_and_nothing_written(
    session: Session, acme: Company, client: Customer
) -> None:
    raw = csv_bytes(
        INVOICE_HEADER + ",type",
        "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,100,,,",  # 2: good
        "ACME,C001,F-2,2026-10-01,2026-10-31,XYZ,100,,,",  # 3
        "ACME,C404,F-3,2026-10-01,2026-10-31,EUR,100,,,",  # 4
        "NOPE,C001,F-4,2026-10-01,2026-10-31,EUR,100,,,",  # 5
        "ACME,C001,F-5,01/10/2026,2026-10-31,EUR,100,,,",  # 6
        "ACME,C001,F-6,2026-10-01,2026-09-30,EUR,100,,,",  # 7
        "ACME,C001,F-7,2026-10-01,2026-10-31,EUR,0,,,",  # 8
        "ACME,C001,F-8,2026-10-01,2026-10-31,EUR,-5,,,",  # 9
        "ACME,C001,F-9,2026-10-01,2026-10-31,EUR,abc,,,",  # 10
        "ACME,C001,F-10,2026-10-01,2026-10-31,EUR,100,2,,",  # 11
        "ACME,C001,F-11,2026-10-01,2026-10-31,EUR,100,,2026-10-10,",  # 12
        "ACME,C001,F-12,2026-10-01,2026-10-31,EUR,100,100,2026-10-10,",  # 13
        "ACME,C001,F-13,2026-10-01,2026-10-31,EUR,100,0,2026-10-10,",  # 14
        "ACME,C001,F-14,2026-10-01,2026-10-31,EUR,100,1.255,2026-10-10,",  # 15
        "ACME,C001,F-15,2026-10-01,2026-10-31,EUR,100,deux,2026-10-10,",  # 16
        "ACME,C001,AV-1,2026-10-01,2026-10-31,EUR,100,2,2026-10-10,credit_note",  # 17
        "ACME,C001,F-16,2026-10-01,2026-10-31,EUR,100,,,facture",  # 18
        "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,200,,,",  # 19: F-1 again, another amount
        "ACME,C001,F-17,2026-02-30,2026-10-31,EUR,100,,,",  # 20
        "ACME,C001,,2026-10-01,2026-10-31,EUR,100,,,",  # 21
        "ACME,C001,F-18,2026-10-01,,EUR,100,,,",  # 22
        "ACME,C001,F-19,2026-10-01,2026-10-31,,100,,,",  # 23
        "ACME,C001,F-20,2026-10-01,2026-10-31,EUR,,,,",  # 24
        "ACME,C001,F-21,2026-10-01,2026-10-31,EUR,1,5,,,",  # 25: unquoted decimal comma
    )
    assert failure(session, "invoices", raw) == [
        "line 3: unknown currency 'XYZ'",
        "line 4: unknown customer 'C404' in company ACME",
        "line 5: unknown company 'NOPE'",
        "line 6: issue_date '01/10/2026' is not a date (expected YYYY-MM-DD)",
        "line 7: due_date 2026-09-30 is before issue_date 2026-10-01",
        "line 8: amount must be positive",
        "line 9: amount must be positive",
        "line 10: 'abc' is not an amount",
        "line 11: discount_until is empty but discount_percent is given",
        "line 12: discount_percent is empty but discount_until is given",
        "line 13: discount_percent '100' must be above 0 and below 100",
        "line 14: discount_percent '0' must be above 0 and below 100",
        "line 15: discount_percent '1.255' has more than 2 decimals",
        "line 16: discount_percent 'deux' is not a number",
        "line 17: a credit note cannot carry a discount",
        "line 18: type 'facture' must be invoice or credit_note",
        "line 19: invoice F-1 is already on line 2 with different values",
        "line 20: issue_date '2026-02-30' is not a date (expected YYYY-MM-DD)",
        "line 21: number is empty",
        "line 22: due_date is empty",
        "line 23: currency is empty",
        "line 24: amount is empty",
        "line 25: expected 10 values, found 11 (a ',' inside a value needs quotes)",
    ]
    assert count(session, Invoice) == 0
    assert count(session, AuditEvent) == 0


def test_identical_duplicate_invoice_lines_are_fine(session: Session, acme: Company, client: Customer) -> None:
    line = "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,100,,"
    report = import_csv(session, "invoices", csv_bytes(INVOICE_HEADER, line, line.replace("100", "100.00")))
    assert report.created == 1 and count(session, Invoice) == 1


def test_existing_number_for_another_customer_currency_or_type(
    session: Session, acme: Company, client: Customer
) -> None:
    other = factories.customer(session, acme, ref="C002")
    factories.invoice(session, client, number="F-12")
    factories.invoice(session, client, number="F-13")
    factories.invoice(session, client, number="F-14")
    raw = csv_bytes(
        INVOICE_HEADER + ",type",
        f"ACME,{other.ref},F-12,2026-10-01,2026-10-31,EUR,100,,,",
        "ACME,C001,F-13,2026-10-01,2026-10-31,USD,100,,,",
        "ACME,C001,F-14,2026-10-01,2026-10-31,EUR,100,,,credit_note",
        "ACME,C001,F-15,2026-10-01,2026-10-31,EUR,100,,,",
    )
    assert failure(session, "invoices", raw) == [
        "line 2: invoice F-12 already exists for customer C001",
        "line 3: invoice F-13 already exists in EUR",
        "line 4: F-14 already exists as an invoice, not a credit note",
    ]
    assert count(session, Invoice) == 3


def test_new_total_below_what_is_settled_is_refused(session: Session, acme: Company, client: Customer) -> None:
    factories.invoice(session, client, number="F-1", total_minor=100_00, open_minor=30_00, status="partially_paid")
    raw = csv_bytes(INVOICE_HEADER, "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,69.99,,")
    assert failure(session, "invoices", raw) == [
        "line 2: amount 69.99 EUR is below the 70.00 EUR already settled on invoice F-1"
    ]
    assert invoice_by_number(session, "F-1").total_minor == 100_00


# --- invoices: updates ---------------------------------------------------------------


def test_reimporting_the_same_invoices_changes_nothing(session: Session, acme: Company, client: Customer) -> None:
    raw = csv_bytes(
        INVOICE_HEADER + ",type",
        "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,100,2,2026-10-10,",
        "ACME,C001,AV-1,2026-10-01,2026-10-01,EUR,20,,,credit_note",
        "ACME,C001,Y-1,2026-10-01,2026-10-31,JPY,5000,,,",
    )
    assert import_csv(session, "invoices", raw).created == 3
    before = [(i.id, i.total_minor, i.open_minor, i.status, i.updated_at) for i in session.scalars(select(Invoice))]
    audits = count(session, AuditEvent)  # the creation is on the customer's timeline and the company's trail
    assert audits == 2
    report = import_csv(session, "invoices", raw)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 3)
    after = [(i.id, i.total_minor, i.open_minor, i.status, i.updated_at) for i in session.scalars(select(Invoice))]
    assert after == before
    assert count(session, AuditEvent) == audits


def test_changed_amount_and_due_date_are_updated_and_audited(
    session: Session, acme: Company, client: Customer
) -> None:
    import_csv(session, "invoices", csv_bytes(INVOICE_HEADER, "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,100,,"))
    raw = csv_bytes(INVOICE_HEADER, "ACME,C001,F-1,2026-10-01,2026-11-15,EUR,120.50,,")
    report = import_csv(session, "invoices", raw)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 0)

    invoice = invoice_by_number(session, "F-1")
    assert (invoice.total_minor, invoice.open_minor, invoice.status) == (12050, 12050, "open")
    assert invoice.due_date == date(2026, 11, 15)
    [event] = audit_events(session, "invoice.updated")
    assert (event.actor_type, event.actor, event.entity_type, event.entity_id, event.customer_id) == (
        "system",
        "import",
        "invoice",
        invoice.id,
        client.id,
    )
    assert event.before == {"due_date": "2026-10-31", "total_minor": 10000, "open_minor": 10000}
    assert event.after == {"due_date": "2026-11-15", "total_minor": 12050, "open_minor": 12050}

    # The same file again: nothing more happens.
    assert import_csv(session, "invoices", raw).unchanged == 1
    assert len(audit_events(session, "invoice.updated")) == 1


def test_discount_terms_and_issue_date_changes_are_updates(
    session: Session, acme: Company, client: Customer
) -> None:
    factories.invoice(session, client, number="F-1", discount_bps=200, discount_until=date(2026, 10, 10))
    raw = csv_bytes(INVOICE_HEADER, "ACME,C001,F-1,2026-09-30,2026-10-31,EUR,100,,")
    assert import_csv(session, "invoices", raw).updated == 1
    invoice = invoice_by_number(session, "F-1")
    assert (invoice.issue_date, invoice.discount_bps, invoice.discount_until) == (date(2026, 9, 30), None, None)
    [event] = audit_events(session, "invoice.updated")
    assert event.before == {"issue_date": "2026-10-01", "discount_bps": 200, "discount_until": "2026-10-10"}
    assert event.after == {"issue_date": "2026-09-30", "discount_bps": None, "discount_until": None}


def test_update_keeps_what_was_already_allocated(session: Session, acme: Company, client: Customer) -> None:
    invoice = factories.invoice(session, client, number="F-1", total_minor=100_00)
    payment = Payment(
        customer_id=client.id, provider="stripe", provider_ref="pi_1", method="card", amount_minor=40_00,
        currency="EUR", status="succeeded",
    )
    session.add(payment)
    session.flush()
    session.add(Allocation(invoice_id=invoice.id, payment_id=payment.id, currency="EUR", amount_minor=38_00,
                           discount_minor=2_00))
    invoice.open_minor = 60_00
    invoice.status = "partially_paid"
    session.flush()

    raw = csv_bytes(INVOICE_HEADER, "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,150,,")
    assert import_csv(session, "invoices", raw).updated == 1
    session.refresh(invoice)
    assert (invoice.total_minor, invoice.open_minor, invoice.status) == (150_00, 110_00, "partially_paid")
    allocated = session.scalar(
        select(func.sum(Allocation.amount_minor + Allocation.discount_minor)).where(Allocation.invoice_id == invoice.id)
    )
    assert invoice.total_minor == invoice.open_minor + allocated


@pytest.mark.parametrize(
    ("status", "open_minor", "new_amount", "expected_open", "expected_status"),
    [
        ("partially_paid", 30_00, "70", 0, "paid"),  # lowered to exactly what was settled
        ("paid", 0, "120", 20_00, "partially_paid"),  # raised after full payment
        ("open", 100_00, "80", 80_00, "open"),
        ("disputed", 100_00, "80", 80_00, "disputed"),
        ("void", 100_00, "80", 80_00, "void"),
    ],
)
def test_status_follows_the_open_amount_except_disputed_and_void(
    session: Session,
    acme: Company,
    client: Customer,
    status: str,
    open_minor: int,
    new_amount: str,
    expected_open: int,
    expected_status: str,
) -> None:
    factories.invoice(session, client, number="F-1", total_minor=100_00, open_minor=open_minor, status=status)
    raw = csv_bytes(INVOICE_HEADER, f"ACME,C001,F-1,2026-10-01,2026-10-31,EUR,{new_amount},,")
    import_csv(session, "invoices", raw)
    invoice = invoice_by_number(session, "F-1")
    assert (invoice.open_minor, invoice.status) == (expected_open, expected_status)


def test_credit_note_amount_update(session: Session, acme: Company, client: Customer) -> None:
    factories.invoice(session, client, number="AV-1", total_minor=50_00, open_minor=20_00, kind=InvoiceKind.credit_note)
    raw = csv_bytes(INVOICE_HEADER + ",type", "ACME,C001,AV-1,2026-10-01,2026-10-31,EUR,60,,,credit_note")
    assert import_csv(session, "invoices", raw).updated == 1
    credit = invoice_by_number(session, "AV-1")
    assert (credit.total_minor, credit.open_minor, credit.status) == (60_00, 30_00, "partially_paid")


def test_import_flushes_but_leaves_the_commit_to_the_caller(session: Session, acme: Company, client: Customer) -> None:
    import_csv(session, "invoices", csv_bytes(INVOICE_HEADER, "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,100,,"))
    assert not session.new and not session.dirty
    session.rollback()
    assert count(session, Invoice) == 0


def test_a_large_file_imports_whole_and_reimports_unchanged(session: Session, acme: Company) -> None:
    # Speed is measured in bench/, never asserted here; this checks the batched paths are right.
    lines = 3_000
    customers = [f"ACME;C{n:05d};Client {n};ap{n}@example.com;;;" for n in range(600)]
    import_csv(session, "customers", csv_bytes(CUSTOMER_HEADER.replace(",", ";"), *customers))
    invoices = [
        f"ACME;C{n % 600:05d};F{n:06d};2026-10-01;2026-10-31;EUR;{n + 1},{n % 100:02d};;" for n in range(lines)
    ]
    raw = csv_bytes(INVOICE_HEADER.replace(",", ";"), *invoices)
    assert import_csv(session, "invoices", raw).created == lines
    assert import_csv(session, "invoices", raw).unchanged == lines
    assert count(session, Invoice) == lines


@pytest.mark.postgres
def test_import_on_postgresql(pg_session: Session) -> None:
    factories.company(pg_session, code="PG-ACME")
    customers = [f"PG-ACME;C{n:04d};Client {n};ap{n}@example.com;;;" for n in range(1_200)]
    raw = csv_bytes(CUSTOMER_HEADER.replace(",", ";"), *customers)
    assert import_csv(pg_session, "customers", raw).created == 1_200
    assert import_csv(pg_session, "customers", raw).unchanged == 1_200

    invoices = [f"PG-ACME;C{n:04d};PG-{n};2026-10-01;2026-10-31;KWD;{n + 1},125;;" for n in range(1_200)]
    raw = csv_bytes(INVOICE_HEADER.replace(",", ";"), *invoices)
    assert import_csv(pg_session, "invoices", raw).created == 1_200
    changed = csv_bytes(INVOICE_HEADER.replace(",", ";"), *invoices[:-1], invoices[-1].replace(",125", ",5"))
    report = import_csv(pg_session, "invoices", changed)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 1_199)
    last = pg_session.scalars(select(Invoice).where(Invoice.number == "PG-1199")).one()
    assert (last.customer.ref, last.total_minor, last.open_minor) == ("C1199", 1_200_500, 1_200_500)
    pg_session.commit()
    failure(pg_session, "invoices", csv_bytes(INVOICE_HEADER, "PG-ACME,C9999,PG-X,2026-10-01,2026-10-31,EUR,1,,"))
    assert pg_session.scalar(select(func.count()).select_from(Invoice).where(Invoice.number == "PG-X")) == 0


def test_invoices_without_discount_columns_take_the_companys_default_terms(
        session: Session, acme: Company, client: Customer) -> None:
    acme.default_discount_bps, acme.default_discount_days = 150, 10
    raw = csv_bytes(
        INVOICE_HEADER + ",type",
        "ACME,C001,F-1,2026-10-01,2026-10-31,EUR,100,,,",
        "ACME,C001,F-2,2026-10-01,2026-10-31,EUR,100,3,2026-10-05,",
        "ACME,C001,AV-1,2026-10-01,2026-10-01,EUR,20,,,credit_note",
    )
    assert import_csv(session, "invoices", raw).created == 3
    terms = {i.number: (i.discount_bps, i.discount_until) for i in session.scalars(select(Invoice))}
    assert terms == {"F-1": (150, date(2026, 10, 11)), "F-2": (300, date(2026, 10, 5)), "AV-1": (None, None)}
    report = import_csv(session, "invoices", raw)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 3)


# --- reasons in the reader's language ------------------------------------------------


def errors_of(session: Session, kind: str, raw: bytes) -> UserErrors:
    with pytest.raises(UserErrors) as caught:
        import_csv(session, kind, raw)  # type: ignore[arg-type]
    return caught.value


def texts(errors: UserErrors, language: str) -> list[str]:
    """Each bad line's problems, joined, as a page shows them."""
    return [problems for _line, problems in errors.by_line(language)]


def test_reasons_carry_named_values_and_read_in_french(session: Session, acme: Company, client: Customer) -> None:
    factories.invoice(session, client, number="F-9", total_minor=100_00, open_minor=30_00, status="partially_paid")
    raw = csv_bytes(
        INVOICE_HEADER,
        "ACME,C001,F-1,01/10/2026,2026-10-31,XYZ,100,,",  # 2: two reasons
        "ACME,C404,F-2,2026-10-01,2026-10-31,EUR,\"1 234,567\",,",  # 3
        "ACME,C001,F-9,2026-10-01,2026-10-31,EUR,69.9,,",  # 4: below what is settled
        "ACME,C001,F-4,2026-10-01,2026-10-31,EUR,100,,,",  # 5
    )
    errors = errors_of(session, "invoices", raw)
    assert [line for line, _problems in errors.by_line("en")] == [2, 3, 4, 5]
    date_reason = errors.errors[0]
    assert (date_reason.message, dict(date_reason.values), date_reason.line) == (
        "%(column)s %(value)s is not a date (expected YYYY-MM-DD)", {"column": "issue_date", "value": "'01/10/2026'"},
        2)
    assert texts(errors, "fr") == [
        "issue_date '01/10/2026' n’est pas une date (format attendu AAAA-MM-JJ) ; devise inconnue 'XYZ'",
        "'1 234,567' a plus de 2 décimales pour la devise EUR",
        "le montant 69,90\u00a0€ est inférieur aux 70,00\u00a0€ déjà réglés sur la facture F-9",
        "9 valeurs attendues, 10 trouvées (un « , » dans une valeur doit être entre guillemets)",
    ]
    # English stays what the command line has always printed
    assert texts(errors, "en") == [
        "issue_date '01/10/2026' is not a date (expected YYYY-MM-DD); unknown currency 'XYZ'",
        "'1 234,567' has more than 2 decimals for EUR",
        "amount 69.90 EUR is below the 70.00 EUR already settled on invoice F-9",
        "expected 9 values, found 10 (a ',' inside a value needs quotes)",
    ]
    # the customer is only unknown once the line parses: reported on its own
    assert texts(errors_of(session, "invoices", csv_bytes(INVOICE_HEADER, "ACME,C404,F-2,2026-10-01,2026-10-31,EUR,1,,")),
                 "fr") == ["client inconnu 'C404' dans la société ACME"]


def test_file_level_reasons_read_in_french(session: Session, acme: Company) -> None:
    header = errors_of(session, "customers", csv_bytes("company,customer_ref,nom,email,email,language,phone,segment",
                                                       "ACME,C1,X,a@x.fr,a@x.fr,fr,,"))
    assert texts(header, "fr")[0] == (
        "colonne inconnue 'nom' ; colonne(s) en double email ; colonne(s) manquante(s) name "
        "(colonnes attendues : company,customer_ref,name,email,language,phone,segment)")
    assert str(header).startswith("unknown column 'nom'; duplicated column(s) email; missing column(s) name "
                                        "(expected company,")
    assert texts(errors_of(session, "customers", b""), "fr") == ["le fichier est vide"]
    lines = [f"ACME,C{n},Name {n},a{n}@x.fr,fr,," for n in range(MAX_DATA_LINES + 1)]
    too_many = errors_of(session, "customers", csv_bytes(CUSTOMER_HEADER, *lines))
    assert texts(too_many, "fr")[0] == ("le fichier compte plus de 50\u202f000 lignes de données ; "
                                     "découpez-le en fichiers plus petits")


def test_every_reason_message_has_a_french_translation() -> None:
    """Each message a reason can carry (read from the source) reads differently in French."""
    import ast
    from pathlib import Path

    from kernel import i18n
    from ledger import csv_import

    tree = ast.parse(Path(csv_import.__file__).read_text(encoding="utf-8"))
    messages = {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "N_"
                and isinstance(node.args[0], ast.Constant)}
    assert len(messages) > 40
    french = i18n.translations("fr")
    assert sorted(m for m in messages if french.gettext(m) == m) == []


# --- further contacts (`encours import contacts FILE --company CODE`) ---------------------------------

CONTACT_HEADER = "customer_ref,email,name,phone,language,role,receives_reminders"


def test_contacts_are_added_updated_by_address_and_never_change_the_primary(session: Session, acme: Company,
                                                                           client: Customer) -> None:
    from ledger.csv_import import import_contacts

    primary = client.primary_contact
    assert primary is not None
    raw = csv_bytes(CONTACT_HEADER, "C001,boss@c001.test,Ann Boss,,en,manager,no",
                    f"C001,{primary.email.upper()},Primary Person,+33 1,fr,accounts_payable,yes")
    report = import_contacts(session, raw, company_code="ACME", allowed_companies=["ACME"], actor="boss@x.test")
    assert (report.created, report.updated, report.unchanged) == (1, 1, 0)
    session.expire_all()
    contacts = {c.email: c for c in client.contacts}
    assert contacts["boss@c001.test"].role == "manager" and not contacts["boss@c001.test"].receives_reminders
    assert not contacts["boss@c001.test"].is_primary and client.primary_contact is primary
    assert primary.name == "Primary Person" and primary.role == "accounts_payable"
    # one event for the company, one on the customer's timeline
    assert [(e.entity_type, e.actor) for e in audit_events(session, "import.contacts")] == [
        ("company", "boss@x.test"), ("customer", "boss@x.test")]
    again = import_contacts(session, raw, company_code="ACME")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)


def test_a_bad_contacts_file_imports_nothing_and_names_every_bad_line(session: Session, acme: Company,
                                                                    client: Customer) -> None:
    from ledger.csv_import import import_contacts

    before = count(session, Contact)
    raw = csv_bytes(CONTACT_HEADER, "C001,ok@c001.test,,,,,", "C404,x@c001.test,,,,,", "C001,ok@c001.test,Other,,,,",
                    "C001,bad,,,de,chief,perhaps")
    with pytest.raises(UserErrors) as caught:
        import_contacts(session, raw, company_code="ACME")
    lines = caught.value.by_line("en")
    assert [line for line, _problems in lines] == [3, 4, 5]
    assert "already on line 2 with different values" in lines[1][1]
    assert count(session, Contact) == before
    with pytest.raises(UserErrors) as refused:
        import_contacts(session, raw, company_code="ACME", allowed_companies=["OTHER"])
    assert "you may not import into company 'ACME'" in refused.value.by_line("en")[0][1]
