"""Every back-office list downloads as CSV and Excel: the page's filters and scope, typed cells,
formulas neutralised, the download on the audit trail. Files are read back as a user's tools read them."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from decimal import Decimal
from html import unescape

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin import spreadsheets
from ledger.csv_import import import_csv
from ledger.models import AuditEvent
from tests.admin.staff_book import book, signed_in  # noqa: F401 - fixtures

LISTS = ("customers", "invoices", "payments", "disputes", "promises", "audit")


def read_csv(body: bytes) -> list[dict[str, str]]:
    assert body.startswith("\ufeff".encode())  # Excel reads the accents right
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def read_xlsx(body: bytes) -> list[dict[str, object]]:
    sheet = load_workbook(io.BytesIO(body), read_only=True).active
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    return [dict(zip(rows[0], row)) for row in rows[1:]]


def export(client, name: str, fmt: str, query: str = "") -> bytes:  # type: ignore[no-untyped-def]
    response = client.get(f"/admin/exports/{name}.{fmt}" + (f"?{query}" if query else ""))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(spreadsheets.FORMATS[fmt].split(";")[0])
    assert "attachment" in response.headers["content-disposition"]
    return response.content


@pytest.fixture
def hostile(session: Session, book):  # type: ignore[no-untyped-def]
    """Customers and invoices loaded the way an ERP loads them, with names a spreadsheet would run."""
    customers = (
        "company,customer_ref,name,email,language,phone,segment\n"
        'NORTH,-EVIL,"=HYPERLINK(""http://evil.test"",""click"")",ap@evil.test,en,,\n'
        "NORTH,@SUM,+cmd|' /C calc'!A0,ap@sum.test,en,,\n"
    )
    invoices = (
        "company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until,type\n"
        "NORTH,-EVIL,=1+1,2026-09-01,2026-10-01,EUR,100.01,,,invoice\n"
        "NORTH,-EVIL,CN-1,2026-09-01,2026-10-01,EUR,0.03,,,credit_note\n"
        "NORTH,@SUM,@A1,2026-11-01,2026-11-20,EUR,33.33,,,invoice\n"
    )
    import_csv(session, "customers", customers.encode())
    import_csv(session, "invoices", invoices.encode())
    session.commit()


def test_every_list_downloads_in_both_formats(new_client, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    for name in LISTS:
        as_csv = read_csv(export(client, name, "csv"))
        as_xlsx = read_xlsx(export(client, name, "xlsx"))
        assert len(as_xlsx) == len(as_csv) + (name == "audit"), name  # the CSV download is audited in between
        if name in ("customers", "invoices"):  # the book has no payment, dispute or promise yet
            assert as_csv, name
    assert client.get("/admin/exports/nothing.csv").status_code == 404
    assert client.get("/admin/exports/invoices.pdf").status_code == 404


def test_invoices_export_types_numbers_and_dates(new_client, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    rows = {row["Number"]: row for row in read_csv(export(client, "invoices", "csv"))}
    assert set(rows) == {"N-1", "N-2", "S-1"}
    assert rows["N-1"]["Total"] == "1200.00" and rows["N-1"]["Currency"] == "EUR"
    assert rows["S-1"]["Open amount"] == "50.00" and rows["S-1"]["Currency"] == "GBP"
    assert rows["N-1"]["Due date"] == "2026-10-31"
    assert rows["N-1"]["Days late"] == "25"
    sheet = {row["Number"]: row for row in read_xlsx(export(client, "invoices", "xlsx"))}
    assert sheet["N-1"]["Total"] == 1200 and isinstance(sheet["N-1"]["Total"], (int, float))
    assert sheet["N-1"]["Due date"] == datetime(2026, 10, 31)
    assert sheet["N-1"]["Days late"] == 25


def test_formulas_are_neutralised_in_both_formats(new_client, book, hostile) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    for reader, fmt in ((read_csv, "csv"), (read_xlsx, "xlsx")):
        customers = {row["Ref"]: row for row in reader(export(client, "customers", fmt))}
        assert customers["'-EVIL"]["Name"] == "'=HYPERLINK(\"http://evil.test\",\"click\")"
        assert customers["'@SUM"]["Name"] == "'+cmd|' /C calc'!A0"
        invoices = {row["Number"]: row for row in reader(export(client, "invoices", fmt))}
        assert {"'=1+1", "'@A1", "CN-1"} <= set(invoices)
        assert invoices["'=1+1"]["Customer ref"] == "'-EVIL"
    # Negative amounts stay numbers: only text is neutralised.
    assert spreadsheets.neutralised("\tx") == "'\tx" and spreadsheets.neutralised("\rx") == "'\rx"
    assert spreadsheets.neutralised("a=b") == "a=b"


def test_exports_keep_the_filters_on_screen(new_client, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    page = client.get("/admin/invoices?company=SOUTH&overdue=1")
    links = set(re.findall(r'href="(/admin/exports/invoices\.[a-z]+\?[^"]*)"', unescape(page.text)))
    assert links == {"/admin/exports/invoices.csv?company=SOUTH&overdue=1",
                     "/admin/exports/invoices.xlsx?company=SOUTH&overdue=1"}
    for link in links:
        body = client.get(link).content
        rows = read_csv(body) if link.split("?")[0].endswith(".csv") else read_xlsx(body)
        assert [row["Number"] for row in rows] == ["S-1"]
    overdue = read_csv(export(client, "customers", "csv", "overdue=1&company=NORTH"))
    assert [row["Ref"] for row in overdue] == ["MINE"]
    assert read_csv(export(client, "invoices", "csv", "number=N-2"))[0]["Number"] == "N-2"


def test_exports_follow_the_role_scope(new_client, book) -> None:  # type: ignore[no-untyped-def]
    anne = signed_in(new_client, "anne@north.test")
    assert [row["Number"] for row in read_csv(export(anne, "invoices", "csv"))] == ["N-1"]
    assert [row["Ref"] for row in read_csv(export(anne, "customers", "csv"))] == ["MINE"]
    south = signed_in(new_client, "boss@south.test")
    assert [row["Ref"] for row in read_csv(export(south, "customers", "csv"))] == ["FAR"]


def test_aged_balance_adds_up(new_client, book, hostile) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test", language="fr")
    rows = {list(row.values())[0]: row for row in read_xlsx(export(client, "customers", "xlsx"))}
    assert "Impayé" in list(rows["'-EVIL"])[12] or "retard" in list(rows["'-EVIL"])[12].lower()  # French headers
    evil = rows["'-EVIL"]
    buckets = [evil[title] for title in list(evil)[7:12]]
    assert sum(Decimal(str(b)) for b in buckets) == Decimal(str(evil[list(evil)[6]]))  # aging == outstanding
    assert Decimal(str(evil[list(evil)[6]])) == Decimal("100.01")
    assert Decimal(str(evil[list(evil)[-1]])) == Decimal("99.98")  # net: less the credit note
    sums = read_csv(export(client, "customers", "csv"))
    for row in sums:
        values = list(row.values())
        if values[5]:
            assert sum(Decimal(v) for v in values[7:12]) == Decimal(values[6])
            assert sum(Decimal(v) for v in values[8:12]) == Decimal(values[12])
    assert {row[list(row)[0]] for row in sums} >= {"MINE", "OTHER", "FAR"}


def test_an_export_is_audited(new_client, session: Session, book) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@north.test")
    export(client, "payments", "xlsx", "status=succeeded")
    session.expire_all()
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "export.downloaded")).one()
    assert event.actor == "boss@north.test"
    assert event.after == {"list": "payments", "format": "xlsx", "filters": "status=succeeded"}


def test_csv_writer_streams_in_batches() -> None:
    rows = ([f"r{i}", i, date(2026, 1, 1)] for i in range(1200))
    chunks = list(spreadsheets.csv_chunks(["name", "n", "day"], rows, batch=500))
    assert len(chunks) == 4  # header, then 500, 500, 200 rows
    assert read_csv(b"".join(chunks))[-1] == {"name": "r1199", "n": "1199", "day": "2026-01-01"}
