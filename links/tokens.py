"""Magic links: sign, verify, revoke, record opens.

A token is `URLSafeTimedSerializer(secret, salt="portal-link")` over
`{"c": contact_id, "v": link_version}`; its timestamp comes from our clock.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer, want_bytes
from sqlalchemy import (Connection, DateTime, Exists, Integer, String, Table, TextClause, bindparam, exists, insert,
                        select, text)
from sqlalchemy.orm import Session, joinedload

from kernel.clock import clock
from kernel.db import driver_rows, first_row
from kernel.loop_reads import BatchedRead, LoopReads
from ledger import audit
from ledger.events import EVENT_TYPES, queue_deliveries_for_ids
from ledger.models import AuditEvent, Company, Contact, Customer, LinkOpen
from links import throttle

SALT = "portal-link"
# The same link opened again from the same browser within this time is one open, recorded
# once: double clicks, a mail scanner's retries and a debtor going back and forth add no
# information, and writing a row for each made every exchange a write transaction.
OPEN_RECORDED_ONCE_WITHIN = timedelta(minutes=10)


class _ClockSigner(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(clock.now().timestamp())

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        # Derived once per secret, not on every sign and check (a hash each time).
        return _derived_key(self.secret_keys[-1] if secret_key is None else want_bytes(secret_key), self.salt)


@functools.lru_cache(maxsize=8)
def _derived_key(secret_key: bytes, salt: bytes) -> bytes:
    return TimestampSigner(secret_key, salt=salt).derive_key()


@functools.lru_cache(maxsize=8)
def _serializer(secret: str) -> URLSafeTimedSerializer:
    """One serializer per secret (it keeps no per-use state; the timestamp comes from `clock`)."""
    return URLSafeTimedSerializer(secret, salt=SALT, signer=_ClockSigner)


class LinkProblem(str, enum.Enum):
    invalid = "invalid"  # tampered, truncated, or not ours
    expired = "expired"
    revoked = "revoked"  # version bumped, or the contact is gone


@dataclass(frozen=True)
class LinkCheck:
    contact: Contact | None
    problem: LinkProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def make_token(secret: str, contact: Contact) -> str:
    return _serializer(secret).dumps({"c": contact.id, "v": contact.link_version})


def link_url(base_url: str, token: str) -> str:
    return f"{base_url}/p/{token}"


# A signed token is base64url segments joined by dots (payload.timestamp.signature).
_LINK_TOKEN = re.compile(r"/p/[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)+")
MASKED_LINK = "/p/••••••"


def mask_links(text: str) -> str:
    """`text` with every magic-link token replaced by a mask: what staff may read of a message sent to
    a debtor (a working link in the back-office would let any staff member act as the debtor)."""
    return _LINK_TOKEN.sub(MASKED_LINK, text)


def verify(session: Session, secret: str, token: str) -> LinkCheck:
    """Check a token; `contact` is set whenever the signature is ours (even expired),
    so the error page can speak the contact's language. Nothing about the contact
    may be shown to the visitor unless `ok`."""
    serializer = _serializer(secret)
    try:
        payload, signed_at = serializer.loads(token, return_timestamp=True)
    except BadSignature:
        return LinkCheck(None, LinkProblem.invalid)
    contact = _contact_for(session, payload)
    if contact is None:
        return LinkCheck(None, LinkProblem.invalid)
    return LinkCheck(contact, _lapsed(payload, signed_at, contact.link_version,
                                      contact.customer.company.link_lifetime_days))


def _lapsed(payload: dict[str, Any], signed_at: datetime, link_version: int, lifetime_days: int) -> LinkProblem | None:
    """Why a link signed by us no longer opens: revoked since (the contact's links were given a
    new version), or older than its company's link lifetime; None while it is good."""
    if link_version != payload.get("v"):
        return LinkProblem.revoked
    if clock.now() - signed_at > timedelta(days=lifetime_days):
        return LinkProblem.expired
    return None


@dataclass(frozen=True)
class LinkFacts:
    """What exchanging a link needs, read in one query (see `check_link`). `language` is set
    whenever the signature is ours, for the error page; nothing else may be shown unless `ok`.
    `throttled`: this client opened too many bad links lately and this one is no good either (a good
    link always opens)."""

    problem: LinkProblem | None
    contact_id: int | None = None
    customer_id: int | None = None
    link_version: int | None = None
    session_version: int | None = None
    language: str | None = None
    email: str | None = None  # the contact's, and its customer's company: the open's audit event names them
    company_id: int | None = None
    recorded: bool = False  # this open was recorded already (OPEN_RECORDED_ONCE_WITHIN)
    throttled: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.throttled


@dataclass(frozen=True)
class ThrottleRule:
    """Bad links counted per `key` (a client): `limit` within `window_seconds` blocks it."""

    key: str
    limit: int
    window_seconds: int


# Table columns rather than ORM attributes: a Core statement skips the ORM's compile and result
# machinery, which cost more than the query itself on the portal's busiest request.
_contacts, _customers, _companies, _opens = (Contact.__table__, Customer.__table__, Company.__table__,
                                             LinkOpen.__table__)
_OWNERS = (_contacts.join(_customers, _customers.c.id == _contacts.c.customer_id)
           .join(_companies, _companies.c.id == _customers.c.company_id))


def _facts(since: Any, ip: Any, agent: Any, throttled: Exists) -> tuple[Any, ...]:
    """The link's facts as `_link_facts` reads them: the contact's, its customer's and company's
    columns, whether this client's open since `since` is recorded already (from `ip` with `agent`),
    and whether the client is `throttled` (`throttle.blocked_clause`). Asked of one link with
    parameters (`_LINK_FACTS`), of many with the columns of their questions (`LINK_FACTS_ASKED`)."""
    return (
        _contacts.c.id, _contacts.c.customer_id, _contacts.c.link_version, _contacts.c.session_version,
        _contacts.c.language, _contacts.c.email, _customers.c.company_id, _companies.c.link_lifetime_days,
        exists()
        .where(_opens.c.contact_id == _contacts.c.id, _opens.c.opened_at >= since,
               _opens.c.ip.is_not_distinct_from(ip), _opens.c.user_agent.is_not_distinct_from(agent))
        .label("recorded"),
        throttled.label("throttled"),
    )


_LINK_FACTS = (
    select(*_facts(bindparam("since", type_=_opens.c.opened_at.type), bindparam("ip", type_=_opens.c.ip.type),
                   bindparam("agent", type_=_opens.c.user_agent.type), throttle.blocked_clause()))
    .select_from(_OWNERS)
    .where(_contacts.c.id == bindparam("contact_id"))
)

def check_link(session: Session | Connection, secret: str, token: str, ip: str | None, user_agent: str | None,
               rule: ThrottleRule) -> LinkFacts:
    """`verify` for the magic-link exchange, whether this open is recorded already, and whether
    the client is throttled (`rule`): one Core query, reading contact, customer, company, opens
    and the throttle together (the exchange is the portal's busiest request). The signature is
    checked once, before any query; a bad one costs only the throttle's query."""
    payload, signed_at, params = _link_question(secret, token, ip, user_agent, rule)
    row = None
    if params is not None:
        if isinstance(session, Connection):
            row = first_row(session, _LINK_FACTS, params)
        else:
            found = session.execute(_LINK_FACTS, params).first()
            row = tuple(found) if found is not None else None
    if row is None:
        throttled = throttle.is_blocked(session, rule.key, rule.limit, rule.window_seconds)
        return LinkFacts(LinkProblem.invalid, throttled=throttled)
    return _link_facts(payload, signed_at, row)


# `_LINK_FACTS` for many links at once (see kernel.loop_reads): one row per question, numbered; the
# contact's columns NULL when it names none. A question's values typed without the columns' lengths:
# a CAST to varchar(n) would cut a longer value instead of comparing it.
LINK_FACTS_ASKED = BatchedRead(
    lambda q: select(q.c.n, *_facts(q.c.since, q.c.ip, q.c.agent,
                                    throttle.blocked_clause(q.c.throttle_key, q.c.throttle_limit, q.c.throttle_since)))
    .select_from(q.outerjoin(_OWNERS, _contacts.c.id == q.c.contact_id)),
    (("contact_id", Integer()), ("since", DateTime(timezone=True)), ("ip", String()), ("agent", String()),
     ("throttle_key", String()), ("throttle_limit", Integer()), ("throttle_since", DateTime(timezone=True))))

async def check_link_on_loop(reads: LoopReads, secret: str, token: str, ip: str | None, user_agent: str | None,
                             rule: ThrottleRule) -> LinkFacts:
    """`check_link` through `reads` (PostgreSQL, on the event loop): the same facts, asked in one
    statement with the other links checked at the same time on this loop (`LINK_FACTS_ASKED`)."""
    payload, signed_at, params = _link_question(secret, token, ip, user_agent, rule)
    row = await reads.ask(LINK_FACTS_ASKED, params or {
        "contact_id": None, "since": None, "ip": None, "agent": None,
        **throttle.blocked_params(rule.key, rule.limit, rule.window_seconds)})
    if row[0] is None:
        return LinkFacts(LinkProblem.invalid, throttled=bool(row[-1]))
    return _link_facts(payload, signed_at, row)


def _link_question(secret: str, token: str, ip: str | None, user_agent: str | None,
                   rule: ThrottleRule) -> tuple[Any, datetime | None, dict[str, Any] | None]:
    """The token's payload and signing time (None, None when the signature is not ours), and the
    parameters of `_LINK_FACTS` for it (None when it names no contact)."""
    try:
        payload, signed_at = _serializer(secret).loads(token, return_timestamp=True)
    except BadSignature:
        return None, None, None
    contact_id = _contact_id(payload)
    if contact_id is None:
        return payload, signed_at, None
    return payload, signed_at, {
        "contact_id": contact_id, "since": clock.now() - OPEN_RECORDED_ONCE_WITHIN, "ip": ip,
        "agent": _user_agent(user_agent), **throttle.blocked_params(rule.key, rule.limit, rule.window_seconds)}


def _link_facts(payload: Any, signed_at: datetime | None, row: tuple[Any, ...]) -> LinkFacts:
    (found_id, customer_id, link_version, session_version, language, email, company_id, lifetime_days, recorded,
     throttled) = row
    facts = {"contact_id": found_id, "customer_id": customer_id, "link_version": link_version,
             "session_version": session_version, "language": language, "email": email, "company_id": company_id}
    assert isinstance(payload, dict) and signed_at is not None
    problem = _lapsed(payload, signed_at, link_version, lifetime_days)
    if problem is None:  # a good link always opens: debtors behind one proxy must not lock each other out
        return LinkFacts(None, recorded=bool(recorded), **facts)
    if throttled:
        return LinkFacts(None, throttled=True)
    return LinkFacts(problem, **facts)


def _contact_id(payload: object) -> int | None:
    if not isinstance(payload, dict):
        return None
    contact_id = payload.get("c")
    if not isinstance(contact_id, int) or isinstance(contact_id, bool):
        return None
    return contact_id


def _contact_for(session: Session, payload: object) -> Contact | None:
    contact_id = _contact_id(payload)
    if contact_id is None:
        return None
    # One query for the contact, its customer and company: verify reads all three.
    return session.get(Contact, contact_id, options=[joinedload(Contact.customer).joinedload(Customer.company)])


def _user_agent(user_agent: str | None) -> str | None:
    return (user_agent or "")[:400] or None


_RECORD_OPEN = insert(LinkOpen.metadata.tables[LinkOpen.__tablename__])  # _opens, typed as the Table it is
_AUDIT = cast(Table, AuditEvent.__table__)
_OPENED_BY = select(_contacts.c.email, _customers.c.id, _customers.c.company_id).join(
    _customers, _customers.c.id == _contacts.c.customer_id)


def open_row(facts: LinkFacts, ip: str | None, user_agent: str | None) -> dict[str, Any]:
    """The open of a good link (`check_link`'s facts) for `record_opens`, stamped now: its
    `link_opens` row and the owners its audit event names, as the check read them."""
    assert facts.ok and facts.contact_id is not None
    return {"contact_id": facts.contact_id, "ip": ip, "user_agent": _user_agent(user_agent), "opened_at": clock.now(),
            "email": facts.email, "customer_id": facts.customer_id, "company_id": facts.company_id}


def record_open(session: Session | Connection, contact_id: int, ip: str | None, user_agent: str | None) -> None:
    """`record_opens` of one open of this contact's link, its owners read first."""
    owners = session.execute(_OPENED_BY.where(_contacts.c.id == contact_id)).first()
    if owners is None:
        raise LookupError(f"no contact {contact_id}")
    email, customer_id, company_id = owners
    record_opens(session, [{"contact_id": contact_id, "ip": ip, "user_agent": _user_agent(user_agent),
                            "opened_at": clock.now(), "email": email, "customer_id": customer_id,
                            "company_id": company_id}])


def record_opens(session: Session | Connection, rows: list[dict[str, Any]]) -> None:
    """Record these opens (`open_row`): each a `link_opens` row and a "link.opened" audit event
    for the ERP (the events feed), with a webhook delivery per endpoint of its company that
    subscribes. On PostgreSQL in ONE statement (so a whole transaction by itself: see
    `kernel.db.statement_connection`), elsewhere in a few Core statements."""
    connection = session.connection() if isinstance(session, Session) else session
    if connection.dialect.name == "postgresql":
        _record_opens_in_one_statement(connection, rows)
        return
    connection.execute(_RECORD_OPEN, [{key: row[key] for key in _OPEN_COLUMNS} for row in rows])
    written = connection.execute(insert(_AUDIT).returning(_AUDIT.c.id, _AUDIT.c.company_id,
                                                          sort_by_parameter_order=True),
                                 [_opened_event(row) for row in rows]).all()
    queue_deliveries_for_ids(connection, [(event_id, company_id, "link.opened") for event_id, company_id in written])


_OPEN_COLUMNS = ("contact_id", "ip", "user_agent", "opened_at")


def _opened_event(row: dict[str, Any]) -> dict[str, Any]:
    return {"actor_type": "contact", "actor": row["email"], "action": "link.opened", "entity_type": "contact",
            "entity_id": row["contact_id"], "customer_id": row["customer_id"], "company_id": row["company_id"],
            "created_at": row["opened_at"], "before": None, "after": {"contact_email": row["email"]}}


# The opens given as one array per column, each row numbered so ids follow the given order; the
# audit events written from them, and a delivery for each endpoint of the event's company that
# subscribes to "link.opened" (events.subscribes: "*" or the type, in its JSON list of types).
# The JSON columns are written as SQLAlchemy's JSON type writes them (`before` None is JSON null).
_RECORD_OPENS = text("""
WITH given AS MATERIALIZED (
    SELECT * FROM unnest(CAST(:contact_id AS integer[]), CAST(:opened_at AS timestamptz[]), CAST(:ip AS varchar[]),
                         CAST(:user_agent AS varchar[]), CAST(:email AS varchar[]), CAST(:customer_id AS integer[]),
                         CAST(:company_id AS integer[]), CAST(:after AS json[]))
        WITH ORDINALITY AS g (contact_id, opened_at, ip, user_agent, email, customer_id, company_id, after, n)
), opened AS (
    INSERT INTO link_opens (contact_id, opened_at, ip, user_agent)
    SELECT contact_id, opened_at, ip, user_agent FROM given ORDER BY n
), events AS (
    INSERT INTO audit_events (actor_type, actor, action, entity_type, entity_id, customer_id, company_id,
                              before, after, created_at)
    SELECT 'contact', email, 'link.opened', 'contact', contact_id, customer_id, company_id,
           CAST(:before AS json), after, opened_at
    FROM given ORDER BY n
    RETURNING id, company_id
)
INSERT INTO webhook_deliveries (endpoint_id, audit_event_id, status, attempts, next_attempt_at, created_at)
SELECT endpoint.id, events.id, 'queued', 0, :now, :now
FROM events JOIN webhook_endpoints AS endpoint ON endpoint.company_id = events.company_id
WHERE CAST(endpoint.event_types AS jsonb) ?| CAST(:subscribed AS text[])
ORDER BY events.id, endpoint.id
""")


def record_opens_statement(rows: list[dict[str, Any]]) -> tuple[TextClause, dict[str, Any]]:
    """PostgreSQL's one statement recording these opens (`record_opens`) and its parameters."""
    params: dict[str, Any] = {name: [row[name] for row in rows] for name in
                              ("contact_id", "opened_at", "ip", "user_agent", "email", "customer_id", "company_id")}
    params["after"] = [json.dumps({"contact_email": row["email"]}) for row in rows]
    params.update(before=json.dumps(None), now=clock.now(), subscribed=["*", EVENT_TYPES["link.opened"]])
    return _RECORD_OPENS, params


def _record_opens_in_one_statement(connection: Connection, rows: list[dict[str, Any]]) -> None:
    # On the driver's cursor, as kernel.db.first_row runs the link check (whose SQLAlchemy execution
    # cost more than its query): 7 round trips per open became 2 (bench/RESULTS.md, 2026-12-05 opens8).
    driver_rows(connection, *record_opens_statement(rows))


class UnknownCustomer(LookupError):
    pass


def find_customer(session: Session, ref: str, company_code: str | None) -> Customer:
    """The customer with this ERP ref; the company is needed only when the ref is ambiguous."""
    query = select(Customer).where(Customer.ref == ref)
    if company_code:
        query = query.join(Company).where(Company.code == company_code)
    matches = session.scalars(query).all()
    if not matches:
        where = f" in company {company_code}" if company_code else ""
        raise UnknownCustomer(f"no customer with ref {ref!r}{where}")
    if len(matches) > 1:
        codes = ", ".join(sorted(c.company.code for c in matches))
        raise UnknownCustomer(f"customer ref {ref!r} exists in several companies ({codes}); pass --company")
    return matches[0]


def fresh_link(session: Session, secret: str, base_url: str, customer: Customer) -> str:
    contact = customer.primary_contact
    if contact is None:
        raise UnknownCustomer(f"customer {customer.ref!r} has no contact to send a link to")
    return link_url(base_url, make_token(secret, contact))


def revoke_all(session: Session, customer: Customer, actor: str = "cli", actor_type: str = "system") -> int:
    """Invalidate every link (and portal session) given to any contact of the customer."""
    for contact in customer.contacts:
        contact.link_version += 1
    audit.record(
        session,
        actor_type=actor_type,
        actor=actor,
        action="links.revoked",
        entity_type="customer",
        entity_id=customer.id,
        customer_id=customer.id,
    )
    return len(customer.contacts)
