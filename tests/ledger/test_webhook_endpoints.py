"""Registering ERP webhook endpoints: what is refused (private addresses unless allowed, bad URLs,
unknown event types), and queueing a delivery with each event its endpoints asked for."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import audit
from ledger.companies import create_company
from ledger.models import AuditEvent, WebhookDelivery
from ledger.webhook_endpoints import EndpointError, add_endpoint, deliveries, endpoints, remove_endpoint, send_again


@pytest.fixture
def acme(session: Session):  # type: ignore[no-untyped-def]
    company = create_company(session, code="ACME", name="Acme SA", currency="EUR")
    session.flush()
    return company


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "https://localhost/hook", "http://10.1.2.3/hook", "http://192.168.0.10/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0/",
])
def test_a_private_or_local_address_is_refused_unless_allowed(session: Session, acme, url: str) -> None:
    with pytest.raises(EndpointError, match="private or local address"):
        add_endpoint(session, "ACME", url, ["*"], allow_private=False)
    endpoint, secret = add_endpoint(session, "ACME", url, ["*"], allow_private=True)
    assert secret.startswith("whsec_") and endpoint.event_types == ["*"]


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://erp.example.com/hook", "must start with https://"),
    ("https:///nohost", "must start with https://"),
    ("https://user:pw@erp.example.com/", "user name or password"),
    ("https://erp.example.com/a b", "no spaces"),
])
def test_a_url_that_is_not_a_reachable_http_url_is_refused(session: Session, acme, url: str, reason: str) -> None:
    with pytest.raises(EndpointError, match=reason):
        add_endpoint(session, "ACME", url, ["*"], allow_private=False)


def test_event_types_must_be_known_and_the_company_must_exist(session: Session, acme) -> None:
    with pytest.raises(EndpointError, match="Unknown event type payment.lost; the types are .*payment.succeeded"):
        add_endpoint(session, "ACME", "http://127.0.0.1/", ["payment.succeeded", "payment.lost"], allow_private=True)
    with pytest.raises(EndpointError, match="at least one event type"):
        add_endpoint(session, "ACME", "http://127.0.0.1/", [" ", ""], allow_private=True)
    with pytest.raises(EndpointError, match="Unknown company NOPE"):
        add_endpoint(session, "NOPE", "http://127.0.0.1/", ["*"], allow_private=True)


def test_each_event_queues_one_delivery_per_endpoint_that_asked_for_it(session: Session, acme) -> None:
    everything, _ = add_endpoint(session, "ACME", "http://127.0.0.1/all", ["*"], allow_private=True)
    payments, _ = add_endpoint(session, "ACME", "http://127.0.0.1/pay", ["payment.succeeded"], allow_private=True)
    other = create_company(session, code="BETA", name="Beta SAS", currency="EUR")
    session.flush()
    add_endpoint(session, "BETA", "http://127.0.0.1/beta", ["*"], allow_private=True)
    audit.record(session, actor_type="system", action="payment.succeeded", entity_type="payment", entity_id=1,
                 company_id=acme.id)
    audit.record(session, actor_type="system", action="dispute.rejected", entity_type="dispute", entity_id=2,
                 company_id=acme.id)
    audit.record(session, actor_type="system", action="note.added", entity_type="note", entity_id=3,
                 company_id=acme.id)  # not an event of the feed
    session.flush()
    queued = session.execute(select(WebhookDelivery.endpoint_id, AuditEvent.action)
                             .join(AuditEvent, AuditEvent.id == WebhookDelivery.audit_event_id)
                             .order_by(WebhookDelivery.id)).all()
    assert [tuple(row) for row in queued] == [(everything.id, "payment.succeeded"), (payments.id, "payment.succeeded"),
                                              (everything.id, "dispute.rejected")]
    log = deliveries(session, [acme.id])
    assert [(line.event_type, line.status) for line in log] == [
        ("dispute.resolved", "queued"), ("payment.succeeded", "queued"), ("payment.succeeded", "queued")]
    assert deliveries(session, [other.id]) == []
    assert not send_again(session, log[0].id, company_ids=[other.id])

    remove_endpoint(session, "ACME", everything.id, removed_by="admin@example.com")
    assert [e.url for e in endpoints(session, [acme.id])] == ["http://127.0.0.1/pay"]
    assert [line.endpoint_id for line in deliveries(session, [acme.id])] == [payments.id]
    with pytest.raises(EndpointError, match="has no webhook endpoint"):
        remove_endpoint(session, "BETA", payments.id)
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "webhook_endpoint")
                              .order_by(AuditEvent.id)).all()
    assert actions == ["webhook_endpoint.added"] * 3 + ["webhook_endpoint.removed"]
