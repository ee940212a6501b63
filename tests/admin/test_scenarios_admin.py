"""Scenario editor, live preview, run history and dry runs in the back-office."""

from __future__ import annotations

import re
from html import unescape

from datetime import date, timedelta
from typing import Any, Iterator

import pytest

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from dunning.planner import run
from dunning.scenarios import ensure_default_scenario
from kernel.settings import Settings
from ledger.models import AuditEvent, Company, OutboxMessage, Scenario, ScenarioStep
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user

TODAY = date(2026, 11, 25)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    """A browser that prefers English (the tests in French say so)."""
    with TestClient(app, base_url="http://testserver", headers={"Accept-Language": "en"}) as client:
        yield client


def _setup(session: Session) -> tuple[Company, Scenario]:
    company = factories.company(session, code="ACME", name="Acme SAS")
    scenario = ensure_default_scenario(session, company)
    session.commit()
    return company, scenario


def _form(client: TestClient, scenario: Scenario) -> dict[str, str]:
    """The editor's fields as the browser would post them."""
    import re
    from html import unescape

    page = client.get(f"/admin/scenarios/{scenario.id}")
    assert page.status_code == 200
    data: dict[str, str] = {"csrf_token": csrf_from(page.text)}
    form = page.text.split('id="scenario-form"', 1)[1].split("</form>", 1)[0]
    for tag in re.findall(r"<input[^>]*>", form):
        named = re.search(r'name="([^"]+)"[^>]*value="([^"]*)"', tag)
        if named and ('type="checkbox"' not in tag or " checked" in tag):
            data[named.group(1)] = unescape(named.group(2))
    for name, value in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S):
        data[name] = unescape(value)
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', body)
        if chosen:
            data[name] = unescape(chosen.group(1))
    data["active"] = "1"
    return data


def _steps(session: Session, scenario: Scenario) -> list[tuple[int, str]]:
    session.expire_all()
    return [(s.offset_days, s.subject_en) for s in session.scalars(
        select(ScenarioStep).where(ScenarioStep.scenario_id == scenario.id).order_by(ScenarioStep.offset_days))]


def test_roles_admin_and_managers_edit_others_read(session: Session, client: TestClient,
                                                   new_client) -> None:  # type: ignore[no-untyped-def]
    company, scenario = _setup(session)
    other = factories.company(session, code="OTHER")
    ensure_default_scenario(session, other)
    make_user(session, "manager@example.com", "manager", ["ACME"])
    make_user(session, "viewer@example.com", "viewer", ["ACME"])
    make_user(session, "outsider@example.com", "manager", ["OTHER"])

    login(client, "manager@example.com")
    listing = client.get("/admin/scenarios")
    assert listing.status_code == 200 and "Acme SAS" in listing.text and "OTHER" not in listing.text
    assert "D-5" in listing.text and "D+30" in listing.text
    data = _form(client, scenario)
    data["step-1-subject_en"] = "Overdue: {{ customer.name }}"
    saved = client.post(f"/admin/scenarios/{scenario.id}", data=data, follow_redirects=False)
    assert saved.status_code == 303
    assert (3, "Overdue: {{ customer.name }}") in _steps(session, scenario)

    viewer = new_client("10.0.0.2")
    login(viewer, "viewer@example.com")
    page = viewer.get(f"/admin/scenarios/{scenario.id}")
    assert page.status_code == 200 and "<fieldset disabled" in page.text and "Save the scenario" not in page.text
    # Readers read the texts; rendering them (the preview) is for those who may edit.
    assert "/preview" not in page.text and 'name="step"' not in page.text and 'id="preview"' not in page.text
    refused = viewer.post(f"/admin/scenarios/{scenario.id}", data={**data, "csrf_token": csrf_from(page.text)})
    assert refused.status_code == 403

    outsider = new_client("10.0.0.3")
    login(outsider, "outsider@example.com")
    assert outsider.get(f"/admin/scenarios/{scenario.id}").status_code == 404


def test_collector_reads_but_does_not_edit(session: Session, client: TestClient) -> None:
    company, scenario = _setup(session)
    collector = make_user(session, "collector@example.com", "collector", ["ACME"])
    factories.customer(session, company, collector_id=collector.id)
    session.commit()
    login(client, "collector@example.com")
    page = client.get(f"/admin/scenarios/{scenario.id}")
    assert page.status_code == 200 and "Save the scenario" not in page.text
    data = _form(client, scenario)
    assert client.post(f"/admin/scenarios/{scenario.id}", data=data).status_code == 403


def test_save_with_a_bad_placeholder_or_syntax_saves_nothing_and_names_step_language_line(
    session: Session, client: TestClient
) -> None:
    company, scenario = _setup(session)
    make_user(session)
    login(client, "admin@example.com")
    before = _steps(session, scenario)
    data = _form(client, scenario)
    data["name"] = "Renamed"
    data["step-0-subject_fr"] = "Tout va bien"  # valid, yet must not be saved either
    data["step-2-body_en"] = "Hello,\n\n{{ invoices }}\n{{ client.name }}"
    data["step-3-body_fr"] = "{% if totals %}\n{{ totals }}"
    refused = client.post(f"/admin/scenarios/{scenario.id}", data=data)
    assert refused.status_code == 400
    assert "Nothing was saved" in refused.text
    assert "Step D+15, English body, line 4: unknown placeholder “client”." in refused.text
    assert "Step D+30, français body, line 2: syntax error" in refused.text
    # What was typed is shown again, to be fixed.
    assert "{{ client.name }}" in refused.text
    assert _steps(session, scenario) == before
    session.expire_all()
    assert session.get_one(Scenario, scenario.id).name == "Standard"
    assert session.scalars(select(AuditEvent).where(AuditEvent.entity_type == "scenario")).all() == []


def test_save_in_french_explains_in_french(session: Session, client: TestClient) -> None:
    company, scenario = _setup(session)
    make_user(session)
    client.headers["Accept-Language"] = "fr"
    login(client, "admin@example.com")
    data = _form(client, scenario)
    data["step-1-subject_fr"] = "{{ total }}"
    refused = client.post(f"/admin/scenarios/{scenario.id}", data=data)
    assert refused.status_code == 400
    assert "Étape D+3, objet (français), ligne 1 : variable inconnue « total »." in refused.text


def test_edit_add_remove_and_swap_steps_then_audit(session: Session, client: TestClient) -> None:
    company, scenario = _setup(session)
    make_user(session)
    login(client, "admin@example.com")
    data = _form(client, scenario)
    # D+3 and D+15 swap days; D-5 is removed; a new D+45 step is added; minimum and segment set.
    data["step-1-offset"], data["step-2-offset"] = "15", "3"
    data["step-0-remove"] = "1"
    added = client.post(f"/admin/scenarios/{scenario.id}", data={**data, "action": "add_step"})
    assert added.status_code == 200 and 'name="step-4-offset" value="40"' in added.text
    data.update({"step_count": "5", "step-4-offset": "45", "step-4-tone": "formal", "step-4-whole_balance": "1",
                 "step-4-subject_fr": "Dernier avis", "step-4-body_fr": "{{ invoices }}\n{{ link }}",
                 "step-4-subject_en": "Last notice", "step-4-body_en": "{{ invoices }}\n{{ link }}",
                 "segment": "key", "minimum-EUR": "50,00", "name": "Key accounts"})
    saved = client.post(f"/admin/scenarios/{scenario.id}", data=data, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    steps = _steps(session, scenario)
    assert [offset for offset, _ in steps] == [3, 15, 30, 45]
    assert steps[0][1].endswith("second reminder, unpaid invoices") and steps[3][1] == "Last notice"
    fresh = session.get_one(Scenario, scenario.id)
    assert (fresh.name, fresh.segment, fresh.minimums) == ("Key accounts", "key", {"EUR": 50_00})
    [event] = session.scalars(select(AuditEvent).where(AuditEvent.entity_type == "scenario")).all()
    assert (event.action, event.actor, event.entity_id) == ("scenario.updated", "admin@example.com", scenario.id)
    assert len(event.before["steps"]) == 4 and [s["offset_days"] for s in event.after["steps"]] == [3, 15, 30, 45]


def test_a_minimum_that_is_not_an_amount_is_refused_and_nothing_is_saved(session: Session,
                                                                        client: TestClient) -> None:
    company, scenario = _setup(session)
    make_user(session)
    login(client, "admin@example.com")
    for typed in ("cinquante", "-5,00", "1,234"):
        refused = client.post(f"/admin/scenarios/{scenario.id}", data={**_form(client, scenario),
                                                                        "minimum-EUR": typed, "name": "Renamed"})
        assert refused.status_code == 400, typed
        assert "The minimum in EUR must be an amount, for example 50.00." in unescape(refused.text), typed
        assert f'value="{typed}"' in refused.text  # what was typed is shown again
    session.expire_all()
    assert session.get_one(Scenario, scenario.id).name != "Renamed"


def test_a_step_already_sent_cannot_be_removed(session: Session, session_factory: sessionmaker[Session],
                                               settings: Settings, client: TestClient) -> None:
    company, scenario = _setup(session)
    customer = factories.customer(session, company)
    factories.invoice(session, customer, due_date=TODAY - timedelta(days=3))
    session.commit()
    run(session_factory, settings, TODAY, "ACME")
    make_user(session)
    login(client, "admin@example.com")
    data = _form(client, scenario)
    data["step-1-remove"] = "1"
    refused = client.post(f"/admin/scenarios/{scenario.id}", data=data)
    assert refused.status_code == 400 and "Step D+3 was already sent to customers" in refused.text
    assert len(_steps(session, scenario)) == 4


def test_live_preview_renders_the_unsaved_texts_for_a_real_customer(session: Session, client: TestClient) -> None:
    company, scenario = _setup(session)
    customer = factories.customer(session, company, language="en")
    customer.name = "Globex Ltd"
    factories.invoice(session, customer, 1234_56, number="INV-42", due_date=TODAY - timedelta(days=20))
    session.commit()
    make_user(session)
    login(client, "admin@example.com")
    data = _form(client, scenario)
    data.update({"step-2-subject_en": "Still waiting, {{ customer.name }}", "preview_step": "2",
                 "preview_customer": str(customer.id)})
    token = data.pop("csrf_token")
    fragment = client.post(f"/admin/scenarios/{scenario.id}/preview", data=data,
                           headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text  # only the preview block
    assert "Still waiting, Globex Ltd" in fragment.text
    assert "INV-42" in fragment.text and "€1,234.56" in fragment.text
    # The HTML part: in a sandboxed frame, from a URL served with its own policy (inline styles).
    frame = re.search(r'<iframe class="preview-html" sandbox="" [^>]*src="([^"]+)"', fragment.text)
    assert frame and "srcdoc" not in fragment.text
    html = client.get(unescape(frame.group(1)))
    assert html.status_code == 200 and "INV-42" in html.text
    assert "style-src 'unsafe-inline'" in html.headers["content-security-policy"]
    assert "script-src" not in html.headers["content-security-policy"]  # default-src 'none': no script
    assert html.headers["x-frame-options"] == "SAMEORIGIN"
    # Nothing saved by previewing.
    assert "Still waiting" not in " ".join(subject for _, subject in _steps(session, scenario))
    # A bad placeholder shows in the preview instead of failing.
    data["step-2-subject_en"] = "{{ nope }}"
    bad = client.post(f"/admin/scenarios/{scenario.id}/preview", data=data,
                      headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert bad.status_code == 200 and "unknown placeholder “nope”" in bad.text
    # Without the CSRF token the preview is refused.
    assert client.post(f"/admin/scenarios/{scenario.id}/preview", data=data).status_code == 403


def test_the_editor_page_shows_placeholders_and_a_first_preview(session: Session, client: TestClient) -> None:
    company, scenario = _setup(session)
    customer = factories.customer(session, company)
    customer.name = "Initech"
    factories.invoice(session, customer, number="F-9", due_date=TODAY - timedelta(days=40))
    session.commit()
    make_user(session)
    login(client, "admin@example.com")
    page = client.get(f"/admin/scenarios/{scenario.id}?step=3&customer={customer.id}")
    assert page.status_code == 200
    assert "{{ broken_promise }}" in page.text and "{{ late_charges }}" in page.text
    assert 'hx-trigger="input changed delay:400ms"' in page.text and "X-CSRF-Token" in page.text
    assert "F-9" in page.text and "Mise en demeure" in page.text


def test_create_a_scenario_for_a_segment(session: Session, client: TestClient) -> None:
    company, scenario = _setup(session)
    make_user(session)
    login(client, "admin@example.com")
    page = client.get("/admin/scenarios")
    created = client.post("/admin/scenarios/new", data={"csrf_token": csrf_from(page.text), "company": "ACME",
                                                        "name": "Public sector", "segment": "public"},
                          follow_redirects=False)
    assert created.status_code == 303
    new = session.scalars(select(Scenario).where(Scenario.segment == "public")).one()
    assert len(new.steps) == 4
    again = client.post("/admin/scenarios/new", data={"csrf_token": csrf_from(page.text), "company": "ACME",
                                                      "name": "Twice", "segment": "public"})
    assert again.status_code == 400 and "already applies to segment “public”" in again.text


def test_run_history_counts_planned_sent_and_failed(session: Session, session_factory: sessionmaker[Session],
                                                    settings: Settings, client: TestClient) -> None:
    company, scenario = _setup(session)
    customers = [factories.customer(session, company, ref=f"R{n}", email=f"r{n}@client.test") for n in range(3)]
    for customer in customers:
        factories.invoice(session, customer, due_date=TODAY - timedelta(days=3))
    session.commit()
    [report] = run(session_factory, settings, TODAY, "ACME")
    assert report.queued == 3
    messages = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    messages[0].status = "sent"
    messages[1].status, messages[1].attempts, messages[1].last_error = "failed", 1, "550 5.1.1 No such user"
    session.commit()
    make_user(session)
    login(client, "admin@example.com")
    listing = client.get("/admin/scenarios/runs")
    assert listing.status_code == 200
    row = listing.text.split(f'/admin/scenarios/runs/{report.run_id}"', 1)[1].split("</tr>", 1)[0]
    import re

    numbers = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r'<td class="num">(.*?)</td>', row)]
    assert numbers == ["3", "1", "1", "1 ⚠", "0"]  # planned, sent, waiting, failed, skipped
    detail = client.get(f"/admin/scenarios/runs/{report.run_id}")
    assert detail.status_code == 200
    assert "550 5.1.1 No such user" in detail.text and "r1@client.test" in detail.text
    assert detail.text.count("D+3") >= 3 and "Failed" in detail.text and "Sent" in detail.text


def test_dry_run_page_says_what_would_go_to_whom_and_why_skipped(session: Session, client: TestClient) -> None:
    company, scenario = _setup(session)
    go = factories.customer(session, company, ref="GO", email="go@client.test")
    paused = factories.customer(session, company, ref="PAUSED", reminders_paused=True)
    for customer in (go, paused):
        factories.invoice(session, customer, 250_00, number=f"F-{customer.ref}", due_date=TODAY - timedelta(days=3))
    session.commit()
    make_user(session)
    login(client, "admin@example.com")
    page = client.get("/admin/scenarios/runs/preview?company=ACME&date=2026-11-25")
    assert page.status_code == 200
    assert "1 message would go" in page.text and "go@client.test" in page.text and "F-GO" in page.text
    assert "Reminders paused by staff" in page.text and "PAUSED" in page.text
    assert session.scalars(select(OutboxMessage)).all() == []
    assert client.get("/admin/scenarios/runs/preview?company=ACME&date=25/11").status_code == 400


def test_preview_is_for_those_who_may_edit_and_works_without_htmx(session: Session, client: TestClient,
                                                                  app: Any) -> None:
    company, scenario = _setup(session)
    customer = factories.customer(session, company, language="en")
    factories.invoice(session, customer, 1234_56, number="INV-7", due_date=TODAY - timedelta(days=20))
    session.commit()
    make_user(session)
    make_user(session, "anne@example.com", "collector", [company.code])
    make_user(session, "boss@example.com", "manager", [company.code])
    login(client, "admin@example.com")
    data = _form(client, scenario)
    data.update({"step-2-subject_en": "Hello {{ customer.name }}", "preview_step": "2",
                 "preview_customer": str(customer.id)})
    full = client.post(f"/admin/scenarios/{scenario.id}/preview", data=data)  # no HX-Request
    assert full.status_code == 200 and "<html" in full.text and "INV-7" in full.text
    assert "HX-Request" in full.headers["vary"]
    for email, status in (("anne@example.com", 403), ("boss@example.com", 200)):
        with TestClient(app, base_url="http://testserver") as other:
            login(other, email)
            page = other.get("/admin/scenarios")
            data["csrf_token"] = csrf_from(page.text)
            answer = other.post(f"/admin/scenarios/{scenario.id}/preview", data=data,
                                headers={"HX-Request": "true"})
            assert answer.status_code == status, email
            if email == "anne@example.com":
                assert "INV-7" not in other.get(f"/admin/scenarios/{scenario.id}?customer={customer.id}").text


@pytest.mark.parametrize("body, refusal", [
    ("{% for i in range(100000000) %}x{% endfor %}", "a loop may only go over"),
    ("{{ range(100000000) }}", "calls are not allowed"),
    ("{% for a in invoices %}{% for b in invoices %}x{% endfor %}{% endfor %}", "loops inside loops"),
    ("{{ 'x' * 1000000000 }}", "repetition"),
    ("{{ 9 ** 999999999 }}", "powers"),
    ("{% set s = customer.name %}{% set t = s ~ s %}", "may not use another variable"),
    ("{{ customer.name|center(999999999) }}", "center"),
    ("{{ customer.name.__class__ }}", "unsafe"),
])
def test_a_costly_template_is_refused_on_save_and_in_the_preview(session: Session, client: TestClient,
                                                                 body: str, refusal: str) -> None:
    company, scenario = _setup(session)
    customer = factories.customer(session, company, language="en")
    factories.invoice(session, customer, 1234_56, number="INV-8", due_date=TODAY - timedelta(days=20))
    session.commit()
    make_user(session)
    login(client, "admin@example.com")
    data = _form(client, scenario)
    data.update({"step-2-body_en": body, "preview_step": "2", "preview_customer": str(customer.id),
                 "preview_language": "en"})
    token = data["csrf_token"]
    preview = client.post(f"/admin/scenarios/{scenario.id}/preview", data=data,
                          headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert preview.status_code == 200 and refusal in preview.text and "INV-8" not in preview.text
    saved = client.post(f"/admin/scenarios/{scenario.id}", data=data)
    assert saved.status_code == 400 and refusal in saved.text
    assert body not in [b for b, in session.execute(select(ScenarioStep.body_en))]
def test_may_skip_is_edited_with_the_step(session: Session, client: TestClient) -> None:
    company, scenario = _setup(session)
    make_user(session)
    login(client, "admin@example.com")
    data = _form(client, scenario)
    assert data["step-0-may_skip"] == "1" and "step-1-may_skip" not in data and data["step-2-may_skip"] == "1"
    data["step-1-may_skip"] = "1"
    del data["step-2-may_skip"]
    assert client.post(f"/admin/scenarios/{scenario.id}", data=data, follow_redirects=False).status_code == 303
    session.expire_all()
    assert [s.may_skip for s in sorted(scenario.steps, key=lambda s: s.offset_days)] == [True, True, False, False]


def test_review_queue_sends_some_discards_others_and_keeps_the_rest(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, client: TestClient
) -> None:
    company, scenario = _setup(session)
    company.reminders_need_approval = True
    customers = [factories.customer(session, company, ref=f"Q{n}", email=f"q{n}@client.test") for n in range(3)]
    for customer in customers:
        factories.invoice(session, customer, number=f"F-{customer.ref}", due_date=TODAY - timedelta(days=3))
    session.commit()
    [report] = run(session_factory, settings, TODAY, "ACME")
    assert report.queued == 3 and report.held
    make_user(session, "manager@example.com", "manager", ["ACME"])
    make_user(session, "collector@example.com", "collector", ["ACME"])
    login(client, "manager@example.com")
    page = client.get("/admin/scenarios/review")
    assert page.status_code == 200
    assert all(f"q{n}@client.test" in page.text and f"F-Q{n}" in page.text for n in range(3))
    assert "D+3" in page.text and "rappel de factures échues" in page.text
    # The held messages carry working links; the manager reads them masked.
    from links.tokens import MASKED_LINK
    assert MASKED_LINK in page.text and not re.search(r"/p/[A-Za-z0-9_\-]+\.", page.text)
    token = csrf_from(page.text)
    from ledger.models import Reminder

    ids = {r.customer_id: r.id for r in session.scalars(select(Reminder))}
    nothing = client.post("/admin/scenarios/review", data={"csrf_token": token, "action": "send"})
    assert nothing.status_code == 400 and "Tick the reminders" in nothing.text
    sent = client.post("/admin/scenarios/review", data={"csrf_token": token, "action": "send",
                                                         "reminder": str(ids[customers[0].id])},
                       follow_redirects=False)
    assert sent.status_code == 303
    declined = client.post("/admin/scenarios/review", data={"csrf_token": token, "action": "decline",
                                                             "reminder": str(ids[customers[1].id])},
                           follow_redirects=False)
    assert declined.status_code == 303
    session.expire_all()
    status = {m.customer_id: m.status for m in session.scalars(select(OutboxMessage))}
    assert status == {customers[0].id: "queued", customers[1].id: "cancelled", customers[2].id: "held"}
    # The discarded one is proposed again by the next run; the others are not queued twice.
    [again] = run(session_factory, settings, TODAY, "ACME")
    assert [m.customer_ref for m in again.messages] == ["Q1"]
    actions = [e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.customer_id == customers[1].id)
                                                  .order_by(AuditEvent.id))]
    assert actions == ["reminder.queued", "reminder.declined", "reminder.queued"]
    # A collector may not send them.
    client.post("/admin/logout", data={"csrf_token": token})
    login(client, "collector@example.com")
    page = client.get("/admin/scenarios/review")
    assert "No reminder is waiting for approval." in page.text
    refused = client.post("/admin/scenarios/review", data={"csrf_token": csrf_from(page.text), "action": "send_all"})
    assert refused.status_code == 403


def test_failed_messages_are_sent_again_from_the_run_page_and_the_customer_page(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, client: TestClient,
    smtp_server: Any,
) -> None:
    from mail.outbox import deliver_due, parse_smtp_url

    company, scenario = _setup(session)
    customers = [factories.customer(session, company, ref=f"R{n}", email=f"r{n}@client.test") for n in range(3)]
    for customer in customers:
        factories.invoice(session, customer, due_date=TODAY - timedelta(days=3))
    session.commit()
    [report] = run(session_factory, settings, TODAY, "ACME")
    smtp_server.fail_rcpt("550 5.1.1 No such user", times=3)
    assert deliver_due(session_factory, parse_smtp_url(smtp_server.url), "x@encours.test").failed == 3
    make_user(session)
    login(client, "admin@example.com")
    # The dashboard raises it.
    dashboard = client.get("/admin")
    assert "3 email(s) could not be delivered" in dashboard.text and "550 5.1.1 No such user" in dashboard.text
    customer_page = client.get(f"/admin/customers/{customers[0].id}")
    assert "address failing since" in customer_page.text and "Send again" in customer_page.text
    detail = client.get(f"/admin/scenarios/runs/{report.run_id}")
    assert "Send every failed message again (3)" in detail.text
    token = csrf_from(detail.text)
    messages = {m.customer_id: m for m in session.scalars(select(OutboxMessage))}
    one = client.post(f"/admin/scenarios/runs/{report.run_id}/retry",
                      data={"csrf_token": token, "message": str(messages[customers[0].id].id)}, follow_redirects=False)
    assert one.status_code == 303
    session.expire_all()
    assert [messages[c.id].status for c in customers] == ["queued", "failed", "failed"]
    from_customer = client.post(f"/admin/customers/{customers[1].id}/retry",
                                data={"csrf_token": token, "message": str(messages[customers[1].id].id)},
                                follow_redirects=False)
    assert from_customer.status_code == 303
    # A message of another customer is refused on this customer's page.
    wrong = client.post(f"/admin/customers/{customers[1].id}/retry",
                        data={"csrf_token": token, "message": str(messages[customers[2].id].id)})
    assert wrong.status_code == 400
    everything = client.post(f"/admin/scenarios/runs/{report.run_id}/retry", data={"csrf_token": token, "all": "1"})
    assert "1 message(s) go out again" in everything.text
    session.expire_all()
    assert {m.status for m in messages.values()} == {"queued"} and {m.attempts for m in messages.values()} == {0}
    assert deliver_due(session_factory, parse_smtp_url(smtp_server.url), "x@encours.test").sent == 3
    assert "could not be delivered" not in client.get("/admin").text
