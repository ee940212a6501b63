"""Admins edit each company's settings: all-or-nothing, every bad field named, audited."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from kernel.clock import clock
from ledger.companies import settings_state
from ledger.models import AuditEvent, Company
from links import tokens
from links.tokens import LinkProblem
from tests import factories
from tests.admin.conftest import csrf_from, login, make_user
from tests.conftest import TEST_SECRET


def image(kind: str, size: tuple[int, int] = (40, 20)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=kind)
    return out.getvalue()


@pytest.fixture
def north(session: Session) -> Company:
    company = factories.company(session, code="NORTH", name="North SAS")
    session.commit()
    return company


@pytest.fixture
def admin_client(client: TestClient, session: Session, north: Company) -> TestClient:
    make_user(session, "root@x.test", "admin")
    client.headers["Accept-Language"] = "en"
    assert login(client, "root@x.test").status_code == 303
    return client


def form_of(client: TestClient, code: str = "NORTH") -> dict[str, str]:
    """The settings form as the page fills it (what a browser would send back unchanged)."""
    import re

    html = client.get(f"/admin/settings/{code}").text
    data = {"csrf_token": csrf_from(html)}
    for name, value in re.findall(r'<input type="(?:text|email)" id="s-[^"]+" name="([^"]+)" value="([^"]*)"', html):
        data[name] = value.replace("&amp;", "&").replace("&#39;", "'").replace("&#34;", '"')
    for name in re.findall(r'name="(method_[a-z_]+)" value="1" checked', html):
        data[name] = "1"
    if 'name="allow_partial_payments" value="1" checked' in html:
        data["allow_partial_payments"] = "1"
    return data


def save(client: TestClient, data: dict[str, str], files=None, code: str = "NORTH"):  # type: ignore[no-untyped-def]
    return client.post(f"/admin/settings/{code}", data=data, files=files, follow_redirects=False)


def test_a_good_save_changes_every_field_and_is_audited(admin_client: TestClient, session: Session,
                                                        north: Company) -> None:
    data = form_of(admin_client)
    data.update({
        "name": "North Industrie", "brand_color": "#AA3300", "iban": "fr76 3000 6000 0112 3456 7890 189",
        "bic": "agrifrppxxx", "support_email": "help@north.test", "reminder_from": "relances@north.test",
        "reminder_hour": "7", "default_discount_percent": "1,5", "default_discount_days": "10",
        "allow_partial_payments": "1", "promise_horizon_days": "45", "promise_grace_days": "5",
        "link_lifetime_days": "7", "base_currency": "usd", "timezone": "America/New_York", "country": "us",
    })
    data.pop("method_card", None)  # turn card off
    data["method_bank_transfer"] = "1"
    response = save(admin_client, data, files={"logo": ("logo.png", image("PNG"), "image/png")})
    assert response.status_code == 303, response.text
    session.expire_all()
    state = settings_state(north)
    assert state["name"] == "North Industrie" and state["brand_color"] == "#aa3300"
    assert (north.iban, north.bic) == ("FR7630006000011234567890189", "AGRIFRPPXXX")
    assert north.default_discount_bps == 150 and north.default_discount_days == 10
    assert north.allow_partial_payments and north.link_lifetime_days == 7 and north.reminder_hour == 7
    assert (north.base_currency, north.timezone, north.country) == ("USD", "America/New_York", "US")
    assert "card" in north.disabled_methods and "bank_transfer" not in north.disabled_methods
    assert north.logo_mime == "image/png"
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "company.settings_changed"))
    assert event is not None and event.company_id == north.id and event.actor == "root@x.test"
    assert event.before["brand_color"] == "#1d4f91" and event.after["brand_color"] == "#aa3300"
    assert event.before["logo"] is None and len(event.after["logo"]) == 16  # a digest, never the bytes
    assert "iban" in event.after
    # what the portal serves
    assert admin_client.get("/brand/NORTH.css").text.count("#aa3300") >= 1
    logo = admin_client.get("/brand/NORTH/logo")
    assert logo.headers["content-type"] == "image/png" and logo.content == north.logo
    page = admin_client.get("/admin/settings/NORTH?done=saved").text
    assert "Settings saved." in page and "Not configured" in page  # Stripe has no keys in the tests


def test_jpeg_logo_is_accepted(admin_client: TestClient, session: Session, north: Company) -> None:
    response = save(admin_client, form_of(admin_client), files={"logo": ("x.bin", image("JPEG"), "application/x")})
    assert response.status_code == 303
    session.expire_all()
    assert north.logo_mime == "image/jpeg"  # from the content, not the name or the declared type


@pytest.mark.parametrize("field,value,message", [
    ("brand_color", "red", "is not a colour like #1d4f91"),
    ("brand_color", "#12345g", "is not a colour like #1d4f91"),
    ("iban", "FR76 3000 6000 0112 3456 7890 188", "is not a valid IBAN"),
    ("bic", "AGRI", "is not a BIC"),
    ("timezone", "Mars/Olympus", "is not a timezone like Europe/Paris"),
    ("base_currency", "XYZ", "is not a currency code"),
    ("link_lifetime_days", "0", "Enter a whole number from 1 to 365"),
    ("reminder_hour", "24", "Enter a whole number from 0 to 23"),
    ("default_discount_percent", "150", "Enter a percentage above 0 and below 100"),
    ("reminder_from", "not an address", "is not an email address"),
    ("name", "  ", "Enter a name of 1 to 200 characters"),
])
def test_one_bad_field_changes_nothing(admin_client: TestClient, session: Session, north: Company, field: str,
                                       value: str, message: str) -> None:
    before = settings_state(north)
    data = form_of(admin_client)
    data.update({field: value, "brand_color": data["brand_color"] if field != "brand_color" else value,
                 "link_lifetime_days": "9" if field != "link_lifetime_days" else value})
    response = save(admin_client, data)
    assert response.status_code == 400
    assert message in response.text
    assert 'aria-invalid="true"' in response.text
    session.expire_all()
    assert settings_state(north) == before
    assert session.scalar(select(AuditEvent).where(AuditEvent.action == "company.settings_changed")) is None


def test_every_bad_field_is_named_at_once(admin_client: TestClient, session: Session, north: Company) -> None:
    data = form_of(admin_client)
    data.update({"brand_color": "blue", "iban": "FR00 1234", "timezone": "Nowhere/Town", "name": "Renamed"})
    response = save(admin_client, data, files={"logo": ("logo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png")})
    assert response.status_code == 400
    for text in ("4 fields need a correction", "Brand colour", "IBAN", "Timezone", "Logo",
                 "The logo must be a PNG or JPEG image."):
        assert text in response.text, text
    session.expire_all()
    assert north.name == "North SAS" and north.logo is None


def test_fake_svg_or_huge_logo_is_refused(admin_client: TestClient, session: Session, north: Company) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    response = save(admin_client, form_of(admin_client), files={"logo": ("logo.png", svg, "image/png")})
    assert response.status_code == 400 and "The logo must be a PNG or JPEG image." in response.text
    big = image("PNG") + b"\0" * (600 * 1024)
    response = save(admin_client, form_of(admin_client), files={"logo": ("logo.png", big, "image/png")})
    assert response.status_code == 400 and "The logo is larger than 512 KB." in response.text
    session.expire_all()
    assert north.logo is None


def test_french_messages(admin_client: TestClient, session: Session, north: Company) -> None:
    data = form_of(admin_client)
    data["brand_color"] = "rouge"
    admin_client.headers["Accept-Language"] = "fr"
    response = save(admin_client, data)
    assert response.status_code == 400 and "n’est pas une couleur" in response.text


def test_without_csrf_nothing_changes(admin_client: TestClient, session: Session, north: Company) -> None:
    data = form_of(admin_client)
    data.pop("csrf_token")
    data["name"] = "Hijacked"
    assert save(admin_client, data).status_code == 403
    session.expire_all()
    assert north.name == "North SAS"


def test_settings_are_admin_only(client: TestClient, session: Session, north: Company) -> None:
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    assert login(client, "boss@north.test").status_code == 303
    assert client.get("/admin/settings").status_code == 403
    assert client.get("/admin/settings/NORTH").status_code == 403
    token = csrf_from(client.get("/admin/password").text)
    assert save(client, {"csrf_token": token, "name": "Boss Inc"}).status_code == 403


def test_unknown_company_is_404(admin_client: TestClient) -> None:
    assert admin_client.get("/admin/settings/NOPE").status_code == 404


def test_link_lifetime_set_here_is_what_links_live(admin_client: TestClient, session: Session,
                                                   north: Company) -> None:
    customer = factories.customer(session, north)
    session.commit()
    token = tokens.make_token(TEST_SECRET, customer.primary_contact)
    data = form_of(admin_client)
    data["link_lifetime_days"] = "3"
    assert save(admin_client, data).status_code == 303
    session.expire_all()
    clock.set(clock.now() + timedelta(days=2))
    assert tokens.verify(session, TEST_SECRET, token).ok
    clock.set(clock.now() + timedelta(days=2))
    assert tokens.verify(session, TEST_SECRET, token).problem is LinkProblem.expired
