"""Bank reconciliation end to end: a company, its account, customers and invoices loaded with the
CLI; the debtor starts a bank transfer in the portal over HTTP and gets its RF reference; the
bank's camt.053 naming it is loaded with `encours import bank`; the invoices are paid, the
statement and the reminders know it, and loading the file again changes nothing."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.settings import load_settings
from tests.portal.conftest import csrf_from
from tests.reconciliation.camt_builder import Ntry, Tx
from tests.reconciliation.bank_world import camt, credit

ENCOURS = str(Path(sys.executable).with_name("encours"))
SECRET = "bank-cli-test-secret-0123456789ab"
IBAN = "FR7630006000011234567890189"

CUSTOMERS = """company;customer_ref;name;email;language;phone;segment
ACME;C-MARTIN;Boulangeries Martin SARL;compta@martin.fr;fr;;
ACME;C-PETIT;Garage Petit SAS;ap@petit.fr;fr;;
"""
INVOICES = """company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until
ACME,C-MARTIN,F-2026-0468,2026-10-01,2026-11-01,EUR,120.00,,
ACME,C-MARTIN,F-2026-0469,2026-10-05,2026-11-05,EUR,80.00,,
ACME,C-PETIT,F-2026-0470,2026-10-10,2026-11-01,EUR,175.00,,
"""


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_"))}
    env.update(ENCOURS_DATABASE_URL=url, ENCOURS_SECRET_KEY=SECRET, ENCOURS_BASE_URL="http://testserver")
    return env


@pytest.fixture
def book(tmp_path: Path) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'encours.sqlite3'}"
    (tmp_path / "customers.csv").write_text(CUSTOMERS)
    (tmp_path / "invoices.csv").write_text(INVOICES)
    for args in (("db", "upgrade"),
                 ("company", "create", "ACME", "--name", "Acme SAS", "--currency", "EUR"),
                 ("company", "account", "add", "ACME", "--iban", "fr76 3000 6000 0112 3456 7890 189", "--bic",
                  "BNPAFRPP"),
                 ("import", "customers", "customers.csv"), ("import", "invoices", "invoices.csv")):
        result = run(tmp_path, url, *args)
        assert result.returncode == 0, (args, result.stderr)
    return tmp_path, url


def run(cwd: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ENCOURS, *args], cwd=cwd, env=_env(url), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def rows(cwd: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(cwd / "encours.sqlite3") as connection:
        return connection.execute(query).fetchall()


def test_account_commands(book: tuple[Path, str]) -> None:
    cwd, url = book
    listed = run(cwd, url, "company", "account", "list", "ACME")
    assert listed.returncode == 0 and listed.stdout.split("\t")[:3] == [IBAN, "BNPAFRPP", "EUR"]
    again = run(cwd, url, "company", "account", "add", "ACME", "--iban", IBAN)
    assert again.returncode == 1
    assert again.stderr.strip() == f"encours: error: The account {IBAN} is already registered to company ACME."
    wrong = run(cwd, url, "company", "account", "add", "ACME", "--iban", "FR7630006000011234567890188")
    assert wrong.returncode == 1 and "check digits" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    assert rows(cwd, "SELECT iban, bic FROM companies") == [(IBAN, "BNPAFRPP")]  # the transfer page shows it


def test_a_portal_transfer_paid_at_the_bank_settles_the_invoices_and_stops_the_reminders(
        book: tuple[Path, str]) -> None:
    cwd, url = book
    link = run(cwd, url, "link", "C-MARTIN")
    assert link.returncode == 0, link.stderr
    app = create_app(load_settings(_env(url), env_file=None))
    with TestClient(app, base_url="http://testserver") as client:
        opened = client.get(link.stdout.strip().removeprefix("http://testserver"), follow_redirects=False)
        assert opened.status_code == 303
        token = csrf_from(client.get("/portal").text)
        ids = [str(i) for (i,) in rows(cwd, "SELECT id FROM invoices WHERE number IN ('F-2026-0468','F-2026-0469')")]
        started = client.post("/portal/pay", data={"csrf_token": token, "invoice": ids, "method": "bank_transfer",
                                                   "action": "pay"}, follow_redirects=False)
        assert started.status_code == 303, started.text
        page = client.get(started.headers["location"]).text
    found = re.search(r"RF\d\d(?: [A-Z0-9]{1,4})+", page)
    assert found, "the transfer page shows no RF reference"
    reference = found.group(0)

    before = run(cwd, url, "remind", "--date", "2026-11-25", "--dry-run")
    assert before.returncode == 0 and "F-2026-0468" in before.stdout and "F-2026-0470" in before.stdout

    statement = camt(
        credit("200.00", ref="E1", text=f"VIR SEPA {reference.lower()} BOULANGERIES MARTIN"),
        credit("175.00", ref="E2", name="GARAGE PETIT", iban="BE71096123456769", text="Facture F 2026 0470"),
        Ntry("49.90", side="DBIT", ref="D1", txs=(Tx("49.90", "Fournisseur SA", None, ustrd=("Abonnement",)),)))
    (cwd / "2026-11-25.xml").write_bytes(statement)
    imported = run(cwd, url, "import", "bank", "2026-11-25.xml")
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines() == [
        f"2026-11-25.xml: statement STMT-1 of {IBAN} (ACME): 3 entries read, 2 credits matched automatically, "
        "0 suggested, 0 left unmatched, 1 debits ignored, 0 already imported"]
    assert rows(cwd, "SELECT number, open_minor, status FROM invoices ORDER BY number") == [
        ("F-2026-0468", 0, "paid"), ("F-2026-0469", 0, "paid"), ("F-2026-0470", 0, "paid")]
    assert rows(cwd, "SELECT provider, method, status, amount_minor FROM payments ORDER BY id") == [
        ("bank", "bank_transfer", "succeeded", 200_00), ("bank", "bank_transfer", "succeeded", 175_00)]
    assert rows(cwd, "SELECT status FROM checkouts") == [("succeeded",)]

    after = run(cwd, url, "remind", "--date", "2026-11-25", "--dry-run")
    assert after.returncode == 0
    assert "F-2026-0468" not in after.stdout and "F-2026-0470" not in after.stdout

    with TestClient(create_app(load_settings(_env(url), env_file=None)), base_url="http://testserver") as client:
        client.get(run(cwd, url, "link", "C-MARTIN").stdout.strip().removeprefix("http://testserver"))
        portal = client.get("/portal").text
    assert "F-2026-0468" not in portal and "F-2026-0469" not in portal

    counts = rows(cwd, "SELECT (SELECT count(*) FROM bank_entries), (SELECT count(*) FROM payments), "
                       "(SELECT count(*) FROM allocations), (SELECT count(*) FROM bank_statements)")
    again = run(cwd, url, "import", "bank", "2026-11-25.xml")
    assert again.returncode == 0
    assert again.stdout.splitlines() == [
        f"2026-11-25.xml: statement STMT-1 of {IBAN} (ACME): 3 entries read, 0 credits matched automatically, "
        "0 suggested, 0 left unmatched, 0 debits ignored, 3 already imported"]
    assert rows(cwd, "SELECT (SELECT count(*) FROM bank_entries), (SELECT count(*) FROM payments), "
                     "(SELECT count(*) FROM allocations), (SELECT count(*) FROM bank_statements)") == counts


def test_refusals_are_one_line_and_import_nothing(book: tuple[Path, str]) -> None:
    cwd, url = book
    (cwd / "unknown.xml").write_bytes(camt(credit("120.00", ref="E1"), iban="DE89370400440532013000"))
    refused = run(cwd, url, "import", "bank", "unknown.xml")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "encours: error: unknown.xml: nothing imported: the account DE89370400440532013000 belongs to no company. "
        "Register it with `encours company account add CODE --iban DE89370400440532013000`, or name the company "
        "with --company."]
    (cwd / "broken.xml").write_bytes(camt(credit("120.00", ref="E1"))[:-40])
    broken = run(cwd, url, "import", "bank", "broken.xml")
    assert broken.returncode == 1 and "broken.xml: nothing imported" in broken.stderr
    missing = run(cwd, url, "import", "bank", "nowhere.xml")
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
    assert rows(cwd, "SELECT count(*) FROM bank_entries") == [(0,)]
    booked = run(cwd, url, "import", "bank", "unknown.xml", "--company", "ACME")
    assert booked.returncode == 0, booked.stderr
    assert "1 entries read" in booked.stdout and "not registered" in booked.stdout
    assert "--company" in run(cwd, url, "import", "bank", "--help").stdout
