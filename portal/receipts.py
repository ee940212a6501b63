"""The debtor's payments: the history, each payment's receipt, and the receipt as a PDF."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kernel.i18n import N_
from ledger.receipts import PaymentRecord, assign_receipt_number, customer_payment, invoice_ids, payment_history
from portal import pdf
from portal.routes import Visit, safe_filename, debtor_page, debtor_view, pdf_response

# How each method reads in the history (N_: for extraction; the templates translate them).
METHOD_LABELS = {
    "card": N_("Card"),
    "instant_transfer": N_("Instant bank transfer"),
    "direct_debit": N_("Direct debit"),
    "bank_transfer": N_("Bank transfer"),
    "cheque": N_("Cheque"),
    "bill_of_exchange": N_("Bill of exchange"),
    "cash": N_("Cash"),
    "set_off": N_("Set-off"),
}
# Card networks as people name them (Stripe's brand codes); another brand shows as Stripe names it.
CARD_BRANDS = {"visa": "Visa", "mastercard": "Mastercard", "amex": "American Express", "cartes_bancaires": "CB",
               "discover": "Discover", "diners": "Diners Club", "jcb": "JCB", "unionpay": "UnionPay"}
PAYMENT_STATUS_LABELS = {
    "pending": N_("Awaiting confirmation"),
    "processing": N_("Processing"),
    "succeeded": N_("Received"),
    "failed": N_("Failed"),
    "refunded": N_("Refunded"),
    "charged_back": N_("Charged back"),
}


def _context(visit: Visit, **values: Any) -> dict[str, Any]:
    return {"visit": visit, "company": visit.company, "method_labels": METHOD_LABELS,
            "payment_status_labels": PAYMENT_STATUS_LABELS, "card_brands": CARD_BRANDS, **values}


@debtor_view
def payments_page(request: Request, session: Session, visit: Visit) -> Response:
    return request.app.state.templates.response(
        request, "portal/payments.html", _context(visit, records=payment_history(session, visit.customer)),
        visit.language)


def _receipt(request: Request, session: Session, visit: Visit) -> PaymentRecord:
    record = customer_payment(session, visit.customer.id, request.path_params["payment_id"])
    if record is None or not record.has_receipt:
        raise HTTPException(404)
    # Payments recorded before receipt numbers (or by staff, or from the bank) get theirs when first shown.
    assign_receipt_number(session, record.payment)
    return record


def _receipt_context(session: Session, visit: Visit, record: PaymentRecord) -> dict[str, Any]:
    return _context(visit, record=record, payment=record.payment,
                    invoice_ids=invoice_ids(session, visit.customer.id, record.invoices))


@debtor_page
def receipt_page(request: Request, session: Session, visit: Visit) -> Response:
    record = _receipt(request, session, visit)
    return request.app.state.templates.response(
        request, "portal/receipt.html", _receipt_context(session, visit, record), visit.language)


@debtor_page
def receipt_pdf(request: Request, session: Session, visit: Visit) -> Response:
    record = _receipt(request, session, visit)
    content = pdf.branded_pdf(request.app.state.templates, "pdf/receipt.html", visit.company,
                              _receipt_context(session, visit, record), visit.language)
    return pdf_response(content, f"receipt-{safe_filename(record.payment.receipt_number or '')}.pdf")


routes = [
    Route("/payments", payments_page, methods=["GET"], name="portal:payments"),
    Route("/payments/{payment_id:int}", receipt_page, methods=["GET"], name="portal:receipt"),
    Route("/payments/{payment_id:int}/receipt.pdf", receipt_pdf, methods=["GET"], name="portal:receipt_pdf"),
]
