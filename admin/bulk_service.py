"""Actions on several customers of the list at once, and saved views of the list's filters.

A bulk action runs on the customers chosen (ticked rows, or every customer matching the
filters), always within what the user may see; it is checked whole before anything changes
(never half-applied), each customer's change is audited as the single action would be, and one
event per company records the bulk action itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from urllib.parse import parse_qsl

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from admin.customers_service import (
    CustomerFilters,
    assign_collector,
    collectors_of,
    customer_query,
    set_paused,
)
from kernel.i18n import N_
from kernel.user_error import UserError
from ledger import audit
from ledger.models import Contact, Customer, OutboxMessage, Role, SavedView, User

ACTIONS = ("assign", "pause", "resume", "send_links")
ACTION_LABELS = {
    "assign": N_("Assign a collector"),
    "pause": N_("Pause reminders"),
    "resume": N_("Resume reminders"),
    "send_links": N_("Send a link to each customer's reminder contacts"),
}
MAX_CUSTOMERS = 5000
MAX_VIEW_NAME = 100
_CHUNK = 500


@dataclass
class BulkResult:
    action: str
    customers: int = 0
    emails: int = 0
    # customers a link could not go to (no contact receiving reminders with a working address)
    without_contact: list[str] = field(default_factory=list)


def targets(session: Session, scope: Callable[[Any], Any], ids: Sequence[int] | None,
            filters: CustomerFilters | None) -> list[int]:
    """The customer ids a bulk action runs on: the ticked ones (`ids`) or all those matching
    `filters`, in both cases only those the user may see."""
    if filters is not None:
        query = customer_query(session, filters, scope).order_by(Customer.id).limit(MAX_CUSTOMERS + 1)
        found = list(session.scalars(query))
    else:
        found = []
        wanted = sorted(set(ids or []))
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            found.extend(session.scalars(scope(select(Customer.id)).where(Customer.id.in_(chunk))))
        found.sort()
    if len(found) > MAX_CUSTOMERS:
        raise UserError(N_("A bulk action covers at most %(count)s customers: narrow the filters."),
                                  count=MAX_CUSTOMERS)
    if not found:
        raise UserError(N_("Tick the customers to act on, or choose every customer matching the filters."))
    return found


def _customers(session: Session, ids: Sequence[int]) -> list[Customer]:
    found: list[Customer] = []
    for start in range(0, len(ids), _CHUNK):
        found.extend(session.scalars(select(Customer).where(Customer.id.in_(ids[start:start + _CHUNK]))
                                     .order_by(Customer.id)))
    return found


def check(session: Session, user: User, action: str, ids: Sequence[int], collector_id: int | None) -> None:
    """Everything that could refuse the action, before anything is changed."""
    if action not in ACTIONS:
        raise UserError(N_("Choose an action."))
    if action == "assign":
        if user.role == Role.collector.value:
            raise UserError(N_("A collector cannot assign customers."))
        if collector_id is None:
            return  # unassigning is always possible
        company_ids = set(session.scalars(select(Customer.company_id).where(Customer.id.in_(ids[:_CHUNK]))))
        for start in range(_CHUNK, len(ids), _CHUNK):
            company_ids |= set(session.scalars(select(Customer.company_id)
                                               .where(Customer.id.in_(ids[start:start + _CHUNK]))))
        for company_id in company_ids:
            if collector_id not in {c.id for c in collectors_of(session, [company_id])}:
                raise UserError(N_("This collector does not work for every company of these customers."))


def apply(session: Session, user: User, action: str, ids: Sequence[int], *, collector_id: int | None = None,
          send_link: Callable[[Contact], OutboxMessage] | None = None) -> BulkResult:
    check(session, user, action, ids, collector_id)
    result = BulkResult(action)
    per_company: dict[int, int] = {}
    for customer in _customers(session, ids):
        if action == "assign":
            assign_collector(session, customer, user, collector_id)
        elif action in ("pause", "resume"):
            set_paused(session, customer, user, action == "pause")
        else:
            assert send_link is not None
            contacts = [c for c in customer.contacts if c.receives_reminders and c.email_failing_since is None]
            if not contacts:
                result.without_contact.append(customer.ref)
                continue
            for contact in contacts:
                message = send_link(contact)
                audit.record(session, actor_type="user", actor=user.email, action="link.sent", entity_type="contact",
                             entity_id=contact.id, customer_id=customer.id,
                             after={"to": contact.email, "outbox_id": message.id, "bulk": True})
                result.emails += 1
        result.customers += 1
        per_company[customer.company_id] = per_company.get(customer.company_id, 0) + 1
    for company_id, count in sorted(per_company.items()):
        audit.record(session, actor_type="user", actor=user.email, action="customers.bulk_action",
                     entity_type="company", entity_id=company_id, company_id=company_id,
                     after={"action": action, "customers": count,
                            **({"collector_id": collector_id} if action == "assign" else {}),
                            **({"emails": result.emails} if action == "send_links" else {})})
    return result


# --- saved views ----------------------------------------------------------------------------------


def normalized_query(query: str) -> str:
    """Only the list's own filters, in one order, without the page: what a view keeps."""
    params = dict(parse_qsl(query.lstrip("?"), keep_blank_values=False))
    return CustomerFilters.from_params(params).query_string(page=1)


def views_for(session: Session, user: User) -> list[SavedView]:
    """The user's own views and those others shared, by name."""
    return list(session.scalars(select(SavedView).where(or_(SavedView.user_id == user.id,
                                                            SavedView.shared.is_(True)))
                                .order_by(func.lower(SavedView.name), SavedView.id)))


def save_view(session: Session, user: User, name: str, query: str, shared: bool) -> SavedView:
    """Saves the filters under `name`; the user's view of that name is replaced."""
    name = " ".join(name.split())
    if not name:
        raise UserError(N_("Give the view a name."))
    if len(name) > MAX_VIEW_NAME:
        raise UserError(N_("A view's name is at most %(count)s characters."), count=MAX_VIEW_NAME)
    view = session.scalar(select(SavedView).where(SavedView.user_id == user.id, SavedView.name == name))
    if view is None:
        view = SavedView(user_id=user.id, name=name, query="")
        session.add(view)
    view.query = normalized_query(query)
    view.shared = shared
    session.flush()
    return view


def delete_view(session: Session, user: User, view_id: int) -> None:
    view = session.get(SavedView, view_id)
    if view is None or (view.user_id != user.id and user.role != Role.admin.value):
        raise UserError(N_("Choose a view of yours."))
    session.delete(view)
    session.flush()
