"""`encours gdpr export|erase` and `encours purge`, run as an operator runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.encours.test_operator_journey import ENCOURS, Operator, _free_port

EMAIL = "paul.martin@cycles-martin.test"


def test_an_operator_exports_erases_and_purges(tmp_path: Path) -> None:
    operator = Operator(tmp_path, f"sqlite:///{tmp_path / 'gdpr.sqlite3'}", _free_port())
    operator("db", "upgrade")
    operator("company", "create", "NORTH", "--name", "North SAS", "--currency", "EUR")
    (tmp_path / "customers.csv").write_text("company,customer_ref,name,email,language,phone,segment\n"
                                            f"NORTH,C-77,Cycles Martin,{EMAIL},fr,+33 6 00 00 00 77,\n",
                                            encoding="utf-8")
    operator("import", "customers", str(tmp_path / "customers.csv"))

    exported = json.loads(operator("gdpr", "export", "--company", "NORTH", "--customer", "C-77"))
    assert exported["contacts"][0]["email"] == EMAIL and exported["customer"]["name"] == "Cycles Martin"
    assert "link_opens" in exported["tables"] and "outbox" in exported["tables"]
    assert operator("gdpr", "export", "--company", "NORTH", "--customer", "C-77", "--contact", EMAIL,
                    "-o", str(tmp_path / "contact.json")).startswith("wrote ")
    assert json.loads((tmp_path / "contact.json").read_text(encoding="utf-8"))["contacts"][0]["email"] == EMAIL

    refused = subprocess.run([ENCOURS, "gdpr", "erase", "--company", "NORTH", "--customer", "C-77"], cwd=tmp_path,
                             env=operator.env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "add --yes" in refused.stderr
    unknown = subprocess.run([ENCOURS, "gdpr", "erase", "--company", "NORTH", "--customer", "C-77", "--contact",
                              "nobody@x.test", "--yes"], cwd=tmp_path, env=operator.env, capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode != 0 and "no contact 'nobody@x.test'" in unknown.stderr

    erased = operator("gdpr", "erase", "--company", "NORTH", "--customer", "C-77", "--yes")
    assert erased.startswith("erased the personal data of C-77: 1 contacts")
    after = operator("gdpr", "export", "--company", "NORTH", "--customer", "C-77")
    assert EMAIL not in after and "Cycles Martin" not in after and "+33 6 00 00 00 77" not in after

    assert operator("purge").strip() == "0 link opens, 0 email bodies, 0 webhook bodies purged"


def test_purge_deletes_sent_emails_and_applied_provider_events_past_their_retention(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from kernel.db import make_engine
    from ledger.models import OutboxMessage, WebhookEvent

    url = f"sqlite:///{tmp_path / 'retention.sqlite3'}"
    operator = Operator(tmp_path, url, _free_port())
    operator("db", "upgrade")
    long_ago = datetime.now(timezone.utc) - timedelta(days=500)
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            session.add_all([
                OutboxMessage(kind="reminder", to_address="a@x.test", subject="s", body_text="b", status="sent",
                              created_at=long_ago, sent_at=long_ago),
                OutboxMessage(kind="reminder", to_address="b@x.test", subject="s", body_text="b", status="queued",
                              created_at=long_ago),
                WebhookEvent(provider="stripe", event_id="evt_1", event_type="charge.refunded", body="{}",
                             received_at=long_ago, processed_at=long_ago),
            ])
            session.commit()
        assert operator("purge").strip() == ("0 link opens, 0 email bodies, 0 webhook bodies purged; "
                                             "1 sent emails, 1 provider events deleted")
        with Session(engine) as session:
            assert session.scalars(select(OutboxMessage.to_address)).all() == ["b@x.test"]  # not sent: kept
            assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
    finally:
        engine.dispose()
    operator.env["ENCOURS_RETAIN_SENT_EMAILS_DAYS"] = "x"
    refused = subprocess.run([ENCOURS, "purge"], cwd=tmp_path, env=operator.env, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0 and "ENCOURS_RETAIN_SENT_EMAILS_DAYS must be a whole number" in refused.stderr
