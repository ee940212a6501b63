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
from ledger.models import AuditEvent, Company, DisputeReason
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
    # good ISO check digits, but a French IBAN has 27 characters: this one used to be saved
    ("iban", "FR39 3000 6000 0112 345", "FR39300060000112345 has 19 characters; an IBAN from FR has 27."),
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
    listing = client.get("/admin/settings")  # a manager's list leads to its companies' dispute reasons only
    assert listing.status_code == 200 and 'href="/admin/settings/NORTH"' not in listing.text
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


# --- dispute reasons: admins and the company's managers ------------------------------------------


def reason_ids(html: str) -> dict[str, str]:
    """English label -> reason id, as the page's rename forms carry them."""
    import re

    return {label: rid for rid, label in re.findall(
        r'name="reason_id" value="(\d+)">.*?name="label_en" value="([^"]*)"', html, re.S)}


def change_reason(client: TestClient, page: str, **data: str):  # type: ignore[no-untyped-def]
    html = client.get(page).text
    return client.post("/admin/settings/NORTH/reasons", data={"csrf_token": csrf_from(html), **data},
                       follow_redirects=False)


def test_the_settings_page_lists_the_default_reasons_and_an_admin_adds_one(admin_client: TestClient,
                                                                           session: Session) -> None:
    html = admin_client.get("/admin/settings/NORTH").text
    assert list(reason_ids(html)) == ["Wrong amount", "Goods or service not received", "Quality problem",
                                      "Already paid", "Wrong customer", "Missing purchase order", "Other"]
    response = change_reason(admin_client, "/admin/settings/NORTH", action="add", label_fr="Livraison en retard",
                             label_en="Late delivery")
    assert response.status_code == 303 and response.headers["location"].startswith("/admin/settings/NORTH?")
    page = admin_client.get(response.headers["location"]).text
    assert "Dispute reasons saved." in page and list(reason_ids(page))[-1] == "Late delivery"


def test_a_manager_manages_the_reasons_of_its_company_only(client: TestClient, session: Session,
                                                          north: Company) -> None:
    factories.company(session, code="SOUTH", name="South SAS")
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    session.commit()
    client.headers["Accept-Language"] = "en"
    assert login(client, "boss@north.test").status_code == 303
    assert client.get("/admin/settings/NORTH").status_code == 403  # the rest of the settings stay the admins'
    assert client.get("/admin/settings/SOUTH/reasons").status_code == 404
    listing = client.get("/admin/settings").text
    assert "/admin/settings/NORTH/reasons" in listing and "SOUTH" not in listing

    page = "/admin/settings/NORTH/reasons"
    html = client.get(page).text
    assert 'name="iban"' not in html and "Dispute reasons" in html
    ids = reason_ids(html)
    assert change_reason(client, page, action="rename", reason_id=ids["Other"], label_fr="Autre motif",
                         label_en="Something else").status_code == 303
    assert change_reason(client, page, action="up", reason_id=ids["Other"]).status_code == 303
    assert change_reason(client, page, action="deactivate", reason_id=ids["Wrong customer"]).status_code == 303
    after = client.get(page).text
    assert list(reason_ids(after))[-2:] == ["Something else", "Missing purchase order"]
    assert "Inactive" in after
    # another company's reason cannot be reached through this company
    south_reason = session.scalars(select(DisputeReason).join(Company).where(Company.code == "SOUTH")).first()
    assert change_reason(client, page, action="deactivate", reason_id=str(south_reason.id)).status_code == 404


def test_a_bad_reason_is_refused_in_the_managers_language(client: TestClient, session: Session,
                                                         north: Company) -> None:
    make_user(session, "boss@north.test", "manager", ["NORTH"])
    client.headers["Accept-Language"] = "fr"
    assert login(client, "boss@north.test").status_code == 303
    response = change_reason(client, "/admin/settings/NORTH/reasons", action="add", label_fr="Autre",
                             label_en="Late")
    assert response.status_code == 400
    assert "Un motif s’appelle déjà Autre." in response.text
    assert 'value="Late"' in response.text  # what was typed is given back, not dropped
    assert len(reason_ids(response.text)) == 7


def test_deleting_a_reason_a_dispute_carries_deactivates_it(admin_client: TestClient, session: Session,
                                                            north: Company, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ledger import disputes
    from ledger.storage import FileStorage

    customer = factories.customer(session, north)
    invoice = factories.invoice(session, customer)
    disputes.open_case(session, customer=customer, contact=customer.primary_contact, invoice_ids=[invoice.id],
                       reason_code="quality", message="broken", storage=FileStorage(tmp_path))
    session.commit()
    ids = reason_ids(admin_client.get("/admin/settings/NORTH").text)
    kept = change_reason(admin_client, "/admin/settings/NORTH", action="delete", reason_id=ids["Quality problem"])
    assert "Disputes carry this reason: it was deactivated, not deleted." in admin_client.get(
        kept.headers["location"]).text
    deleted = change_reason(admin_client, "/admin/settings/NORTH", action="delete", reason_id=ids["Already paid"])
    assert "The reason was deleted." in admin_client.get(deleted.headers["location"]).text
    session.expire_all()
    assert [r.code for r in disputes.all_reasons(session, north.id)] == [
        "wrong_amount", "not_received", "quality", "wrong_customer", "missing_po", "other"]
    assert "quality" not in [r.code for r in disputes.active_reasons(session, north.id)]


def test_collectors_and_viewers_cannot_change_reasons(client: TestClient, session: Session, north: Company) -> None:
    make_user(session, "anne@north.test", "collector", ["NORTH"])
    make_user(session, "reader@north.test", "viewer", ["NORTH"])
    for email in ("anne@north.test", "reader@north.test"):
        assert login(client, email).status_code == 303
        assert client.get("/admin/settings/NORTH/reasons").status_code == 403
        html = client.get("/admin/").text
        response = client.post("/admin/settings/NORTH/reasons", data={"csrf_token": csrf_from(html),
                                                                      "action": "add", "label_fr": "X",
                                                                      "label_en": "Y"}, follow_redirects=False)
        assert response.status_code == 403
        client.cookies.clear()
def test_reminders_switch_on_with_approval_and_a_gap(admin_client: TestClient, session: Session) -> None:
    from ledger.companies import create_company

    create_company(session, code="FRESH", name="Fresh SAS", currency="EUR")
    session.commit()
    page = admin_client.get("/admin/settings/FRESH").text
    # A new company starts with its reminders off.
    assert 'name="reminders_enabled" value="1">' in page and 'name="reminder_settings" value="1"' in page
    data = form_of(admin_client, "FRESH")
    data.update({"reminder_settings": "1", "reminders_enabled": "1", "reminders_need_approval": "1",
                 "reminder_gap_days": "10"})
    assert save(admin_client, data, code="FRESH").status_code == 303
    session.expire_all()
    fresh = session.scalars(select(Company).where(Company.code == "FRESH")).one()
    assert (fresh.reminders_enabled, fresh.reminders_need_approval, fresh.reminder_gap_days) == (True, True, 10)
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "company.settings_changed",
                                                     AuditEvent.company_id == fresh.id)).one()
    assert event.after["reminders_enabled"] is True and event.before["reminders_enabled"] is False
    # Unticking is "off"; a bad gap is named and nothing changes.
    data = form_of(admin_client, "FRESH")
    data.update({"reminder_settings": "1", "reminder_gap_days": "many"})
    refused = save(admin_client, data, code="FRESH")
    assert refused.status_code == 400 and "Fewest days between two reminders" in refused.text
    session.expire_all()
    assert fresh.reminders_enabled is True
    data["reminder_gap_days"] = "7"
    assert save(admin_client, data, code="FRESH").status_code == 303
    session.expire_all()
    assert (fresh.reminders_enabled, fresh.reminders_need_approval, fresh.reminder_gap_days) == (False, False, 7)


def test_the_transfer_delay_set_here_is_when_an_awaited_transfer_frees_its_invoices(
    admin_client: TestClient, session: Session, north: Company
) -> None:
    from payments.checkout import create_checkout, expire_transfers

    data = form_of(admin_client)
    assert data["transfer_expiry_days"] == "10"
    data["transfer_expiry_days"] = "0"
    refused = save(admin_client, data)
    assert refused.status_code == 400 and "Enter a whole number from 1 to 90." in refused.text
    data["transfer_expiry_days"] = "3"
    assert save(admin_client, data).status_code == 303
    session.expire_all()
    assert session.get_one(Company, north.id).transfer_expiry_days == 3
    customer = factories.customer(session, north)
    invoice = factories.invoice(session, customer)
    checkout = create_checkout(session, customer=customer, contact=None, selection={invoice.id: None},
                               method="bank_transfer", today=clock.today("Europe/Paris"))
    session.commit()
    assert expire_transfers(session, clock.now() + timedelta(days=2, hours=23)) == 0
    assert expire_transfers(session, clock.now() + timedelta(days=3)) == 1
    assert checkout.status == "cancelled" and checkout.failure_code == "expired"
