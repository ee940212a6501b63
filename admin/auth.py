"""Staff authentication: login with throttling, session fingerprints, password change.

Services only: they take a SQLAlchemy `Session` and never see HTTP.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Callable

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.i18n import N_
from admin.staff_accounts import MIN_PASSWORD_LENGTH, check_password, hash_password
from ledger import audit
from ledger.models import Company, Customer, Invoice, InvoiceKind, InvoiceStatus, Role, Throttle, User
from ledger.money import Money
from links import throttle

# Failures are counted per (account, address), per address and per account, over WINDOW_SECONDS.
# An address that got an account wrong PAIR_FAILURE_LIMIT times waits; once the account as a
# whole has seen ACCOUNT_CEILING failures, any address that got it wrong even once waits. An
# address that has not failed on the account is never held back by others' failures, so nobody
# can lock a user out by guessing from elsewhere. The user is told by email at ALERT_AT failures.
PAIR_FAILURE_LIMIT = 5
ACCOUNT_CEILING = 10
ALERT_AT = 5
IP_FAILURE_LIMIT = 20
WINDOW_SECONDS = 15 * 60
EMAIL_FAILURE_LIMIT = PAIR_FAILURE_LIMIT  # what the password form tolerates on a signed-in account

# Verified against when the email is unknown, so both cases take the same time.
_DUMMY_HASH = hash_password("not-a-real-password-for-timing")


@dataclass(frozen=True)
class LoginOutcome:
    user: User | None = None
    blocked: bool = False
    retry_after: int = 0

    @property
    def ok(self) -> bool:
        return self.user is not None


def normalize_email(email: str) -> str:
    return (email or "").strip().lower()


def _email_key(email: str) -> str:
    return f"admin-login:email:{normalize_email(email)}"[:200]


def _ip_key(ip: str) -> str:
    return f"admin-login:ip:{ip}"[:200]


def _pair_key(email: str, ip: str) -> str:
    # The address first: the email is cut when too long, never the address.
    return f"admin-login:pair:{ip}:{normalize_email(email)}"[:200]


def _failures(session: Session, key: str) -> int:
    """Failures counted under `key` in the current window."""
    row = session.get(Throttle, key)
    if row is None or clock.now() - row.window_start >= timedelta(seconds=WINDOW_SECONDS):
        return 0
    return row.count


def fingerprint(user: User) -> str:
    """Changes whenever the password does: stored in the session, it ends other sessions."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def _seconds_left(session: Session, key: str) -> int:
    row = session.get(Throttle, key)
    if row is None:
        return 0
    left = row.window_start + timedelta(seconds=WINDOW_SECONDS) - clock.now()
    return max(1, int(left.total_seconds()) + 1)


def _blocked_keys(session: Session, keys: list[tuple[str, int]]) -> list[str]:
    return [key for key, limit in keys if throttle.is_blocked(session, key, limit, WINDOW_SECONDS)]


def find_user(session: Session, email: str) -> User | None:
    email = normalize_email(email)
    if not email:
        return None
    return session.scalar(select(User).where(func.lower(User.email) == email))


def authenticate(session: Session, email: str, password: str, ip: str,
                 on_repeated_failures: Callable[[User, int], object] | None = None) -> LoginOutcome:
    """The user for these credentials, or why not — without saying which part was wrong.
    `on_repeated_failures(user, count)` is called once per window, when the account reaches ALERT_AT failures."""
    pair_limit = PAIR_FAILURE_LIMIT if _failures(session, _email_key(email)) < ACCOUNT_CEILING else 1
    keys = [(_pair_key(email, ip), pair_limit), (_ip_key(ip), IP_FAILURE_LIMIT)]
    blocked = _blocked_keys(session, keys)
    if blocked:
        _record_failure(session, email, find_user(session, email), ip, "throttled")
        return LoginOutcome(blocked=True, retry_after=max(_seconds_left(session, key) for key in blocked))
    user = find_user(session, email)
    if user is None:
        check_password(User(password_hash=_DUMMY_HASH), password or "")
        ok, reason = False, "unknown account"
    else:
        ok = bool(password) and check_password(user, password)
        reason = "wrong password" if not ok else "account disabled"
        ok = ok and user.active
    if not ok:
        throttle.record_failure(session, _pair_key(email, ip), WINDOW_SECONDS)
        throttle.record_failure(session, _ip_key(ip), WINDOW_SECONDS)
        account_failures = throttle.record_failure(session, _email_key(email), WINDOW_SECONDS)
        if user is not None and account_failures == ALERT_AT and on_repeated_failures is not None:
            on_repeated_failures(user, account_failures)
        _record_failure(session, email, user, ip, reason)
        return LoginOutcome()
    assert user is not None
    user.last_login_at = clock.now()
    row = session.get(Throttle, _pair_key(email, ip))
    if row is not None:  # a success clears this address's failures on the account, never the address's own
        session.delete(row)
        session.flush()
    return LoginOutcome(user=user)


def _record_failure(session: Session, email: str, user: User | None, ip: str, reason: str) -> None:
    """A failed staff sign-in in the audit trail (admins read it; the person signing in is
    never told which part was wrong)."""
    audit.record(session, actor_type="user", actor=normalize_email(email)[:254] or None, action="user.sign_in_failed",
                 entity_type="user", entity_id=user.id if user is not None else None,
                 after={"ip": ip, "reason": reason})
    session.flush()


def session_data(user: User) -> dict[str, Any]:
    return {"user": user.id, "pw": fingerprint(user), "sv": user.session_version}


def end_sessions(user: User) -> None:
    """Every session the user has open stops working, wherever its cookie was copied to."""
    user.session_version += 1


def current_user(session: Session, data: object) -> User | None:
    """The staff user of a session's data, if still active and its password unchanged."""
    if not isinstance(data, dict):
        return None
    user_id = data.get("user")
    if not isinstance(user_id, int):
        return None
    user = session.get(User, user_id)
    if user is None or not user.active or data.get("pw") != fingerprint(user):
        return None
    if data.get("sv", 1) != user.session_version:  # signed out since (no "sv": opened before versions)
        return None
    return user


def change_password(session: Session, user: User, current: str, new: str, confirm: str) -> list[str]:
    """Problems as message ids (empty when the password was changed)."""
    key = f"admin-password:user:{user.id}"  # its own count: failed sign-ins by others never block it
    if throttle.is_blocked(session, key, EMAIL_FAILURE_LIMIT, WINDOW_SECONDS):
        return [N_("Too many attempts. Please wait a few minutes and try again.")]
    if not current or not check_password(user, current):
        throttle.record_failure(session, key, WINDOW_SECONDS)
        return [N_("The current password is wrong.")]
    problems = []
    if len(new or "") < MIN_PASSWORD_LENGTH:
        problems.append(N_("The new password must have at least %(count)s characters."))
    elif new == current:
        problems.append(N_("The new password must differ from the current one."))
    if new != confirm:
        problems.append(N_("The two new passwords do not match."))
    if problems:
        return problems
    user.password_hash = hash_password(new)
    user.must_change_password = False
    end_sessions(user)
    session.flush()
    return []


# --- what a user may see ---


def visible_companies(session: Session, user: User) -> list[Company]:
    if user.role == Role.admin.value:
        return list(session.scalars(select(Company).order_by(Company.name, Company.id)))
    return sorted(user.companies, key=lambda c: (c.name, c.id))


@dataclass
class Balance:
    open: Money
    overdue: Money


@dataclass
class CompanySummary:
    company: Company
    customers: int
    balances: list[Balance] = field(default_factory=list)


_NOT_DUE = (InvoiceStatus.void.value, InvoiceStatus.disputed.value)


def company_summaries(session: Session, user: User) -> list[CompanySummary]:
    """Per visible company: customers and open invoices per currency with the overdue part.

    Aggregated in SQL: one query for the customer counts, one per company timezone for amounts
    (overdue means due before today in the company's own timezone).
    """
    companies = visible_companies(session, user)
    if not companies:
        return []
    ids = [c.id for c in companies]
    counts = dict(
        session.execute(
            select(Customer.company_id, func.count(Customer.id))
            .where(Customer.company_id.in_(ids))
            .group_by(Customer.company_id)
        ).all()
    )
    summaries = {c.id: CompanySummary(company=c, customers=int(counts.get(c.id, 0))) for c in companies}
    by_timezone: dict[str, list[int]] = {}
    for company in companies:
        by_timezone.setdefault(company.timezone, []).append(company.id)
    for tz, company_ids in by_timezone.items():
        today: date = clock.today(tz)
        rows = session.execute(
            select(
                Invoice.company_id,
                Invoice.currency,
                func.sum(Invoice.open_minor),
                func.sum(case((Invoice.due_date < today, Invoice.open_minor), else_=0)),
            )
            .where(
                Invoice.company_id.in_(company_ids),
                Invoice.kind == InvoiceKind.invoice.value,
                Invoice.open_minor > 0,
                Invoice.status.not_in(_NOT_DUE),
            )
            .group_by(Invoice.company_id, Invoice.currency)
            .order_by(Invoice.company_id, Invoice.currency)
        ).all()
        for company_id, currency, open_minor, overdue_minor in rows:
            summaries[company_id].balances.append(
                Balance(open=Money(int(open_minor or 0), currency), overdue=Money(int(overdue_minor or 0), currency))
            )
    return [summaries[c.id] for c in companies]
