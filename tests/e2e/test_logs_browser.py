"""The logs of a whole browser session hold none of the secrets it used.

The demo is served as `encours serve` serves it (uvicorn with log_config=None, every logger on
kernel.logs' one handler, JSON lines, access log on); Chromium opens a debtor's magic link, pays
by card in the sandbox (localstripe; its webhook comes back to the server), and a staff member
signs in with a password, once wrong and once right. Then the captured log is searched for the
magic-link token, both passwords and the card number."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Iterator

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kernel.logs import configure_logging
from ledger.models import Checkout
from tests.e2e.conftest import serve_demo
from tests.e2e.test_card_browser import (MARTIN, CardDemo, MakePage, bridge, choose_overdue_and_pay_by_card,
                                         fill_card, wait_for)
from sandbox.localstripe_server import LocalStripe, start_localstripe, stop_localstripe

pytestmark = pytest.mark.e2e

CARD = "4242424242424242"


@pytest.fixture(scope="module")
def logged_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CardDemo, io.StringIO]]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("json", "INFO", stream=stream)
    process, url, (workdir, log) = start_localstripe()
    localstripe = LocalStripe(url=url)
    try:
        with serve_demo(tmp_path_factory.mktemp("logs-demo"), localstripe.settings(),
                        uvicorn_options={"log_config": None, "log_level": "info", "access_log": True}) as demo:
            localstripe.register_webhook("encours", f"{demo.base_url}/webhooks/stripe")
            yield CardDemo(base_url=demo.base_url, engine=demo.engine, links=demo.links, localstripe=localstripe,
                           live=demo), stream
    finally:
        stop_localstripe(process, workdir, log)
        root.removeHandler(handler)
        root.setLevel(level)


def test_no_token_password_or_card_number_reaches_the_logs(logged_demo: tuple[CardDemo, io.StringIO],
                                                            make_page: MakePage) -> None:
    demo, stream = logged_demo
    link = demo.links[MARTIN]
    token = link.rsplit("/p/", 1)[1]

    page = make_page()
    confirmed = bridge(page, demo.localstripe)
    response = page.goto(link)
    assert response is not None and response.status == 200
    checkout_id = choose_overdue_and_pay_by_card(page, demo)
    fill_card(page, CARD)
    page.locator("#card-submit").click()
    expect(page).to_have_url(f"{demo.base_url}/portal/pay/{checkout_id}")
    assert confirmed and confirmed[0]["status"] == "succeeded"
    with demo.engine.connect() as connection:
        def settled() -> bool:
            status = connection.execute(select(Checkout.status).where(Checkout.id == checkout_id)).scalar()
            connection.rollback()
            return status == "succeeded"

        wait_for(settled)  # localstripe's signed webhook came back and was applied

    out = demo.live.cli("user", "create", "logs@durand.test", "--role", "admin")
    found = re.search(r"^password: (\S+)$", out, re.MULTILINE)
    assert found is not None, out
    password, wrong = found[1], "Wrong-Passw0rd-For-Logs"
    staff = make_page()
    for attempt in (wrong, password):
        staff.goto(f"{demo.base_url}/admin/login")
        staff.get_by_label(re.compile("^(Adresse e-mail|E-mail|Email)", re.I)).fill("logs@durand.test")
        staff.get_by_label(re.compile("^(Mot de passe|Password)$")).fill(attempt)
        staff.get_by_role("button", name=re.compile("Se connecter|Sign in")).click()
    expect(staff).to_have_url(re.compile(r"/admin(/|$)"))

    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    # The session was logged: the link's exchange, the payment pages, the webhook, the sign-ins.
    paths = " ".join(line["message"] for line in access)
    for seen in ("/p/[token]", f"/portal/pay/{checkout_id}/card", "/webhooks/stripe", "/admin/login"):
        assert seen in paths, seen
    assert all(line["request_id"] and line["time"] and line["level"] for line in access)
    for secret in (token, password, wrong, CARD, "4242 4242 4242 4242"):
        assert secret not in text, f"{secret!r} is in the logs"
