"""`tokens.record_opens` writes what the multi-statement path before it wrote (kept here as it was,
owners' query included): the `link_opens` rows, the "link.opened" audit events (JSON as written,
NULLs, order) and one webhook delivery per subscribed endpoint of the event's company, on SQLite
and PostgreSQL (there in one statement, on the driver's cursor)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Connection, String, Table, cast as sql_cast, insert, select
from sqlalchemy.orm import Session

from kernel.clock import clock
from ledger.events import queue_deliveries_for_ids
from ledger.models import AuditEvent, Contact, Customer, LinkOpen, WebhookDelivery, WebhookEndpoint
from links import tokens
from tests import factories
from tests.conftest import TEST_SECRET

OPENS = cast(Table, LinkOpen.__table__)
AUDITS = cast(Table, AuditEvent.__table__)
DELIVERIES = cast(Table, WebhookDelivery.__table__)
CONTACTS, CUSTOMERS = cast(Table, Contact.__table__), cast(Table, Customer.__table__)
OLD_OPENED_BY = select(CONTACTS.c.id, CONTACTS.c.email, CUSTOMERS.c.id, CUSTOMERS.c.company_id).join(
    CUSTOMERS, CUSTOMERS.c.id == CONTACTS.c.customer_id)


def _old_record_opens(session: Session | Connection, rows: list[dict[str, Any]]) -> None:
    """tokens.record_opens before opens8, verbatim but for names."""
    session.execute(insert(OPENS), [{key: row[key] for key in ("contact_id", "ip", "user_agent", "opened_at")}
                                    for row in rows])
    owners = {contact_id: (email, customer_id, company_id) for contact_id, email, customer_id, company_id in
              session.execute(OLD_OPENED_BY.where(CONTACTS.c.id.in_({row["contact_id"] for row in rows})))}
    events = [{"actor_type": "contact", "actor": owners[row["contact_id"]][0], "action": "link.opened",
               "entity_type": "contact", "entity_id": row["contact_id"], "customer_id": owners[row["contact_id"]][1],
               "company_id": owners[row["contact_id"]][2], "created_at": row["opened_at"], "before": None,
               "after": {"contact_email": owners[row["contact_id"]][0]}}
              for row in rows if row["contact_id"] in owners]
    if not events:
        return
    written = session.execute(insert(AUDITS).returning(AUDITS.c.id, AUDITS.c.company_id,
                                                       sort_by_parameter_order=True), events).all()
    queue_deliveries_for_ids(session, [(event_id, company_id, "link.opened") for event_id, company_id in written])


def _written(session: Session, since_open: int, since_event: int, since_delivery: int) -> dict[str, list[Any]]:
    """What was written after these ids, ids replaced by their rank (audit events by the event's)."""
    opens = session.execute(select(OPENS.c.contact_id, OPENS.c.opened_at, OPENS.c.ip, OPENS.c.user_agent)
                            .where(OPENS.c.id > since_open).order_by(OPENS.c.id)).all()
    events = session.execute(
        select(AUDITS.c.id, AUDITS.c.actor_type, AUDITS.c.actor, AUDITS.c.action, AUDITS.c.entity_type,
               AUDITS.c.entity_id, AUDITS.c.customer_id, AUDITS.c.company_id, AUDITS.c.before.is_(None),
               sql_cast(AUDITS.c.before, String), sql_cast(AUDITS.c.after, String), AUDITS.c.after,
               AUDITS.c.created_at)
        .where(AUDITS.c.id > since_event).order_by(AUDITS.c.id)).all()
    rank = {row[0]: n for n, row in enumerate(events)}
    deliveries = session.execute(
        select(DELIVERIES.c.endpoint_id, DELIVERIES.c.audit_event_id, DELIVERIES.c.status, DELIVERIES.c.attempts,
               DELIVERIES.c.next_attempt_at, DELIVERIES.c.created_at, DELIVERIES.c.response_code,
               DELIVERIES.c.latency_ms, DELIVERIES.c.last_error, DELIVERIES.c.delivered_at)
        .where(DELIVERIES.c.id > since_delivery).order_by(DELIVERIES.c.id)).all()
    return {"opens": [tuple(row) for row in opens],
            "events": [tuple(row[1:]) for row in events],
            "deliveries": [(row[0], rank[row[1]], *row[2:]) for row in deliveries]}


def _tops(session: Session) -> tuple[int, int, int]:
    return tuple(session.scalar(select(table.c.id).order_by(table.c.id.desc()).limit(1)) or 0  # type: ignore[return-value]
                 for table in (OPENS, AUDITS, DELIVERIES))


def _endpoint(session: Session, company_id: int, types: list[str] | None) -> None:
    session.add(WebhookEndpoint(company_id=company_id, url="https://erp.example/hook", secret="s",
                                event_types=types))


def _facts(session: Session, contact: Contact, ip: str | None, agent: str | None) -> tokens.LinkFacts:
    rule = tokens.ThrottleRule(f"link:{ip}", limit=5, window_seconds=600)
    return tokens.check_link(session.connection(), TEST_SECRET, tokens.make_token(TEST_SECRET, contact), ip, agent,
                             rule)


def test_the_opens_are_written_as_the_statements_before_wrote_them(session: Session) -> None:
    subscribed, other, silent = (factories.company(session) for _ in range(3))
    _endpoint(session, subscribed.id, ["*"])
    _endpoint(session, subscribed.id, ["link.opened"])
    _endpoint(session, subscribed.id, ["payment.succeeded"])  # another event: no delivery
    _endpoint(session, subscribed.id, [])
    _endpoint(session, subscribed.id, None)  # JSON null: subscribes to nothing
    _endpoint(session, other.id, ["payment.failed", "link.opened"])
    contacts = [factories.customer(session, company, email=f"o{n}@example.com").primary_contact
                for n, company in enumerate((subscribed, subscribed, other, silent))]
    session.flush()
    browsers = [("192.0.2.7", "Mail client"), (None, None), ("2001:db8::1", "x" * 450), ("192.0.2.9", "Browser")]
    facts = [_facts(session, contact, ip, agent) for contact, (ip, agent) in zip(contacts, browsers)]
    assert all(fact.ok for fact in facts)
    assert [(fact.email, fact.company_id) for fact in facts] == [
        (contact.email, contact.customer.company_id) for contact in contacts]
    rows = [tokens.open_row(fact, ip, agent) for fact, (ip, agent) in zip(facts, browsers)]
    rows.append(tokens.open_row(facts[0], "192.0.2.8", "Phone"))  # the same link again, elsewhere
    clock.set(clock.now() + timedelta(seconds=1))  # the deliveries are stamped at writing

    before = _tops(session)
    _old_record_opens(session, rows)
    session.flush()
    old = _written(session, *before)
    before = _tops(session)
    tokens.record_opens(session, rows)
    new = _written(session, *before)

    assert new == old
    assert (len(old["opens"]), len(old["events"]), len(old["deliveries"])) == (5, 5, 7)
    assert old["events"][0][7:10] == (False, "null", '{"contact_email": "o0@example.com"}')  # JSON null, not NULL


def test_one_open_alone_and_a_single_contact(session: Session) -> None:
    company = factories.company(session)
    _endpoint(session, company.id, ["link.opened"])
    contact = factories.customer(session, company).primary_contact
    session.flush()
    before = _tops(session)
    tokens.record_open(session, contact.id, None, "")
    written = _written(session, *before)
    assert [row[0] for row in written["opens"]] == [contact.id]
    assert [(row[1], row[4], row[5]) for row in written["events"]] == [(contact.email, contact.id, contact.customer_id)]
    assert len(written["deliveries"]) == 1
