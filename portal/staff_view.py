"""Staff seeing the portal as a customer sees it: explicit, audited by the back-office that starts
it, and read-only. The session holds who looks at whom and under which staff session version,
so signing out of the back-office (or losing the right) ends it too."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, joinedload

from ledger.models import Contact, Customer, Role, User

STAFF_VIEW_SESSION_KEY = "staff_view"


def may_view_as(user: User, customer: Customer) -> bool:
    """Managers of the customer's company and admins; never collectors or viewers."""
    if not user.active:
        return False
    if user.role == Role.admin.value:
        return True
    return user.role == Role.manager.value and any(c.id == customer.company_id for c in user.companies)


def session_data(user: User, contact: Contact) -> dict[str, Any]:
    return {"staff": user.id, "sv": user.session_version, "contact": contact.id, "customer": contact.customer_id}


def viewed_contact(session: Session, data: object) -> Contact | None:
    """The contact a staff view shows, if the staff member may still see it that way."""
    if not isinstance(data, dict):
        return None
    staff_id, contact_id = data.get("staff"), data.get("contact")
    if not isinstance(staff_id, int) or not isinstance(contact_id, int):
        return None
    user = session.get(User, staff_id)
    if user is None or user.session_version != data.get("sv"):
        return None
    contact = session.get(Contact, contact_id, options=[joinedload(Contact.customer).joinedload(Customer.company)])
    if contact is None or contact.customer_id != data.get("customer") or not may_view_as(user, contact.customer):
        return None
    return contact
