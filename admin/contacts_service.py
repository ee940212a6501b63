"""A customer's contacts as staff keep them: add, edit, remove; each with a role.

A removed contact is kept (reminders, disputes and payments name it) but leaves the customer's
contacts, its links and portal sessions stop working, and nothing is sent to it any more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.i18n import N_
from ledger import audit
from ledger.models import CONTACT_ROLES, Contact, ContactRole, Customer, User

from kernel.user_error import UserError

ROLE_LABELS = {
    ContactRole.accounts_payable.value: N_("Accounts payable"),
    ContactRole.manager.value: N_("Manager"),
    ContactRole.other.value: N_("Other"),
}
LANGUAGES = ("fr", "en")
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


@dataclass(frozen=True)
class ContactFields:
    email: str
    name: str | None
    phone: str | None
    language: str
    role: str
    receives_reminders: bool

    @classmethod
    def read(cls, form: Mapping[str, str]) -> ContactFields:
        """The posted fields, or UserError naming the one that is wrong."""
        email = form.get("email", "").strip()
        if not _EMAIL.match(email) or len(email) > 254:
            raise UserError(N_("%(value)s is not an email address."), value=email or "—")
        name = form.get("name", "").strip()
        if len(name) > 200:
            raise UserError(N_("A name is at most %(count)s characters."), count=200)
        phone = form.get("phone", "").strip()
        if len(phone) > 40:
            raise UserError(N_("A phone number is at most %(count)s characters."), count=40)
        language = form.get("language", "").strip()
        if language not in LANGUAGES:
            raise UserError(N_("Choose the contact's language."))
        role = form.get("role", "").strip()
        if role not in CONTACT_ROLES:
            raise UserError(N_("Choose the contact's role."))
        return cls(email, name or None, phone or None, language, role,
                   form.get("receives_reminders", "") in ("1", "on", "true"))


def _state(contact: Contact) -> dict[str, object]:
    return {"email": contact.email, "name": contact.name, "phone": contact.phone, "language": contact.language,
            "role": contact.role, "receives_reminders": contact.receives_reminders, "is_primary": contact.is_primary}


def _check_unique(customer: Customer, email: str, contact: Contact | None = None) -> None:
    for other in customer.contacts:
        if other is not contact and other.email.lower() == email.lower():
            raise UserError(N_("%(email)s is already a contact of this customer."), email=email)


def contact_of(customer: Customer, contact_id: int) -> Contact:
    found = next((c for c in customer.contacts if c.id == contact_id), None)
    if found is None:
        raise UserError(N_("Choose a contact of this customer."))
    return found


def add_contact(session: Session, customer: Customer, user: User, fields: ContactFields) -> Contact:
    _check_unique(customer, fields.email)
    contact = Contact(email=fields.email, name=fields.name, phone=fields.phone, language=fields.language,
                      role=fields.role, receives_reminders=fields.receives_reminders,
                      is_primary=not customer.contacts)
    customer.contacts.append(contact)
    session.flush()
    audit.record(session, actor_type="user", actor=user.email, action="contact.added", entity_type="contact",
                 entity_id=contact.id, customer_id=customer.id, company_id=customer.company_id,
                 after=_state(contact))
    return contact


def update_contact(session: Session, customer: Customer, contact: Contact, user: User, fields: ContactFields,
                   *, make_primary: bool = False) -> None:
    _check_unique(customer, fields.email, contact)
    before = _state(contact)
    if contact.email != fields.email:
        # Links already sent went to the old address: they must stop opening the portal.
        contact.link_version += 1
        contact.email_failing_since = contact.email_failure = None
    contact.email, contact.name, contact.phone = fields.email, fields.name, fields.phone
    contact.language, contact.role, contact.receives_reminders = fields.language, fields.role, \
        fields.receives_reminders
    if make_primary and not contact.is_primary:
        for other in customer.contacts:
            other.is_primary = other is contact
    after = _state(contact)
    changed = {key for key in after if before[key] != after[key]}
    if changed:
        audit.record(session, actor_type="user", actor=user.email, action="contact.updated", entity_type="contact",
                     entity_id=contact.id, customer_id=customer.id, company_id=customer.company_id,
                     before={key: before[key] for key in sorted(changed)},
                     after={key: after[key] for key in sorted(changed)})


def reminders_left_without(customer: Customer, contact: Contact) -> bool:
    """Whether some other contact would still receive reminders."""
    return any(c.receives_reminders and c is not contact for c in customer.contacts)


def remove_contact(session: Session, customer: Customer, contact: Contact, user: User) -> None:
    """Out of the customer's contacts, its links and portal sessions ended; the next one becomes primary."""
    before = _state(contact)
    was_primary = contact.is_primary
    contact.removed_at = clock.now()
    contact.is_primary = False
    contact.receives_reminders = False
    contact.link_version += 1
    contact.session_version += 1
    session.flush()
    session.expire(customer, ["contacts"])
    if was_primary and customer.contacts:
        customer.contacts[0].is_primary = True
    audit.record(session, actor_type="user", actor=user.email, action="contact.removed", entity_type="contact",
                 entity_id=contact.id, customer_id=customer.id, company_id=customer.company_id, before=before)
