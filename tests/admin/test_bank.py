"""The bank reconciliation queue at /admin/bank: upload, accept, match by hand, set aside, undo; roles."""

from __future__ import annotations

import re
from html import unescape

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from admin import bank as bank_routes
from ledger.allocation import invariant_violations
from ledger.models import AuditEvent, BankEntry, Customer, Payment
from ledger.statement import unapplied_credit
from tests.admin.conftest import csrf_from, make_user
from tests.admin.staff_book import signed_in  # noqa: F401 - fixtures
from tests.reconciliation.bank_world import PETIT_IBAN, World, camt, credit, make_world
from tests.reconciliation.camt_builder import Ntry, Tx

HTMX = {"HX-Request": "true"}


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).replace("\u202f", " ").replace("\u00a0", " ").split())


@pytest.fixture
def world(session: Session) -> World:
    world = make_world(session)
    make_user(session, "admin@x.test", "admin")
    make_user(session, "boss@acme.test", "manager", ["ACME"])
    make_user(session, "boss@other.test", "manager", ["OTHER"])
    make_user(session, "reader@acme.test", "viewer", ["ACME"])
    anne = make_user(session, "anne@acme.test", "collector", ["ACME"])
    world.customer(session, "C-MARTIN").collector_id = anne.id
    session.commit()
    return world


STATEMENT = camt(
    credit("120.00", ref="E1", text="Facture F-2026-0468"),  # the rule matches it
    credit("980.00", ref="E2", name="GARAGE PETIT", iban=PETIT_IBAN, text="F-2026-0471", day="2026-12-01"),
    credit("300.00", ref="E3", name="M. DUPONT", iban=None, text="VIREMENT DIVERS"),  # nobody's: by hand
    Ntry("45.90", side="DBIT", ref="E4", booking="2026-11-25", value="2026-11-25",
         txs=(Tx("45.90", "EDF", ustrd=("PRLV EDF",)),)),
)


def _upload(client: TestClient, data: bytes, name: str = "releve.xml", **extra: str):  # type: ignore[no-untyped-def]
    page = client.get("/admin/bank")
    return client.post("/admin/bank/import", data={"csrf_token": csrf_from(page.text), **extra},
                       files={"statement": (name, data, "application/xml")})


def _entry(session: Session, ref: str) -> BankEntry:
    session.expire_all()
    return session.scalars(select(BankEntry).where(BankEntry.bank_reference.like(f"%{ref}"))).one()


def _post(client: TestClient, path: str, data: dict[str, object] | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get("/admin/bank?state=all").text)
    return client.post(path, data={"csrf_token": token, **(data or {})}, follow_redirects=False, **kwargs)  # type: ignore[arg-type]


def test_upload_shows_the_summary_and_the_queue(new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@acme.test", "fr")
    response = _upload(client, STATEMENT)
    assert response.status_code == 200, response.text
    text = _text(response.text)
    assert "Relevés importés" in text
    assert "releve.xml · STMT-1 FR7630006000011234567890189 ACME 4 1 1 1 1 0" in text
    assert "GARAGE PETIT" in text and "M. DUPONT" in text and "EDF" not in text  # money out is not to do
    assert world.invoice(session, "F-2026-0468").status == "paid"
    again = _text(_upload(client, STATEMENT).text)
    assert "releve.xml · STMT-1 FR7630006000011234567890189 ACME 4 0 0 0 0 4" in again


def test_accept_a_suggestion_in_one_click(new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@acme.test")
    _upload(client, STATEMENT)
    entry = _entry(session, "E2")
    assert entry.state == "suggested"
    listing = client.get("/admin/bank").text
    assert f'hx-post="/admin/bank/entries/{entry.id}/accept"' in listing
    row = _post(client, f"/admin/bank/entries/{entry.id}/accept", headers=HTMX)
    assert row.status_code == 200
    assert row.text.lstrip().startswith(f'<tr id="entry-{entry.id}"') and "<html" not in row.text
    assert "Matched" in row.text and "Undo the match" in row.text
    assert _entry(session, "E2").state == "matched"
    assert world.invoice(session, "F-2026-0471").open_minor == 20_00  # 980 of 1000: the rest stays open
    assert invariant_violations(session) == []


def test_match_by_hand_across_customers_with_credit_then_undo(new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    _upload(client, STATEMENT)
    entry = _entry(session, "E3")
    martin = world.invoice(session, "F-2026-0469")
    petit = world.invoice(session, "F-2026-0470")
    found = client.get(f"/admin/bank/entries/{entry.id}?q=Petit").text
    assert "F-2026-0470" in found and "F-2026-0469" not in found
    page = client.get(f"/admin/bank/entries/{entry.id}?pick={martin.id}&pick={petit.id}").text
    assert f'name="amount-{martin.id}"' in page and 'value="80.00"' in page
    response = _post(client, f"/admin/bank/entries/{entry.id}/match",
                     {"pick": [str(martin.id), str(petit.id)], f"amount-{martin.id}": "80,00",
                      f"amount-{petit.id}": "175.00"})
    assert response.status_code == 303, response.text
    assert world.invoice(session, "F-2026-0469").status == "paid"
    assert world.invoice(session, "F-2026-0470").status == "paid"
    # 300 - 80 - 175: the first customer's (Martin's) credit
    assert unapplied_credit(session, world.customer(session, "C-MARTIN").id)["EUR"].minor == 45_00

    match_id = re.search(r'/admin/bank/matches/(\d+)/undo', client.get("/admin/bank?state=matched").text)
    assert match_id
    undone = _post(client, f"/admin/bank/matches/{match_id.group(1)}/undo")
    assert undone.status_code == 303
    assert world.invoice(session, "F-2026-0469").open_minor == 80_00
    assert world.invoice(session, "F-2026-0470").open_minor == 175_00
    assert unapplied_credit(session, world.customer(session, "C-MARTIN").id) == {}
    assert _entry(session, "E3").state == "unmatched"
    actions = set(session.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "bank_entry")))
    assert {"bank_match.confirmed", "bank_match.undone"} <= actions


def test_bad_amounts_are_named_and_nothing_is_matched(new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@acme.test")
    _upload(client, STATEMENT)
    entry = _entry(session, "E3")
    martin = world.invoice(session, "F-2026-0469")
    refused = _post(client, f"/admin/bank/entries/{entry.id}/match", {"pick": [str(martin.id)],
                                                                      f"amount-{martin.id}": "huit"})
    assert refused.status_code == 400 and "F-2026-0469: huit is not an amount in EUR." in unescape(refused.text)
    too_much = _post(client, f"/admin/bank/entries/{entry.id}/match", {"pick": [str(martin.id)],
                                                                       f"amount-{martin.id}": "90"})
    assert too_much.status_code == 400 and "Nothing was matched" in unescape(too_much.text)
    assert 'value="90"' in too_much.text  # what was typed stays
    assert _entry(session, "E3").state == "unmatched" and world.invoice(session, "F-2026-0469").open_minor == 80_00


def test_set_aside_and_put_back(new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@acme.test")
    _upload(client, STATEMENT)
    entry = _entry(session, "E3")
    row = _post(client, f"/admin/bank/entries/{entry.id}/ignore", headers=HTMX)
    assert row.status_code == 200 and "Put back in the queue" in row.text
    assert _entry(session, "E3").state == "ignored"
    assert "M. DUPONT" not in client.get("/admin/bank").text
    assert _post(client, f"/admin/bank/entries/{entry.id}/restore").status_code == 303
    assert _entry(session, "E3").state == "unmatched"
    again = _post(client, f"/admin/bank/entries/{_entry(session, 'E1').id}/ignore")
    assert again.status_code == 409  # matched already: named, nothing changed
    in_place = _post(client, f"/admin/bank/entries/{_entry(session, 'E1').id}/ignore", headers=HTMX)
    assert in_place.headers["HX-Retarget"] == "#bank-error" and "This bank entry is matched already." in in_place.text
    assert _entry(session, "E1").state == "matched"


def test_roles(new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    _upload(signed_in(new_client, "boss@acme.test"), STATEMENT)
    entry = _entry(session, "E3")
    reader = signed_in(new_client, "reader@acme.test")
    listing = reader.get("/admin/bank").text
    assert "M. DUPONT" in listing and "/accept" not in listing and 'name="statement"' not in listing
    for path in (f"/admin/bank/entries/{entry.id}/ignore", f"/admin/bank/entries/{entry.id}/accept"):
        assert _post(reader, path).status_code == 403
    assert _upload(reader, STATEMENT).status_code == 403

    other = signed_in(new_client, "boss@other.test")
    assert "M. DUPONT" not in other.get("/admin/bank?state=all").text
    assert other.get(f"/admin/bank/entries/{entry.id}").status_code == 404
    assert _post(other, f"/admin/bank/entries/{entry.id}/ignore").status_code == 404
    assert _upload(other, STATEMENT, name="acme.xml").status_code == 403  # ACME's account: nothing stays
    assert session.scalar(select(AuditEvent).where(AuditEvent.actor == "boss@other.test")) is None

    anne = signed_in(new_client, "anne@acme.test")  # collector of Martin: sees Martin's matched entry only
    mine = anne.get("/admin/bank").text
    assert "Facture F-2026-0468" in mine and "M. DUPONT" not in mine and "GARAGE PETIT" not in mine
    assert "/undo" not in mine
    assert anne.get(f"/admin/bank/entries/{entry.id}").status_code == 404


def test_a_file_too_large_is_refused_whole(new_client, world: World, session: Session,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bank_routes, "MAX_STATEMENT_BYTES", len(STATEMENT) - 1)
    client = signed_in(new_client, "boss@acme.test")
    response = _upload(client, STATEMENT)
    assert response.status_code == 413 and "nothing imported" in response.text
    assert session.scalars(select(BankEntry)).all() == []
    assert session.scalars(select(Payment)).all() == []
    assert session.scalars(select(Customer)).all()  # the world is still there


def test_a_statement_with_bad_lines_is_refused_in_the_staff_members_language(
        new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@acme.test", language="fr")
    bad = b"date;montant;devise\n2026-03-02;10,005;EUR\n2026-03-02;1,00;EURO\n"
    response = _upload(client, bad, name="releve.csv")
    assert response.status_code == 400
    assert ("releve.csv : rien n’a été importé : 2 ligne(s) incorrecte(s) : ligne 2 : amount : '10,005' a plus "
            "de 2 décimales pour la devise EUR ; ligne 3 : currency : code ISO 4217 attendu") in _text(response.text)
    assert session.scalars(select(BankEntry)).all() == []


def test_the_dashboard_shows_what_became_of_the_money_received(new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@acme.test")
    _upload(client, STATEMENT)
    row = re.compile(r"EUR €1,400.00 (.*?) 25 Nov 2026 · 0 days")
    shown = row.search(_text(client.get("/admin").text))
    assert shown, _text(client.get("/admin").text)
    assert shown.group(1) == "€120.00 (8.6 %) €0.00 (0.0 %) €0.00 (0.0 %) €1,280.00 (91.4 %)"
    _post(client, f"/admin/bank/entries/{_entry(session, 'E2').id}/accept")
    _post(client, f"/admin/bank/entries/{_entry(session, 'E3').id}/ignore")
    after = re.search(r"EUR €1,400.00 (.*?) —", _text(client.get("/admin").text))
    assert after and after.group(1) == "€120.00 (8.6 %) €980.00 (70.0 %) €300.00 (21.4 %) €0.00 (0.0 %)"
    assert "Bank reconciliation" not in signed_in(new_client, "anne@acme.test").get("/admin").text


def test_bank_accounts_in_the_company_settings(new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "admin@x.test")
    page = client.get("/admin/settings/ACME")
    assert "FR7630006000011234567890189" in page.text and "Deactivate FR7630006000011234567890189" in page.text
    token = csrf_from(page.text)
    bad = client.post("/admin/settings/ACME/accounts", data={"csrf_token": token, "iban": "FR76 3000 6000 0112 3456 "
                                                              "7890 188", "currency": "EUR"})
    assert bad.status_code == 400 and "check digits do not match" in bad.text
    assert 'value="FR76 3000 6000 0112 3456 7890 188"' in bad.text
    added = client.post("/admin/settings/ACME/accounts", data={"csrf_token": token, "iban": "be71 0961 2345 6769",
                                                                "currency": "EUR", "label": "Compte belge"},
                        follow_redirects=False)
    assert added.status_code == 303
    shown = client.get(added.headers["location"]).text
    assert "BE71096123456769" in shown and "Compte belge" in shown
    account_id = re.search(r'/admin/settings/ACME/accounts/(\d+)/active"[^>]*>\s*<input[^>]*>'
                           r'<input type="hidden" name="active" value="0">\s*<button[^>]*>Deactivate BE71', shown)
    assert account_id
    off = client.post(f"/admin/settings/ACME/accounts/{account_id.group(1)}/active",
                      data={"csrf_token": token, "active": "0"}, follow_redirects=False)
    assert off.status_code == 303 and "Reactivate BE71096123456769" in client.get(off.headers["location"]).text
    # Another company's account through this company's address: not found.
    other = client.post(f"/admin/settings/OTHER/accounts/{account_id.group(1)}/active",
                        data={"csrf_token": token, "active": "1"}, follow_redirects=False)
    assert other.status_code == 404
    boss = signed_in(new_client, "boss@acme.test")
    assert boss.post("/admin/settings/ACME/accounts", data={"csrf_token": csrf_from(boss.get("/admin/bank").text),
                                                            "iban": "BE71096123456769"}).status_code == 403
    actions = set(session.scalars(select(AuditEvent.action).where(AuditEvent.actor == "admin@x.test")))
    assert {"bank_account.added", "bank_account.deactivated"} <= actions


def test_the_pager_links_carry_where_the_reader_is(new_client, world: World, session: Session) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(new_client, "boss@acme.test")
    _upload(client, camt(*(credit(f"{2000 + n}.00", ref=f"P{n}", name=f"Payeur {n:03d}", iban=None, text="divers")
                           for n in range(bank_routes.queue.PAGE_SIZE + 3))))
    first = client.get("/admin/bank").text
    link = re.search(r'rel="next" href="([^"]+)"', first)
    assert link is not None and "page=2" in link.group(1) and "after=" in link.group(1)
    second = client.get(unescape(link.group(1)), headers=HTMX)
    assert second.status_code == 200 and "<html" not in second.text
    assert _text(second.text).count("Payeur") == 3 and "Payeur 000" in _text(second.text)
    assert 'rel="next"' not in second.text
    counted = client.get("/admin/bank?page=2", headers=HTMX).text
    assert re.findall(r'id="entry-(\d+)"', counted) == re.findall(r'id="entry-(\d+)"', second.text)
    back = re.search(r'rel="prev" href="([^"]+)"', second.text)
    assert back is not None and unescape(back.group(1)).rstrip("?") == "/admin/bank"
    assert client.get("/admin/bank?page=2&after=nonsense").status_code == 200
