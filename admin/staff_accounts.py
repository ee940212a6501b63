"""Staff accounts: creation, changes by an admin, and password checks (argon2).

Shared by `encours user create` and the back-office users page. Errors carry a message id
and its values, so the CLI prints English and the back-office the user's language.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BeforeValidator, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.forms import Form
from kernel.i18n import N_
from kernel.user_error import UserError
from ledger import audit
from ledger.models import Company, Role, User

_hasher = PasswordHasher()
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 10


def _email(value: object) -> str:
    email = str(value or "").strip().lower()
    if not EMAIL_PATTERN.match(email) or len(email) > 254:
        raise UserError(N_("%(email)s is not an email address"), email=repr(email))
    return email


def _role(value: object) -> Role:
    if value not in {r.value for r in Role}:
        raise UserError(N_("unknown role %(role)s"), role=repr(value))
    return Role(str(value))


class StaffRoleForm(Form):
    """What the back-office sets of a staff account: its role and companies (codes)."""

    role: Annotated[Role, BeforeValidator(_role)]
    companies: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=200)


class StaffUserForm(StaffRoleForm):
    """A new staff account: its address too."""

    email: Annotated[str, BeforeValidator(_email)]


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """A password shown once to whoever creates or resets an account (16 URL-safe characters)."""
    return secrets.token_urlsafe(12)


def _companies(session: Session, role: str, company_codes: list[str]) -> list[Company]:
    if role not in {r.value for r in Role}:
        raise UserError(N_("unknown role %(role)s"), role=repr(role)).at(field="role")
    companies = []
    for code in dict.fromkeys(company_codes):
        company = session.scalar(select(Company).where(Company.code == code))
        if company is None:
            raise UserError(N_("unknown company %(code)s"), code=repr(code)).at(field="companies")
        companies.append(company)
    if role != Role.admin.value and not companies:
        raise UserError(N_("a %(role)s needs at least one --company"), role=role).at(field="companies")
    return companies


def _state(user: User) -> dict[str, Any]:
    return {"email": user.email, "role": user.role, "active": user.active,
            "companies": sorted(c.code for c in user.companies)}


def _audit(session: Session, actor: User | None, action: str, user: User, before: dict[str, Any] | None,
           after: dict[str, Any] | None) -> None:
    audit.record(session, actor_type="user" if actor else "system", actor=actor.email if actor else "cli",
                 action=action, entity_type="user", entity_id=user.id, before=before, after=after)


def create_user(
    session: Session, *, email: str, role: str, password: str, company_codes: list[str], actor: User | None = None,
    one_time: bool = False,
) -> User:
    """`one_time`: the password was chosen for the user (generated, shown to whoever creates the
    account); the user must change it at its first sign-in."""
    email = email.strip().lower()
    if not EMAIL_PATTERN.match(email) or len(email) > 254:
        raise UserError(N_("%(email)s is not an email address"), email=repr(email)).at(field="email")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(N_("password must have at least %(count)s characters"), count=MIN_PASSWORD_LENGTH)
    if session.scalar(select(User.id).where(func.lower(User.email) == email)) is not None:
        raise UserError(N_("user %(email)s already exists"), email=email).at(field="email")
    companies = _companies(session, role, company_codes)
    user = User(email=email, role=role, password_hash=hash_password(password), companies=companies,
                must_change_password=one_time)
    session.add(user)
    session.flush()
    _audit(session, actor, "user.created", user, None, _state(user))
    return user


def _active_admins(session: Session) -> int:
    return session.scalar(select(func.count(User.id)).where(User.role == Role.admin.value, User.active)) or 0


def update_user(session: Session, *, actor: User, user: User, role: str, company_codes: list[str]) -> bool:
    """Change a user's role and companies; False when nothing changed. An admin cannot demote
    itself, nor leave the system without an active admin."""
    companies = _companies(session, role, company_codes)
    if user.role == Role.admin.value and role != Role.admin.value:
        if user.id == actor.id:
            raise UserError(N_("You cannot take the administrator role from yourself."))
        if user.active and _active_admins(session) <= 1:
            raise UserError(N_("At least one active administrator must remain."))
    before = _state(user)
    user.role = role
    user.companies = companies
    after = _state(user)
    if before == after:
        return False
    changed = [key for key in after if before[key] != after[key]]
    _audit(session, actor, "user.updated", user, {k: before[k] for k in changed}, {k: after[k] for k in changed})
    session.flush()
    return True


def set_active(session: Session, *, actor: User | None, user: User, active: bool) -> bool:
    """Deactivate (every session of the user ends: `admin.auth.current_user` checks `active`) or
    reactivate; False when already so. `actor` None: the command line."""
    if user.active == active:
        return False
    if not active:
        if actor is not None and user.id == actor.id:
            raise UserError(N_("You cannot deactivate your own account."))
        if user.role == Role.admin.value and _active_admins(session) <= 1:
            raise UserError(N_("At least one active administrator must remain."))
    user.active = active
    _audit(session, actor, "user.activated" if active else "user.deactivated", user,
           {"active": not active}, {"active": active})
    session.flush()
    return True


def reset_password(session: Session, *, actor: User | None, user: User, password: str | None = None) -> str:
    """A new password (`password`, or a generated one), returned once; the old one and every
    session it opened stop working (`admin.auth.fingerprint`). `actor` None: the command line.
    A generated password is one-time: the user changes it at its next sign-in."""
    user.must_change_password = password is None
    if password is None:
        password = generate_password()
    elif len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(N_("password must have at least %(count)s characters"), count=MIN_PASSWORD_LENGTH)
    user.password_hash = hash_password(password)
    user.session_version += 1
    _audit(session, actor, "user.password_reset", user, None, None)  # never the hash
    session.flush()
    return password
