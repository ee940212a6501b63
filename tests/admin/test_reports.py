"""Reports per collector over a period: collected, promises made and kept, disputes resolved, DSO by month."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

from sqlalchemy.orm import Session

from admin import reports_service
from kernel.clock import clock
from ledger import disputes, fx
from ledger.money import Money
from ledger.storage import FileStorage
from payments import manual
from tests import factories
from tests.admin.conftest import make_user
from tests.admin.staff_book import signed_in  # noqa: F401 - fixtures


def _world(session: Session, tmp_path: Path) -> dict[str, object]:
    north = factories.company(session, code="NORTH", name="North SAS")
    admin = make_user(session, "admin@x.test", "admin")
    anne = make_user(session, "anne@north.test", "collector", ["NORTH"])
    bob = make_user(session, "bob@north.test", "collector", ["NORTH"])
    make_user(session, "reader@north.test", "viewer", ["NORTH"])
    fx.set_rate(session, base="EUR", quote="USD", valid_on="2026-09-01", rate="1.25", actor="test")
    annes = factories.customer(session, north, ref="ANNES", collector_id=anne.id)
    dollars = factories.customer(session, north, ref="DOLLARS", collector_id=anne.id)
    bobs = factories.customer(session, north, ref="BOBS", collector_id=bob.id)
    # Issued 1 Oct (EUR 1,000), 1 Nov (EUR 500); USD 250 on 1 Nov; Bob: EUR 300 on 15 Oct.
    first = factories.invoice(session, annes, total_minor=1000_00, number="A-1", issue_date=date(2026, 10, 1),
                              due_date=date(2026, 10, 31))
    factories.invoice(session, annes, total_minor=500_00, number="A-2", issue_date=date(2026, 11, 1),
                      due_date=date(2026, 12, 1))
    usd = factories.invoice(session, dollars, total_minor=250_00, currency="USD", number="D-1",
                            issue_date=date(2026, 11, 1), due_date=date(2026, 12, 1))
    bill = factories.invoice(session, bobs, total_minor=300_00, number="B-1", issue_date=date(2026, 10, 15),
                             due_date=date(2026, 11, 14))
    session.flush()
    # Promises: Anne's customer on 5 Nov (kept: A-1 is paid on 10 Nov), Bob's on 20 Nov (pending).
    clock.set(datetime(2026, 11, 5, 10, 0, tzinfo=timezone.utc))
    disputes.make_promise(session, customer=annes, contact=None, invoice_ids=[first.id],
                          promised_for=date(2026, 11, 12))
    clock.set(datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc))
    disputes.make_promise(session, customer=bobs, contact=None, invoice_ids=[bill.id], promised_for=date(2026, 11, 30))
    # Bob's customer disputes B-1; Bob rejects it on 22 Nov.
    case = disputes.open_case(session, customer=bobs, contact=bobs.primary_contact, invoice_ids=[bill.id],
                              message="Not ours", storage=FileStorage(tmp_path), reason_code="wrong_customer")
    clock.set(datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc))
    disputes.reject(session, case, user=bob, message="It is.")
    clock.set(datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc))
    # Anne's customer pays A-1 on 10 Nov (a cheque recorded by hand); the USD one pays D-1 on 20 Nov.
    manual.record_manual_payment(session, annes, Money(1000_00, "EUR"), date(2026, 11, 10), "cheque", "CHQ 1",
                                 [(first.id, Money(1000_00, "EUR"))], admin)
    manual.record_manual_payment(session, dollars, Money(250_00, "USD"), date(2026, 11, 20), "cheque", "CHQ 2",
                                 [(usd.id, Money(250_00, "USD"))], admin)
    disputes.settle_promises(session)
    session.commit()
    return {"north": north, "anne": anne, "bob": bob}


def test_each_collectors_figures_over_the_period(session: Session, tmp_path: Path) -> None:
    world = _world(session, tmp_path)
    report = reports_service.build_report(session, world["north"], date(2026, 10, 1), date(2026, 11, 25))  # type: ignore[arg-type]
    rows = {row.email: row for row in report.rows}
    assert list(rows) == ["anne@north.test", "bob@north.test", None]
    anne, bob = rows["anne@north.test"], rows["bob@north.test"]
    # 1,000 EUR + 250 USD at 1.25 = 1,200 EUR
    assert anne.collected.converted == Money(1200_00, "EUR") and bob.collected.converted == Money(0, "EUR")
    assert (anne.promises_made, anne.promises_kept, bob.promises_made, bob.promises_kept) == (1, 1, 1, 0)
    assert (anne.disputes_resolved, bob.disputes_resolved) == (0, 1)
    assert report.months == [date(2026, 10, 31), date(2026, 11, 25)]
    # End of October: Anne owes 1,000 of 1,000 issued in 90 days -> 90 days; Bob 300 of 300 -> 90.
    # 25 November: Anne owes 500 EUR of 1,500 EUR + 200 EUR (USD) issued -> 500 / 1,700 × 90 = 26.5.
    assert anne.dso == [(date(2026, 10, 31), Decimal("90.0")), (date(2026, 11, 25), Decimal("26.5"))]
    assert bob.dso == [(date(2026, 10, 31), Decimal("90.0")), (date(2026, 11, 25), Decimal("90.0"))]
    assert rows[None].dso == [(date(2026, 10, 31), None), (date(2026, 11, 25), None)]


def test_the_page_for_a_manager_and_a_collector_sees_its_own_line(new_client, session: Session,  # type: ignore[no-untyped-def]
                                                                  tmp_path: Path) -> None:
    _world(session, tmp_path)
    admin = signed_in(new_client, "admin@x.test", language="fr")
    page = admin.get("/admin/reports?company=NORTH&from=2026-10-01&to=2026-11-25")
    assert page.status_code == 200
    assert 'data-collector="anne@north.test"' in page.text and 'data-collector="bob@north.test"' in page.text
    assert "1\u202f200,00\u00a0€" in page.text and "26,5" in page.text
    anne = signed_in(new_client, "anne@north.test")
    own = anne.get("/admin/reports?from=2026-10-01&to=2026-11-25")
    assert 'data-collector="anne@north.test"' in own.text and 'data-collector="bob@north.test"' not in own.text
    reader = signed_in(new_client, "reader@north.test")
    assert reader.get("/admin/reports").status_code == 200
    bad = reader.get("/admin/reports?from=2026-13-01")
    assert bad.status_code == 400 and "The start of the period 2026-13-01 is not a date." in bad.text
    backwards = reader.get("/admin/reports?from=2026-11-01&to=2026-10-01")
    assert backwards.status_code == 400 and "The period starts after it ends." in backwards.text
