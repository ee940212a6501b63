"""The EPC QR code ("GiroCode", EPC069-12 version 002) of a bank-transfer checkout: a banking
app scanning it pre-fills beneficiary, IBAN, BIC, amount and the RF reference.

The payload is written here, line by line, so its rules stay readable; `segno` draws the
symbol (pure Python, no dependency, SVG and PNG writers built in). segno's own
`helpers.make_epc_qr` picks an ISO 8859 character set by itself and trims an amount's trailing
zeros ("EUR500"); we want UTF-8 always and two decimals always ("EUR500.00"), both allowed by the
standard and read by every banking app, so only its QR encoder is used, with the standard's
constraints: error correction level M and at most version 13.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import segno

from ledger.money import Money
from payments import rf

MAX_NAME = 70
MAX_IBAN = 34
MAX_PAYLOAD_BYTES = 331
MAX_VERSION = 13
MIN_AMOUNT = Decimal("0.01")
MAX_AMOUNT = Decimal("999999999.99")


@dataclass(frozen=True)
class TransferDetails:
    name: str
    iban: str
    bic: str | None
    amount: Money
    reference: str  # ISO 11649 RF


def payload(details: TransferDetails) -> bytes | None:
    """The EPC069-12 text, or None when no EPC code can carry this transfer (not euros, an amount
    outside 0.01..999 999 999.99, a missing IBAN or an invalid RF reference)."""
    if details.amount.currency != "EUR":
        return None
    amount = details.amount.to_decimal()
    iban = "".join(details.iban.split()).upper()
    reference = rf.normalize(details.reference)
    bic = "".join((details.bic or "").split()).upper()
    if not MIN_AMOUNT <= amount <= MAX_AMOUNT or not 5 <= len(iban) <= MAX_IBAN or not rf.is_valid(reference):
        return None
    # A name is one line of at most 70 characters: line breaks would shift every later field.
    name = " ".join(details.name.split())[:MAX_NAME].strip()
    lines = [
        "BCD",  # service tag
        "002",  # version: the BIC may be left out inside the EEA
        "1",  # character set: UTF-8
        "SCT",  # SEPA credit transfer
        bic if len(bic) in (8, 11) else "",
        name,
        iban,
        f"EUR{amount:.2f}",
        "",  # purpose code: none
        reference,  # structured remittance; the unstructured line then stays out (one or the other)
    ]
    data = "\n".join(lines).encode("utf-8")
    return data if len(data) <= MAX_PAYLOAD_BYTES else None


def symbol(details: TransferDetails) -> segno.QRCode | None:
    data = payload(details)
    if data is None:
        return None
    code = segno.make_qr(data, error="m", boost_error=False)
    version = code.version  # an int: make_qr never makes a Micro QR code (versions "M1".."M4")
    if not isinstance(version, int) or version > MAX_VERSION:  # cannot happen within 331 bytes at level M
        return None
    return code


def svg(details: TransferDetails, title: str) -> str | None:
    """The code as an inline <svg> element (no script, no style: fine under the page's CSP)."""
    code = symbol(details)
    if code is None:
        return None
    return code.svg_inline(scale=4, border=4, title=title, svgclass="epc-qr", lineclass=None)


def png_data_uri(details: TransferDetails) -> str | None:
    """The code as a PNG data: URI, for the PDF (WeasyPrint reads only data: URIs here)."""
    code = symbol(details)
    if code is None:
        return None
    return code.png_data_uri(scale=6, border=4)

