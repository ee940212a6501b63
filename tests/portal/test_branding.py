from __future__ import annotations

import re

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from portal.branding import contrast, palette
from tests import factories
from tests.conftest import statements_run
from tests.portal.conftest import login


def test_brand_colours_always_readable() -> None:
    for color in ("#1d4f91", "#ffd400", "#00a0e9", "#ffffff", "#000000", "#7fbf7f", "not-a-colour", None):
        colors = palette(color)
        assert contrast(colors["brand"], colors["on_brand"]) >= 4.5, color
        assert contrast(colors["brand_text"], "#ffffff") >= 4.5, color


def test_pages_show_the_logo_without_reading_it(session: Session, client: TestClient) -> None:
    """Every portal page shows the company's logo, read by the browser from /brand/…/logo: the page
    itself never reads the logo's bytes (up to 512 KB) from the database."""
    from encours.demo import _logo

    logo = _logo("LS", "#0f6e5b")
    company = factories.company(session, code="LOGO", name="Logo SAS", logo=logo, logo_mime="image/svg+xml")
    customer = factories.customer(session, company)
    factories.invoice(session, customer, number="F-LOGO")
    session.expire_all()  # the pages load the company afresh, as in another request
    login(client, customer)
    with statements_run(session.get_bind().engine) as statements:
        page = client.get("/portal")
    assert page.status_code == 200 and 'src="/brand/LOGO/logo"' in page.text
    assert statements and not [sql for sql in statements if re.search(r"\bcompanies(_\d+)?\.logo\b", sql)]
    served = client.get("/brand/LOGO/logo")
    assert served.status_code == 200 and served.content == logo and served.headers["content-type"] == "image/svg+xml"
