"""Back-office: a customer's contacts, added, edited and removed on the customer's page.

Thin: `admin.contacts_service` does the work. A viewer gets 403, a hidden customer 404.
Removing the last contact that receives reminders asks for a confirmation that says so.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin import contacts_service as service
from admin.access import Staff, can_act, forbidden, staff_get, staff_post, visible_customer
from admin.customers import back_to_customer, refused_on_customer_page
from kernel.user_error import UserError
from admin.routes import render
from kernel.web import Posted, Rejected
from ledger.models import Contact, Customer


def _fields(posted: Posted) -> dict[str, str]:
    return {name: posted.text(name, 300) for name in ("email", "name", "phone", "language", "role",
                                                        "receives_reminders")}


@staff_post
def add(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    try:
        service.add_contact(session, customer, staff.user, service.ContactFields.read(_fields(posted)))
    except UserError as error:
        raise refused_on_customer_page(request, session, staff, customer, error, posted)
    return back_to_customer(customer, "contact_added")


def _contact(customer: Customer, raw: int) -> Contact:
    try:
        return service.contact_of(customer, raw)
    except UserError:
        raise HTTPException(404) from None


@staff_post
def edit(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    contact = _contact(customer, request.path_params["contact_id"])
    try:
        service.update_contact(session, customer, contact, staff.user, service.ContactFields.read(_fields(posted)),
                               make_primary=posted.text("primary", 2) == "1")
    except UserError as error:
        raise refused_on_customer_page(request, session, staff, customer, error, posted)
    return back_to_customer(customer, "contact_saved")


def _remove_page(request: Request, staff: Staff, customer: Customer, contact: Contact,
                 status_code: int = 200) -> Response:
    return render(request, "admin/contact_remove.html", {
        "user": staff.user, "customer": customer, "contact": contact,
        "last_reminder_contact": contact.receives_reminders and not service.reminders_left_without(customer, contact),
    }, staff.language, status_code=status_code)


@staff_get
def remove_confirm(request: Request, session: Session, staff: Staff) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    if not can_act(staff.user):
        return forbidden(request, staff)
    return _remove_page(request, staff, customer, _contact(customer, request.path_params["contact_id"]))


@staff_post
def remove(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    customer = visible_customer(session, staff.user, request.path_params["customer_id"])
    contact = _contact(customer, request.path_params["contact_id"])
    if posted.text("confirm", 2) != "1":
        raise Rejected(_remove_page(request, staff, customer, contact, status_code=400))
    service.remove_contact(session, customer, contact, staff.user)
    return back_to_customer(customer, "contact_removed")


routes = [
    Route("/customers/{customer_id:int}/contacts", add, methods=["POST"], name="admin:contact_add"),
    Route("/customers/{customer_id:int}/contacts/{contact_id:int}", edit, methods=["POST"],
          name="admin:contact_edit"),
    Route("/customers/{customer_id:int}/contacts/{contact_id:int}/remove", remove_confirm, methods=["GET"],
          name="admin:contact_remove_confirm"),
    Route("/customers/{customer_id:int}/contacts/{contact_id:int}/remove", remove, methods=["POST"],
          name="admin:contact_remove"),
]
