"""Staff accounts: creation and password checks (argon2)."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.models import Company, Role, User

_hasher = PasswordHasher()
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 10


class UserError(ValueError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(
    session: Session, *, email: str, role: str, password: str, company_codes: list[str]
) -> User:
    email = email.strip().lower()
    if not EMAIL_PATTERN.match(email):
        raise UserError(f"{email!r} is not an email address")
    if role not in {r.value for r in Role}:
        raise UserError(f"unknown role {role!r}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User.id).where(func.lower(User.email) == email)) is not None:
        raise UserError(f"user {email} already exists")
    companies = []
    for code in company_codes:
        company = session.scalar(select(Company).where(Company.code == code))
        if company is None:
            raise UserError(f"unknown company {code!r}")
        companies.append(company)
    if role != Role.admin.value and not companies:
        raise UserError(f"a {role} needs at least one --company")
    user = User(email=email, role=role, password_hash=hash_password(password), companies=companies)
    session.add(user)
    session.flush()
    return user
