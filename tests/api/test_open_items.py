from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.allocation import invariant_violations
from ledger.models import Invoice
from tests.api.conftest import CUSTOMER, invoice_body


def _book(client, auth, count: int = 10) -> None:
    client.put("/api/v1/customers/C001", json=CUSTOMER, headers=auth)
    items = [{**invoice_body(amount="100.00"), "number": f"F-{n}"} for n in range(count)]
    assert client.post("/api/v1/invoices:bulk", json={"items": items}, headers=auth).status_code == 200


def test_snapshot_settles_missing_outside_lowers_present_and_reports_higher(client, auth, session: Session):
    _book(client, auth)
    items = [{"number": f"F-{n}", "open_amount": "100.00"} for n in range(2, 10)]
    items[0]["open_amount"] = "40.00"   # F-2 lowered
    items[1]["open_amount"] = "150.00"  # F-3 higher: reported only
    items.append({"number": "X-1", "open_amount": "5.00", "currency": "EUR"})
    answer = client.put("/api/v1/open-items", json={"items": items, "as_of": "2026-11-24"}, headers=auth)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["settled_outside"] == ["F-0", "F-1"]
    assert report["lowered"] == ["F-2"]
    assert report["higher_not_applied"] == [{"number": "F-3", "encours_open_amount": "100.00",
                                             "snapshot_open_amount": "150.00"}]
    assert report["unknown"] == ["X-1"]
    f0 = session.scalar(select(Invoice).where(Invoice.number == "F-0"))
    session.refresh(f0)
    assert (f0.open_minor, f0.status, f0.settled_outside_minor, str(f0.settled_outside_on)) == (
        0, "paid", 100_00, "2026-11-24")
    # the ledger invariant and the dashboard's running totals (database triggers) still agree
    assert invariant_violations(session) == []
    events = client.get("/api/v1/events", headers=auth).json()["items"]
    assert [e["type"] for e in events].count("invoice.settled") == 3


def test_snapshot_closing_more_than_the_company_share_is_refused_unless_forced(client, auth, session: Session):
    _book(client, auth)
    truncated = {"items": [{"number": f"F-{n}", "open_amount": "100.00"} for n in range(5)]}
    refused = client.put("/api/v1/open-items", json=truncated, headers=auth)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "items"
    assert session.scalar(select(Invoice.open_minor).where(Invoice.number == "F-9")) == 100_00
    forced = client.put("/api/v1/open-items", json={**truncated, "force": True}, headers=auth)
    assert forced.status_code == 200 and len(forced.json()["settled_outside"]) == 5
    assert invariant_violations(session) == []


def test_snapshot_with_duplicate_numbers_or_wrong_decimals_is_refused(client, auth):
    _book(client, auth, 2)
    duplicate = {"items": [{"number": "F-0", "open_amount": "1.00"}, {"number": "F-0", "open_amount": "1.00"},
                           {"number": "F-1", "open_amount": "1.001"}]}
    answer = client.put("/api/v1/open-items", json=duplicate, headers=auth)
    assert answer.status_code == 422
    assert {e["field"] for e in answer.json()["errors"]} == {"items[1].number", "items[2].open_amount"}


def test_cli_imports_a_snapshot_file_and_refuses_a_truncated_one(tmp_path: Path, db_url: str) -> None:
    env = {"ENCOURS_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}", "PYTHONPATH": str(Path.cwd()),
           "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "encours.cli", *args], env=env, capture_output=True, text=True,
                              cwd=tmp_path)

    assert run("db", "upgrade").returncode == 0
    assert run("company", "create", "ACME", "--name", "Acme", "--currency", "EUR").returncode == 0
    (tmp_path / "c.csv").write_text("company,customer_ref,name,email,language,phone,segment\n"
                                    "ACME,C1,Dupont,a@dupont.example,fr,,\n")
    (tmp_path / "i.csv").write_text("company,customer_ref,number,issue_date,due_date,currency,amount,"
                                    "discount_percent,discount_until\n"
                                    + "".join(f"ACME,C1,F-{n},2026-11-01,2026-11-30,EUR,100.00,,\n" for n in range(5)))
    assert run("import", "customers", "c.csv").returncode == 0
    assert run("import", "invoices", "i.csv").returncode == 0
    (tmp_path / "open.csv").write_text("number,open_amount\nF-0,100.00\n")
    refused = run("import", "open-items", "open.csv", "--company", "ACME")
    assert refused.returncode == 1 and "would close 4 of the 5 open items" in refused.stderr
    (tmp_path / "open.csv").write_text("number,open_amount\nF-0,100.00\nF-1,20.00\nF-2,100\nF-3,100\nF-4,100\n")
    done = run("import", "open-items", "open.csv", "--company", "ACME")
    assert done.returncode == 0, done.stderr
    assert "1 lowered, 0 settled outside Encours, 4 unchanged" in done.stdout
    created = run("apikey", "create", "--company", "ACME", "--name", "erp")
    assert created.returncode == 0 and created.stdout.splitlines()[-1].startswith("enc_live_")
    assert run("apikey", "create", "--company", "ACME", "--name", "erp").returncode == 1
    assert run("apikey", "revoke", "erp", "--company", "ACME").returncode == 0
