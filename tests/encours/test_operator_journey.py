"""An operator sets Encours up and a debtor and a collector use it, through the product's own doors only.

The world is built the way an operator builds it: `encours db upgrade`, `encours company create`,
the ERP's CSV files through `encours import`, `encours user create`, `encours link`, and a real
`encours serve` on a free port. The debtor and the staff member then act over HTTP, reading CSRF
tokens from the forms as a browser does. No factory, no ORM insert, no internal helper sets anything
up: a row only a test creates would hide what a real operator hits (a company created by the CLI
once had no dispute reasons, so its debtors could not dispute anything).

Dates in the files are relative to the real today: the server is a separate process whose clock
the tests do not set. No time is asserted.
"""

from __future__ import annotations

import html
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

ENCOURS = str(Path(sys.executable).with_name("encours"))
SECRET = "journey-secret-key-0123456789abc"
PASSWORD = "a long staff password 42"
STAFF = "recouvrement@journey.test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Operator:
    """Runs `encours` as the operator would, against one database and one base URL."""

    def __init__(self, cwd: Path, url: str, port: int) -> None:
        self.cwd = cwd
        self.port = port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_"))}
        self.env.update(ENCOURS_DATABASE_URL=url, ENCOURS_SECRET_KEY=SECRET,
                        ENCOURS_BASE_URL=f"http://127.0.0.1:{port}", ENCOURS_STORAGE_DIR=str(cwd / "files"),
                        PYTHONUNBUFFERED="1")

    def __call__(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run([ENCOURS, *args], cwd=self.cwd, env=self.env, input=input, capture_output=True,
                                text=True, timeout=180, stdin=None if input is not None else subprocess.DEVNULL)
        assert result.returncode == 0, f"encours {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
        return result.stdout

    @contextmanager
    def serve(self) -> Iterator[subprocess.Popen[bytes]]:
        """`encours serve` answering for the block, stopped after it."""
        server = self._started()
        try:
            yield server
        finally:
            server.terminate()
            server.wait(timeout=20)

    def _started(self) -> subprocess.Popen[bytes]:
        server = subprocess.Popen([ENCOURS, "serve", "--host", "127.0.0.1", "--port", str(self.port)], cwd=self.cwd,
                                  env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _attempt in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            try:  # waits on the process itself: a server that died says why at once
                server.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"encours serve exited: {server.stderr.read().decode() if server.stderr else ''}")
        server.terminate()
        raise AssertionError("encours serve did not answer /healthz")


def csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return html.unescape(match.group(1))


def text_of(page: str) -> str:
    """The page's text as a reader sees it: tags out, entities decoded, spaces collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page))).replace("\u202f", " ").replace(
        "\u00a0", " ")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journey.sqlite3'}"
    # A name of its own: tests/e2e/test_operator_card_browser.py takes this fixture too, on the
    # same worker's server.
    return str(request.getfixturevalue("pg_server").create_database(f"operator_journey_{uuid.uuid4().hex[:12]}"))


@pytest.fixture
def operator(tmp_path: Path, database_url: str) -> Operator:
    return Operator(tmp_path, database_url, _free_port())


@pytest.fixture
def server(operator: Operator) -> Iterator[str]:
    """The book an operator loads on day one, then `encours serve`; yields the debtor's magic link."""
    today = datetime.now(timezone.utc).date()
    operator("db", "upgrade")
    assert "JOURNEY" in operator("company", "create", "JOURNEY", "--name", "Journey Industrie SAS",
                                 "--currency", "EUR")
    (operator.cwd / "customers.csv").write_text(
        "company,customer_ref,name,email,language,phone,segment\n"
        "JOURNEY,C-100,Boulangerie du Port,compta@boulangerie.test,en,,pme\n"
        "JOURNEY,C-200,Garage Central,factures@garage.test,en,,pme\n", encoding="utf-8")
    assert "2 created" in operator("import", "customers", str(operator.cwd / "customers.csv"))
    day = lambda offset: (today + timedelta(days=offset)).isoformat()  # noqa: E731
    (operator.cwd / "invoices.csv").write_text(
        "company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until\n"
        f"JOURNEY,C-100,F-100,{day(-60)},{day(-30)},EUR,1234.56,,\n"
        f"JOURNEY,C-100,F-101,{day(-5)},{day(25)},EUR,318.40,,\n"
        f"JOURNEY,C-200,F-200,{day(-50)},{day(-20)},EUR,999.00,,\n", encoding="utf-8")
    assert "3 created" in operator("import", "invoices", str(operator.cwd / "invoices.csv"))
    operator("user", "create", STAFF, "--role", "manager", "--company", "JOURNEY", "--password-stdin",
             input=PASSWORD + "\n")
    link = operator("link", "C-100", "--company", "JOURNEY").strip()
    assert link.startswith(f"http://127.0.0.1:{operator.port}/p/")
    with operator.serve():
        yield link


def test_a_debtor_and_a_collector_use_what_an_operator_set_up(operator: Operator, server: str) -> None:
    base = f"http://127.0.0.1:{operator.port}"
    with httpx.Client(base_url=base, timeout=30, headers={"Accept-Language": "en"}) as debtor:
        # The link opens the statement, with the amounts of the imported file.
        statement = debtor.get(server, follow_redirects=True)
        assert statement.status_code == 200 and statement.url.path == "/portal"
        shown = text_of(statement.text)
        assert "Boulangerie du Port" in shown and "F-100" in shown and "F-101" in shown
        assert "€1,234.56" in shown and "€318.40" in shown and "€1,552.96" in shown
        assert "F-200" not in shown and "Garage Central" not in shown  # another customer's book stays hidden
        invoice_ids = dict((number, int(i)) for i, number in re.findall(
            r'href="/portal/invoices/(\d+)">[^<]*?(F-\d+)', statement.text))
        assert set(invoice_ids) == {"F-100", "F-101"}

        invoice = debtor.get(f"/portal/invoices/{invoice_ids['F-100']}")
        assert invoice.status_code == 200 and "€1,234.56" in text_of(invoice.text)
        pdf = debtor.get(f"/portal/invoices/{invoice_ids['F-100']}/pdf")
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF-")

        # A dispute with one of the reasons the company got when the CLI created it.
        form = debtor.get("/portal/requests/new", params={"kind": "dispute", "invoice": invoice_ids["F-100"]})
        assert form.status_code == 200
        reasons = re.findall(r'<option value="([a-z_]+)"', form.text)
        assert reasons == ["wrong_amount", "not_received", "quality", "already_paid", "wrong_customer",
                           "missing_po", "other"]
        opened = debtor.post("/portal/requests/new", data={
            "csrf_token": csrf(form.text), "kind": "dispute", "invoice": str(invoice_ids["F-100"]),
            "reason": "quality", "message": "Half of the pallets arrived broken.",
        }, files={"files": ("", b"", "application/octet-stream")})  # multipart, as the browser sends this form
        assert opened.status_code == 303, opened.text
        case_path = opened.headers["location"].split("?")[0]
        case_id = int(case_path.rsplit("/", 1)[1])
        assert "Quality problem" in text_of(debtor.get(case_path).text)

        # A promise to pay the other invoice in ten days.
        promise_form = debtor.get("/portal/promises/new", params={"invoice": invoice_ids["F-101"]})
        promised_for = (date.fromisoformat(re.search(r'min="([0-9-]+)"', promise_form.text).group(1))  # type: ignore[union-attr]
                        + timedelta(days=10)).isoformat()
        promised = debtor.post("/portal/promises/new", data={
            "csrf_token": csrf(promise_form.text), "invoice": str(invoice_ids["F-101"]), "date": promised_for})
        assert promised.status_code == 303 and promised.headers["location"].startswith("/portal/requests")
        assert "€318.40" in text_of(debtor.get("/portal/requests").text)

    with httpx.Client(base_url=base, timeout=30, headers={"Accept-Language": "en"}) as staff:
        login_page = staff.get("/admin/login")
        signed_in = staff.post("/admin/login", data={"csrf_token": csrf(login_page.text), "email": STAFF,
                                                     "password": PASSWORD})
        assert signed_in.status_code == 303
        dashboard = staff.get("/admin")
        assert dashboard.status_code == 200 and "Journey Industrie SAS" in text_of(dashboard.text)

        customers = staff.get("/admin/customers")
        customer_path = re.search(r'href="(/admin/customers/\d+)">Boulangerie du Port<', customers.text)
        assert customer_path, "the imported customer is listed"
        customer = text_of(staff.get(customer_path.group(1)).text)
        assert "F-100" in customer and "F-101" in customer and "compta@boulangerie.test" in customer

        queue = staff.get("/admin/disputes")
        assert f'href="/admin/disputes/{case_id}"' in queue.text
        case = staff.get(f"/admin/disputes/{case_id}")
        case_text = text_of(case.text)
        assert "Quality problem" in case_text and "Half of the pallets arrived broken." in case_text
        answered = staff.post(f"/admin/disputes/{case_id}/reply", data={
            "csrf_token": csrf(case.text), "message": "We are sending replacement pallets this week.",
            "internal": "0"}, files={"files": ("", b"", "application/octet-stream")})
        assert answered.status_code == 303, answered.text

    with httpx.Client(base_url=base, timeout=30, headers={"Accept-Language": "en"}) as debtor_again:
        debtor_again.get(server, follow_redirects=True)  # a link opens as often as the debtor needs
        assert "We are sending replacement pallets this week." in text_of(debtor_again.get(case_path).text)

    # Reminders: C-100's invoices are disputed or promised, so only C-200 would be reminded.
    plan = operator("remind", "--company", "JOURNEY", "--dry-run")
    would_send = [line for line in plan.splitlines() if line.strip().startswith("would send")]
    assert len(would_send) == 1 and "C-200 -> factures@garage.test" in would_send[0], plan
    assert "F-200" in would_send[0] and "999.00 EUR" in would_send[0]
    assert "(dry run)" in plan.splitlines()[0]
