"""A customer's personal data from the back-office (admins only): download it as JSON, or erase it
(the accounting records stay, without the person's data). `encours gdpr export|erase` does the same."""

from __future__ import annotations

import json
import re

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin.access import Rejected, Staff, staff_get, staff_post, visible_customer
from admin.routes import render
from kernel.web import Posted
from ledger import audit, personal_data
from ledger.models import Customer
from ledger.storage import FileStorage


def _page(request: Request, staff: Staff, customer: Customer, *, error: bool = False, erased: str | None = None,
          status_code: int = 200) -> Response:
    return render(request, "admin/customer_personal_data.html", {
        "user": staff.user, "customer": customer, "contacts": list(customer.contacts), "error": error,
        "erased": erased}, staff.language, status_code=status_code)


@staff_get(admin_only=True)
def page(request: Request, session: Session, staff: Staff) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    return _page(request, staff, customer, erased=request.query_params.get("erased"))


@staff_get(admin_only=True)
def download(request: Request, session: Session, staff: Staff) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    data = personal_data.export_customer(session, customer)
    audit.record(session, actor_type="user", actor=staff.user.email, action="personal_data.exported",
                 entity_type="customer", entity_id=customer.id, customer_id=customer.id, after={"contact": None})
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", customer.ref).strip("-") or str(customer.id)
    return Response(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="personal-data-{name}.json"',
                             "Cache-Control": "no-store"})


@staff_post(admin_only=True)
def erase(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    # Typing the reference, not one click: erasing cannot be undone.
    if posted.text("confirm_ref", 64).strip() != customer.ref:
        raise Rejected(_page(request, staff, customer, error=True, status_code=400))
    contact_id = posted.text("contact", 12)
    contact = next((c for c in customer.contacts if str(c.id) == contact_id), None) if contact_id else None
    storage = FileStorage(request.app.state.storage)
    personal_data.erase(session, customer, contact=contact, actor=staff.user.email, delete_file=storage.delete)
    what = "contact" if contact is not None else "customer"
    return RedirectResponse(f"/admin/customers/{customer.id}/personal-data?erased={what}", status_code=303)


routes = [
    Route("/customers/{customer_id:int}/personal-data", page, methods=["GET"], name="admin:personal_data"),
    Route("/customers/{customer_id:int}/personal-data.json", download, methods=["GET"],
          name="admin:personal_data_json"),
    Route("/customers/{customer_id:int}/personal-data/erase", erase, methods=["POST"],
          name="admin:personal_data_erase"),
]
