"""The EPC QR code ("GiroCode") on the bank-transfer page and its PDF: decoded back, line by line."""

from __future__ import annotations

import base64
import io
import re
import subprocess
from pathlib import Path

import segno
import zxingcpp
from PIL import Image
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ledger.models import Checkout, Company, Customer, Invoice
from ledger.money import Money
from payments import epc_qr, rf
from reconciliation.accounts import add_account
from tests import factories
from tests.payments.conftest import company, customer, invoices  # noqa: F401 - its company has an IBAN and a BIC
from tests.portal.conftest import csrf_from, login

IBAN = "FR7630006000011234567890189"


def _decoded(image: Image.Image) -> list[str]:
    found = zxingcpp.read_barcodes(image)
    assert len(found) == 1, found
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    return found[0].bytes.decode("utf-8").split("\n")


def _details(**changes: object) -> epc_qr.TransferDetails:
    values: dict[str, object] = {"name": "Durand Industrie SAS", "iban": "FR76 3000 6000 0112 3456 7890 189",
                                 "bic": "AGRIFRPPXXX", "amount": Money(1724_56, "EUR"),
                                 "reference": rf.pretty(rf.make_reference(42))}
    values.update(changes)
    return epc_qr.TransferDetails(**values)  # type: ignore[arg-type]


def test_payload_follows_epc069_12_version_002() -> None:
    lines = epc_qr.payload(_details())
    assert lines is not None
    assert lines.decode("utf-8").split("\n") == [
        "BCD", "002", "1", "SCT", "AGRIFRPPXXX", "Durand Industrie SAS", IBAN, "EUR1724.56", "",
        rf.make_reference(42),  # structured remittance, compact; no unstructured line after it
    ]


def test_payload_amount_always_has_two_decimals_and_name_is_one_line_of_70() -> None:
    long_name = "Société Générale d'Équipements\nIndustriels et de Maintenance du Grand Sud-Ouest SAS"
    data = epc_qr.payload(_details(name=long_name, amount=Money(500_00, "EUR"), bic=None))
    assert data is not None
    lines = data.decode("utf-8").split("\n")
    assert lines[4] == ""  # no BIC: version 002 allows it inside the EEA
    assert lines[5] == "Société Générale d'Équipements Industriels et de Maintenance du Grand"
    assert len(lines[5]) <= 70 and lines[7] == "EUR500.00"


def test_no_code_where_the_standard_has_none() -> None:
    assert epc_qr.payload(_details(amount=Money(1724_56, "USD"))) is None  # euros only
    assert epc_qr.payload(_details(amount=Money(100_000_000_000, "EUR"))) is None  # above 999 999 999.99
    assert epc_qr.payload(_details(reference="RF00 1234")) is None  # a bad RF reference
    assert epc_qr.svg(_details(amount=Money(10_00, "GBP")), "t") is None
    assert epc_qr.png_data_uri(_details(amount=Money(10_00, "CHF"))) is None


def test_the_png_decodes_to_the_payload_with_level_m() -> None:
    uri = epc_qr.png_data_uri(_details())
    assert uri is not None and uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    found = zxingcpp.read_barcodes(image)
    assert found[0].ec_level == "M"
    assert _decoded(image)[-1] == rf.make_reference(42)


def _transfer_checkout(client: TestClient, session: Session, customer: Customer, invoices: list[Invoice]) -> Checkout:
    login(client, customer)
    token = csrf_from(client.get("/portal").text)
    response = client.post("/portal/pay", data={"csrf_token": token, "invoice": [str(i.id) for i in invoices],
                                                "method": "bank_transfer", "action": "pay"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/portal/pay/(\d+)/transfer", response.headers["location"])
    assert match
    checkout = session.get(Checkout, int(match.group(1)))
    assert checkout is not None and checkout.reference
    return checkout


def _expected_lines(company: Company, checkout: Checkout, amount: str) -> list[str]:
    return ["BCD", "002", "1", "SCT", "AGRIFRPPXXX", company.name, IBAN, amount, "", checkout.reference or ""]


def test_transfer_page_and_pdf_carry_the_code(client: TestClient, session: Session, company: Company,
                                              customer: Customer, invoices: list[Invoice], tmp_path: Path) -> None:
    checkout = _transfer_checkout(client, session, customer, invoices[:2])
    expected = _expected_lines(company, checkout, "EUR1724.56")  # 1 734,56 € less the 10,00 € discount

    html = client.get(f"/portal/pay/{checkout.id}/transfer").text
    svg = re.search(r'<svg [^>]*class="epc-qr".*?</svg>', html, re.S)
    assert svg, "no EPC QR code on the page"
    assert "<title>QR code pour votre application bancaire</title>" in svg.group(0)
    assert "Scannez ce code avec votre application bancaire" in html
    # The drawn modules are exactly those of the expected payload's symbol.
    drawn = re.search(r' d="([^"]+)"', svg.group(0))
    reference = segno.make_qr("\n".join(expected).encode("utf-8"), error="m", boost_error=False)
    assert drawn and drawn.group(1) == re.search(r' d="([^"]+)"', reference.svg_inline(scale=4)).group(1)  # type: ignore[union-attr]
    assert "<script>" not in html and "style=" not in svg.group(0)

    pdf = client.get(f"/portal/pay/{checkout.id}/transfer.pdf")
    assert pdf.status_code == 200
    (tmp_path / "transfer.pdf").write_bytes(pdf.content)
    subprocess.run(["pdftoppm", "-r", "200", "-png", "-f", "1", "-l", "1", str(tmp_path / "transfer.pdf"),
                    str(tmp_path / "page")], check=True)
    page = next(tmp_path.glob("page*.png"))
    assert _decoded(Image.open(page)) == expected


def test_no_code_for_a_transfer_in_another_currency(client: TestClient, session: Session, customer: Customer,
                                                    invoices: list[Invoice]) -> None:
    # The company takes dollars on an account of its own (as `encours company account add` registers it).
    add_account(session, customer.company.code, iban="GB33BUKB20201555555555", bic="BUKBGB22", currency="USD")
    dollars = factories.invoice(session, customer, total_minor=250_00, currency="USD", number="F-USD")
    session.commit()
    checkout = _transfer_checkout(client, session, customer, [dollars])
    html = client.get(f"/portal/pay/{checkout.id}/transfer").text
    assert rf.pretty(checkout.reference or "") in html
    assert "epc-qr" not in html and "<svg" not in html
    assert "GB33 BUKB 2020 1555 5555 55" in html  # the dollar account, not the company's euro IBAN
