"""The debtor's payment pages. Handlers stay thin: payments.checkout and the providers do the work."""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kernel import i18n
from kernel.clock import clock
from kernel.db import unit_of_work
from kernel.settings import Settings
from kernel.user_error import UserError
from ledger.models import Checkout, Payment
from ledger.money import Money, decimals
from payments import base, epc_qr, failures, registry, rf
from payments.bank_transfer import account_for, pretty_iban
from payments.collections import has_live_mandate
from payments.checkout import (
    CANCELLABLE_STATUSES,
    Quote,
    breakdown,
    create_checkout,
    customer_checkout,
    started_checkouts,
    parse_selection,
    quote,
    settle_with_credit,
)
from portal import pdf
from portal.routes import Visit, current_visit, debtor_page, pdf_response, session_required

FormHandler = Callable[[Request, Session, Visit, FormData], Response]


def debtor_form(handler: FormHandler) -> Callable[[Request], Any]:
    """Reads the posted form, then runs `handler` in a unit of work for the signed-in debtor."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        form = await request.form()

        def run() -> Response:
            with unit_of_work(request.app.state.sessions) as session:
                visit = current_visit(request, session)
                if visit is None:
                    return session_required(request)
                return handler(request, session, visit, form)

        return await run_in_threadpool(run)

    return endpoint


def _read_form(session: Session, visit: Visit, form: FormData, settings: Settings) -> dict[str, Any]:
    """The pay form's state: selection priced (or the problem with it), methods, chosen method."""
    ids = [str(value) for value in form.getlist("invoice")]
    amounts = {key: str(value) for key, value in form.items() if key.startswith(("amount-", "minor-"))}
    today = clock.today(visit.company.timezone)
    priced: Quote | None = None
    error: str | None = None
    try:
        if ids or form.get("action") == "pay":  # nothing ticked yet is no error, only an invitation
            # Paying checks the locks itself, after recognising a double click (payments.checkout).
            priced = quote(session, visit.customer, parse_selection(session, visit.customer, ids, amounts), today,
                           locked=form.get("action") != "pay")
    except UserError as problem:
        error = problem.render(visit.language)
    return {
        "visit": visit,
        "company": visit.company,
        "in_progress": in_progress(session, visit.customer.id),
        "quote": priced,
        "error": error,
        "methods": _methods(settings, visit, priced.currency) if priced else [],
        "sandbox_methods": registry.sandbox_methods(settings),
        "method": str(form.get("method", "")),
        "instant_first": bool(form.get("instant_first")),
        "today": today,
    }


def _methods(settings: Settings, visit: Visit, currency: str) -> list[str]:
    """The methods offered; not direct debit to a customer whose mandate lives: its invoices are
    collected on it already (the statement says what, and when)."""
    methods = registry.offered_methods(settings, visit.company, currency)
    if has_live_mandate(visit.customer):
        methods = [method for method in methods if method != "direct_debit"]
    return methods


def in_progress(session: Session, customer_id: int) -> list[Checkout]:
    """Checkouts whose money is awaited or on its way: their invoices cannot be paid again."""
    return started_checkouts(session, customer_id)[:5]


def _render(request: Request, visit: Visit, context: dict[str, Any], status_code: int = 200) -> Response:
    return request.app.state.templates.response(
        request, "portal/pay.html", context, visit.language, status_code=status_code, block="summary"
    )


@debtor_form
def pay_summary(request: Request, session: Session, visit: Visit, form: FormData) -> Response:
    return _render(request, visit, _read_form(session, visit, form, request.app.state.settings))


@debtor_form
def pay(request: Request, session: Session, visit: Visit, form: FormData) -> Response:
    """Review the selection (no JavaScript) or, with a method chosen, create the checkout and start it."""
    settings = request.app.state.settings
    context = _read_form(session, visit, form, settings)
    priced: Quote | None = context["quote"]
    if form.get("action") != "pay" or priced is None:
        return _render(request, visit, context, 200 if priced else 422)
    if priced.charged.minor == 0 and priced.credit.minor > 0:
        try:
            settle_with_credit(session, customer=visit.customer, contact=visit.contact,
                               selection={line.invoice.id: line.amount.minor for line in priced.lines},
                               today=context["today"])
        except UserError as problem:
            context["error"] = problem.render(visit.language)
            return _render(request, visit, context, 422)
        return RedirectResponse("/portal?settled=credit", status_code=303)
    method = context["method"]
    if method not in context["methods"]:
        context["error"] = i18n.gettext(visit.language, "Choose a payment method.")
        return _render(request, visit, context, 422)
    try:
        checkout = create_checkout(
            session,
            customer=visit.customer,
            contact=visit.contact,
            selection={line.invoice.id: line.amount.minor for line in priced.lines},
            method=method,
            today=context["today"],
        )
    except UserError as problem:
        context["error"] = problem.render(visit.language)
        return _render(request, visit, context, 422)
    if checkout.status != "open":  # the same checkout, already on its way: show where it is
        return RedirectResponse(f"/portal/pay/{checkout.id}", status_code=303)
    if method == "direct_debit" and not checkout.provider_ref:
        # The debtor may pay this selection at once by instant transfer while setting up the mandate.
        checkout.instant_first_payment = bool(form.get("instant_first"))
    try:
        result = registry.provider_for(method).start(session, checkout, settings, settings.base_url)
    except base.ProviderUnavailable:
        # Nothing was started: the checkout stays a draft that locks no invoice; the same selection
        # retried reuses it (and its idempotency key), another one supersedes it.
        context["error"] = i18n.gettext(
            visit.language, "The payment service is not answering. Please try again in a moment, or choose another method."
        )
        return _render(request, visit, context, 503)
    return RedirectResponse(result.location, status_code=303, headers={"Cache-Control": "no-store"})


def _own_checkout(request: Request, session: Session, visit: Visit) -> Checkout:
    checkout = customer_checkout(session, visit.customer.id, request.path_params["checkout_id"])
    if checkout is None:
        raise HTTPException(404)
    return checkout


def failure_text(checkout: Checkout, language: str) -> str | None:
    """The one sentence saying why the checkout's payment did not go through, or None."""
    if checkout.failure_code is None and checkout.status not in ("failed", "cancelled"):
        return None
    return i18n.gettext(language, failures.message(checkout.failure_code))


@debtor_page
def checkout_page(request: Request, session: Session, visit: Visit) -> Response:
    checkout = _own_checkout(request, session, visit)
    payment = session.scalar(
        select(Payment).where(Payment.checkout_id == checkout.id).order_by(Payment.id.desc()).limit(1)
    )
    return request.app.state.templates.response(
        request,
        "portal/checkout.html",
        {"visit": visit, "company": visit.company, "checkout": checkout, "payment": payment, "money_of": Money,
         "failure": failure_text(checkout, visit.language), "breakdown": breakdown(checkout),
         "cancellable": checkout.status in CANCELLABLE_STATUSES},
        visit.language,
    )


@debtor_form
def cancel(request: Request, session: Session, visit: Visit, form: FormData) -> Response:
    """"I will pay another way": the checkout ends and its invoices are free to pay again."""
    checkout = _own_checkout(request, session, visit)
    try:
        registry.cancel_checkout_payment(session, checkout, request.app.state.settings, contact=visit.contact)
    except UserError as problem:
        return request.app.state.templates.response(
            request, "portal/message.html",
            {"title": i18n.gettext(visit.language, "Payment not cancelled"), "body": problem.render(visit.language),
             "company": visit.company, "visit": visit},
            visit.language, status_code=409,
        )
    return RedirectResponse("/portal?cancelled=1", status_code=303)


def plain_amount(amount: Money, language: str) -> str:
    """The amount as a banking app's amount field takes it: digits and the language's decimal
    separator, no grouping, no currency ("1234,56" in French, "1234.56" in English)."""
    places = decimals(amount.currency)
    text = str(Decimal(amount.minor).scaleb(-places).quantize(Decimal(1).scaleb(-places)))
    return text.replace(".", ",") if i18n.normalize(language) == "fr" else text


def _transfer_context(session: Session, visit: Visit, checkout: Checkout) -> dict[str, Any]:
    account = account_for(visit.company, checkout.currency)
    if checkout.method != "bank_transfer" or not checkout.reference or account is None:
        raise HTTPException(404)
    details = epc_qr.TransferDetails(name=visit.company.name, iban=account.iban, bic=account.bic,
                                     amount=checkout.amount, reference=checkout.reference)
    return {
        "epc": details,
        "visit": visit,
        "company": visit.company,
        "checkout": checkout,
        "iban": pretty_iban(account.iban),
        "bic": account.bic,
        "reference": rf.pretty(checkout.reference),
        "reference_compact": checkout.reference,
        "amount_plain": plain_amount(checkout.amount, visit.language),
        "money_of": Money,
        # A transfer page is valid while the checkout awaits its money; cancelled or expired, it says so.
        "valid": checkout.status in ("open", "processing"),
        "failure": failure_text(checkout, visit.language),
        "breakdown": breakdown(checkout),
    }


@debtor_page
def transfer_page(request: Request, session: Session, visit: Visit) -> Response:
    checkout = _own_checkout(request, session, visit)
    context = _transfer_context(session, visit, checkout)
    title = i18n.gettext(visit.language, "QR code for your banking app")
    context["qr_svg"] = epc_qr.svg(context["epc"], title)
    return request.app.state.templates.response(request, "portal/transfer.html", context, visit.language)


@debtor_page
def transfer_pdf(request: Request, session: Session, visit: Visit) -> Response:
    checkout = _own_checkout(request, session, visit)
    context = _transfer_context(session, visit, checkout)
    if not context["valid"]:  # no PDF of details that no longer hold: the page says why
        return RedirectResponse(f"/portal/pay/{checkout.id}/transfer", status_code=303)
    context["qr_uri"] = epc_qr.png_data_uri(context["epc"])
    content = pdf.branded_pdf(request.app.state.templates, "pdf/transfer.html", visit.company, context,
                              visit.language)
    return pdf_response(content, f"transfer-{checkout.reference}.pdf")


routes = [
    Route("/pay", pay, methods=["POST"], name="payments:pay"),
    Route("/pay/summary", pay_summary, methods=["POST"], name="payments:summary"),
    Route("/pay/{checkout_id:int}", checkout_page, methods=["GET"], name="payments:checkout"),
    Route("/pay/{checkout_id:int}/cancel", cancel, methods=["POST"], name="payments:cancel"),
    Route("/pay/{checkout_id:int}/transfer", transfer_page, methods=["GET"], name="payments:transfer"),
    Route("/pay/{checkout_id:int}/transfer.pdf", transfer_pdf, methods=["GET"], name="payments:transfer_pdf"),
]
