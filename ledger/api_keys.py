"""The ERP's API keys: made high-entropy, shown once, kept only as a SHA-256.

The back-office shows a new key on the page it redirects to after the POST (a reload posts
nothing again): until then the key waits in an `ApiKeyReveal` row, encrypted with a key derived
from the app's secret and tied to the key and the user, and that row is deleted as the page
reads it. Never in a URL or a cookie (the session cookie is signed, not encrypted)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kernel.clock import clock
from kernel.i18n import N_
from kernel.sealing import seal, unseal
from kernel.user_error import UserError
from ledger import audit
from ledger.models import ApiKey, ApiKeyReveal, Company

KEY_PREFIX = "enc_live_"
MAX_NAME = 100
REVEAL_PURPOSE = "api-key-reveal"
# Long enough for the redirect after the POST (and a slow network), short enough that a key
# nobody came back for does not stay in the database, even sealed.
REVEAL_WITHIN = timedelta(minutes=10)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(session: Session, company_code: str, name: str, *, read_only: bool = False,
               created_by: str | None = None) -> tuple[ApiKey, str]:
    """A new key for the company: the row, and the key itself (which nothing stores)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise UserError(N_("a key name has 1 to %(max)s characters"), max=MAX_NAME).at(field="name")
    company = session.scalar(select(Company).where(Company.code == company_code))
    if company is None:
        raise UserError(N_("unknown company %(code)s"), code=repr(company_code))
    if session.scalar(select(ApiKey.id).where(ApiKey.company_id == company.id, ApiKey.name == name)) is not None:
        raise UserError(N_("company %(company)s already has a key named %(name)s"), company=company.code,
                        name=repr(name)).at(field="name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(company_id=company.id, name=name, key_hash=key_hash(key), prefix=key[: len(KEY_PREFIX) + 4],
                 read_only=read_only, created_at=clock.now(), created_by=created_by)
    session.add(row)
    session.flush()
    audit.record(session, actor_type="user" if created_by else "system", actor=created_by or "cli",
                 action="api_key.created", entity_type="api_key", entity_id=row.id, company_id=company.id,
                 after={"name": name, "read_only": read_only})
    return row, key


def _binding(api_key_id: int, user_id: int) -> str:
    return f"api-key:{api_key_id}:user:{user_id}"


def _drop_stale(session: Session) -> None:
    session.execute(delete(ApiKeyReveal).where(ApiKeyReveal.created_at < clock.now() - REVEAL_WITHIN))


def hold_for_reveal(session: Session, row: ApiKey, key: str, *, user_id: int, secret: str) -> int:
    """Keep the new `key` of `row`, sealed, for the one page that shows it to `user_id`: the
    reveal's id (what the session may carry). Stale reveals are dropped on the way."""
    _drop_stale(session)
    reveal = ApiKeyReveal(api_key_id=row.id, user_id=user_id, created_at=clock.now(),
                          sealed=seal(secret, REVEAL_PURPOSE, key, bound_to=_binding(row.id, user_id)))
    session.add(reveal)
    session.flush()
    return reveal.id


def reveal_once(session: Session, reveal_id: int, *, user_id: int, secret: str) -> tuple[ApiKey, str] | None:
    """The key held under `reveal_id` for `user_id`, its row deleted in the same statement that
    reads it (two requests cannot both get it); None when there is none: already shown, stale,
    another user's, or sealed under another secret."""
    _drop_stale(session)
    taken = session.execute(
        delete(ApiKeyReveal).where(ApiKeyReveal.id == reveal_id, ApiKeyReveal.user_id == user_id)
        .returning(ApiKeyReveal.api_key_id, ApiKeyReveal.sealed)).one_or_none()
    if taken is None:
        return None
    api_key_id, sealed = taken
    key = unseal(secret, REVEAL_PURPOSE, sealed, bound_to=_binding(api_key_id, user_id))
    row = session.get(ApiKey, api_key_id)
    if key is None or row is None:
        return None
    return row, key


def revoke_key(session: Session, company_code: str, name: str, *, revoked_by: str | None = None) -> ApiKey:
    row = session.scalar(select(ApiKey).join(Company, Company.id == ApiKey.company_id)
                         .where(Company.code == company_code, ApiKey.name == name))
    if row is None:
        raise UserError(N_("company %(company)s has no key named %(name)s"), company=repr(company_code),
                        name=repr(name))
    if row.revoked_at is None:
        row.revoked_at = clock.now()
        audit.record(session, actor_type="user" if revoked_by else "system", actor=revoked_by or "cli",
                     action="api_key.revoked", entity_type="api_key", entity_id=row.id, company_id=row.company_id,
                     after={"name": row.name})
    return row


def authenticate(session: Session, key: str) -> ApiKey | None:
    """The live key this is, marked as used now; None for an unknown or revoked key."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash(key)))
    if row is None or row.revoked_at is not None:
        return None
    row.last_used_at = clock.now()
    return row


def company_keys(session: Session, company_ids: list[int] | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.company_id, ApiKey.name)
    if company_ids is not None:
        query = query.where(ApiKey.company_id.in_(company_ids))
    return list(session.scalars(query))
