"""The scenario editor's preview: the email's HTML in a sandboxed frame served with a policy of its
own (the editor's stays strict), for the user who asked only; errors in the staff's language."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from tests import factories
from tests.admin.conftest import login, make_user
from tests.admin.test_scenarios_admin import TODAY, _form, _setup, client  # noqa: F401 - fixture


def preview(client: TestClient, scenario, **changes: str):  # type: ignore[no-untyped-def]
    data = _form(client, scenario)
    data.update(changes)
    token = data.pop("csrf_token")
    return client.post(f"/admin/scenarios/{scenario.id}/preview", data=data,
                       headers={"HX-Request": "true", "X-CSRF-Token": token})


def frame_url(html: str) -> str:
    found = re.search(r'<iframe class="preview-html" sandbox="" [^>]*src="([^"]+)"', html)
    assert found, html
    return unescape(found.group(1))


def test_the_preview_frame_has_its_own_policy_and_the_editor_keeps_a_strict_one(
        session: Session, client: TestClient, new_client) -> None:  # type: ignore[no-untyped-def]
    company, scenario = _setup(session)
    customer = factories.customer(session, company, language="en")
    factories.invoice(session, customer, 1234_56, number="INV-7", due_date=TODAY - timedelta(days=20))
    make_user(session)
    make_user(session, "other@example.com", "admin")
    login(client, "admin@example.com")
    editor = client.get(f"/admin/scenarios/{scenario.id}")
    policy = editor.headers["content-security-policy"]
    assert "frame-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-src 'none'" in client.get("/admin/customers").headers["content-security-policy"]
    url = frame_url(editor.text)
    frame = client.get(url)
    assert frame.status_code == 200 and "View and pay my invoices" in frame.text and "style=" in frame.text
    assert frame.headers["content-security-policy"].startswith("default-src 'none'; style-src 'unsafe-inline'")
    assert "sandbox" in frame.headers["content-security-policy"]
    # Another user's browser, or a changed address, gets nothing.
    other = new_client()
    login(other, "other@example.com")
    assert other.get(url).status_code == 404
    assert client.get(url[:-4] + "AAAA").status_code == 404
    assert new_client().get(url, follow_redirects=False).status_code == 303  # signed out: to the login page


def test_a_template_error_reads_in_the_staff_language(session: Session, client: TestClient) -> None:
    company, scenario = _setup(session)
    customer = factories.customer(session, company, language="fr")
    factories.invoice(session, customer, 100_00, due_date=TODAY - timedelta(days=20))
    make_user(session)
    login(client, "admin@example.com")
    client.headers["Accept-Language"] = "fr"
    shown = preview(client, scenario, **{"step-2-body_fr": "{{ customer.name.upper.nothing.more }}",
                                         "preview_step": "2", "preview_customer": str(customer.id)})
    assert shown.status_code == 200
    text = unescape(shown.text)
    assert "« nothing » n’existe pas sur « builtin_function_or_method »" in text, text
    assert "has no attribute" not in text
    syntax = unescape(preview(client, scenario, **{"step-2-body_fr": "{% if %}", "preview_step": "2",
                                                  "preview_customer": str(customer.id)}).text)
    assert "erreur de syntaxe" in syntax and "unexpected" not in syntax and "expected" not in syntax, syntax
