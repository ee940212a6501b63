"""`encours import` through the real console script, against a fresh SQLite file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ENCOURS = str(Path(sys.executable).with_name("encours"))

CUSTOMERS = """company;customer_ref;name;email;language;phone;segment
ACME;C001;Dupont SA;compta@dupont.fr;fr;+33 1 23 45 67 89;pme
ACME;C002;Smith Ltd;ap@smith.co.uk;en;;
"""

INVOICES = """company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until,type
ACME,C001,F-1,2026-10-01,2026-10-31,EUR,1234.56,2,2026-10-10,
ACME,C001,F-2,2026-10-01,2026-10-31,EUR,"99,90",,,
ACME,C002,AV-1,2026-10-05,2026-10-05,EUR,50,,,credit_note
"""


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ENCOURS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENCOURS_")}
    env["ENCOURS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'encours.sqlite3'}"
    upgraded = run(tmp_path, env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    created = run(tmp_path, env, "company", "create", "ACME", "--name", "Acme SAS", "--currency", "EUR")
    assert created.returncode == 0, created.stderr
    return env


def rows(tmp_path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "encours.sqlite3") as connection:
        return connection.execute(query).fetchall()


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> str:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return str(path)


def test_import_customers_then_invoices_then_again(tmp_path: Path, cli_env: dict[str, str]) -> None:
    customers = write(tmp_path, "customers.csv", CUSTOMERS, encoding="utf-8-sig")
    result = run(tmp_path, cli_env, "import", "customers", customers)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "customers.csv: 2 created, 0 updated, 0 unchanged"

    invoices = write(tmp_path, "invoices.csv", INVOICES)
    result = run(tmp_path, cli_env, "import", "invoices", invoices)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "invoices.csv: 3 created, 0 updated, 0 unchanged"
    assert rows(tmp_path, "SELECT number, kind, total_minor, open_minor, status FROM invoices ORDER BY number") == [
        ("AV-1", "credit_note", 5000, 5000, "open"),
        ("F-1", "invoice", 123456, 123456, "open"),
        ("F-2", "invoice", 9990, 9990, "open"),
    ]

    audited = rows(tmp_path, "SELECT count(*) FROM audit_events")  # imports are on the audit trail
    again = run(tmp_path, cli_env, "import", "invoices", invoices)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "invoices.csv: 0 created, 0 updated, 3 unchanged"
    assert rows(tmp_path, "SELECT count(*) FROM audit_events") == audited  # nothing changed, nothing audited


def test_changed_invoice_is_updated(tmp_path: Path, cli_env: dict[str, str]) -> None:
    run(tmp_path, cli_env, "import", "customers", write(tmp_path, "customers.csv", CUSTOMERS))
    run(tmp_path, cli_env, "import", "invoices", write(tmp_path, "invoices.csv", INVOICES))
    changed = write(tmp_path, "invoices.csv", INVOICES.replace('"99,90"', "120"))
    result = run(tmp_path, cli_env, "import", "invoices", changed)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "invoices.csv: 0 created, 1 updated, 2 unchanged"
    assert rows(tmp_path, "SELECT total_minor, open_minor FROM invoices WHERE number = 'F-2'") == [(12000, 12000)]
    assert ("invoice.updated", "import") in rows(tmp_path, "SELECT action, actor FROM audit_events")
    assert rows(tmp_path, "SELECT count(*) FROM audit_events WHERE action = 'invoice.updated'") == [(1,)]


def test_bad_file_reports_every_bad_line_and_imports_nothing(tmp_path: Path, cli_env: dict[str, str]) -> None:
    run(tmp_path, cli_env, "import", "customers", write(tmp_path, "customers.csv", CUSTOMERS))
    bad = write(
        tmp_path,
        "bad.csv",
        "company;customer_ref;number;issue_date;due_date;currency;amount;discount_percent;discount_until\n"
        "ACME;C001;F-1;2026-10-01;2026-10-31;EUR;100;;\n"
        "ACME;C001;F-2;2026-10-01;2026-10-31;XYZ;100;;\n"
        "ACME;C404;F-3;2026-10-01;2026-10-31;EUR;100;;\n"
        "ACME;C001;F-4;2026-10-01;2026-10-31;EUR;0;;\n",
    )
    result = run(tmp_path, cli_env, "import", "invoices", bad)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "encours: error: bad.csv: nothing imported, 3 bad line(s):",
        "  line 3: unknown currency 'XYZ'",
        "  line 4: unknown customer 'C404' in company ACME",
        "  line 5: amount must be positive",
    ]
    assert rows(tmp_path, "SELECT count(*) FROM invoices") == [(0,)]


def test_bad_header_and_bad_encoding(tmp_path: Path, cli_env: dict[str, str]) -> None:
    text = "company,customer_ref,nom,email,language,phone,segment\nACME,C1,X,a@b.fr,,,\n"
    header = write(tmp_path, "header.csv", text)
    result = run(tmp_path, cli_env, "import", "customers", header)
    assert result.returncode == 1
    assert "  line 1: unknown column 'nom'; missing column(s) name" in result.stderr

    latin = write(tmp_path, "latin.csv", CUSTOMERS.replace("Dupont", "Société"), encoding="latin-1")
    result = run(tmp_path, cli_env, "import", "customers", latin)
    assert result.returncode == 1
    assert "  line 2: the file is not UTF-8 text (byte 0xe9); export it as CSV UTF-8" in result.stderr
    assert rows(tmp_path, "SELECT count(*) FROM customers") == [(0,)]


def test_missing_file(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = run(tmp_path, cli_env, "import", "customers", "nope.csv")
    assert result.returncode == 1
    assert result.stderr.strip() == "encours: error: cannot read nope.csv: No such file or directory"


CONTACTS = """customer_ref,email,name,phone,language,role,receives_reminders
C001,direction@dupont.fr,Marie Dupont,+33 6 00 00 00 01,fr,manager,no
C001,compta2@dupont.fr,,,,accounts_payable,yes
C002,boss@smith.co.uk,John Smith,,en,other,
"""


def test_import_contacts_adds_further_contacts_with_roles_then_again(tmp_path: Path, cli_env: dict[str, str]) -> None:
    run(tmp_path, cli_env, "import", "customers", write(tmp_path, "customers.csv", CUSTOMERS))
    contacts = write(tmp_path, "contacts.csv", CONTACTS)
    result = run(tmp_path, cli_env, "import", "contacts", contacts, "--company", "ACME")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "contacts.csv: 3 created, 0 updated, 0 unchanged"
    assert rows(tmp_path, "SELECT c.ref, k.email, k.role, k.language, k.receives_reminders, k.is_primary "
                          "FROM contacts k JOIN customers c ON c.id = k.customer_id ORDER BY k.id") == [
        ("C001", "compta@dupont.fr", "accounts_payable", "fr", 1, 1),
        ("C002", "ap@smith.co.uk", "accounts_payable", "en", 1, 1),
        ("C001", "direction@dupont.fr", "manager", "fr", 0, 0),
        ("C001", "compta2@dupont.fr", "accounts_payable", "fr", 1, 0),
        ("C002", "boss@smith.co.uk", "other", "en", 1, 0),
    ]
    again = run(tmp_path, cli_env, "import", "contacts", contacts, "--company", "ACME")
    assert again.stdout.strip() == "contacts.csv: 0 created, 0 updated, 3 unchanged"
    changed = write(tmp_path, "contacts.csv", CONTACTS.replace("manager,no", "manager,yes"))
    assert run(tmp_path, cli_env, "import", "contacts", changed, "--company", "ACME").stdout.strip() == \
        "contacts.csv: 0 created, 1 updated, 2 unchanged"


def test_a_bad_contacts_file_reports_every_bad_line_and_imports_nothing(tmp_path: Path,
                                                                        cli_env: dict[str, str]) -> None:
    run(tmp_path, cli_env, "import", "customers", write(tmp_path, "customers.csv", CUSTOMERS))
    before = rows(tmp_path, "SELECT count(*) FROM contacts")
    bad = write(tmp_path, "bad.csv", "customer_ref;email;role;receives_reminders\n"
                                     "C001;ok@dupont.fr;manager;yes\n"
                                     "C404;x@dupont.fr;manager;yes\n"
                                     "C001;not-an-email;boss;maybe\n")
    result = run(tmp_path, cli_env, "import", "contacts", bad, "--company", "ACME")
    assert result.returncode == 1
    assert "nothing imported, 2 bad line(s)" in result.stderr
    assert "line 3: unknown customer 'C404' in company 'ACME'" in result.stderr
    assert "line 4: email 'not-an-email' is not an email address" in result.stderr
    assert "role 'boss' must be one of accounts_payable, manager, other" in result.stderr
    assert "receives_reminders 'maybe' must be yes or no" in result.stderr
    assert rows(tmp_path, "SELECT count(*) FROM contacts") == before
    unknown = run(tmp_path, cli_env, "import", "contacts", write(tmp_path, "c.csv", CONTACTS), "--company", "NOPE")
    assert unknown.returncode == 1 and "unknown company 'NOPE'" in unknown.stderr
