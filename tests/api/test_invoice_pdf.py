"""The original invoice PDF through the API (issue 18): put, get, replace, delete, the bad inputs,
and the portal serving it instead of its summary PDF to the debtor's magic-link session."""

from __future__ import annotations

import hashlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.db import make_engine, make_sessionmaker, unit_of_work, upgrade
from kernel.settings import Settings, load_settings
from kernel.storage import ObjectStorage
from ledger.api_keys import create_key
from ledger.companies import create_company
from ledger.models import AuditEvent, Customer, Invoice
from tests.api.conftest import CUSTOMER, invoice_body
from tests.conftest import TEST_SECRET
from tests.pgserver import PostgresServer
from tests.portal.conftest import login

PROBLEM = "application/problem+json"
ORIGINAL = b"%PDF-1.7\n% the ERP's own invoice F-1\n%%EOF\n"
REPLACEMENT = b"%PDF-1.7\n% F-1, reissued\n%%EOF\n"
PDF = {"Content-Type": "application/pdf"}


@pytest.fixture
def session_factory(both_databases_session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return both_databases_session_factory  # the new invoice columns, on SQLite and PostgreSQL


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver", "ENCOURS_STORAGE_DIR": str(tmp_path / "files"),
                          "ENCOURS_API_PDF_MAX_BYTES": "4096"})


@pytest.fixture
def invoice(client: TestClient, auth: dict[str, str]) -> str:
    assert client.put("/api/v1/customers/C001", json=CUSTOMER, headers=auth).status_code == 201
    assert client.put("/api/v1/invoices/F-1", json=invoice_body(), headers=auth).status_code == 201
    return "F-1"


def _stored(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "files").rglob("*") if p.is_file())


def test_put_get_replace_delete_round_trip(client, auth, invoice, session: Session, tmp_path: Path):
    assert client.get("/api/v1/invoices/F-1", headers=auth).json()["has_pdf"] is False
    assert client.get("/api/v1/invoices/F-1/pdf", headers=auth).status_code == 404

    created = client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL, headers={**auth, **PDF})
    assert created.status_code == 201, created.text
    assert created.json()["sha256"] == hashlib.sha256(ORIGINAL).hexdigest()
    assert created.json()["size"] == len(ORIGINAL)
    read = client.get("/api/v1/invoices/F-1/pdf", headers=auth)
    assert read.status_code == 200 and read.content == ORIGINAL
    assert read.headers["content-type"] == "application/pdf"
    assert 'filename="F-1.pdf"' in read.headers["content-disposition"]
    assert client.get("/api/v1/invoices/F-1", headers=auth).json()["has_pdf"] is True
    assert [i["has_pdf"] for i in client.get("/api/v1/invoices", headers=auth).json()["items"]] == [True]

    # The same bytes again: the same answer, nothing stored twice, nothing audited twice.
    again = client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL, headers={**auth, **PDF})
    assert again.status_code == 200 and again.json() == created.json()
    assert len(_stored(tmp_path)) == 1

    replaced = client.put("/api/v1/invoices/F-1/pdf", content=REPLACEMENT, headers={**auth, **PDF})
    assert replaced.status_code == 200 and replaced.json()["sha256"] == hashlib.sha256(REPLACEMENT).hexdigest()
    assert client.get("/api/v1/invoices/F-1/pdf", headers=auth).content == REPLACEMENT
    assert [p.read_bytes() for p in _stored(tmp_path)] == [REPLACEMENT]  # the replaced one is gone

    deleted = client.delete("/api/v1/invoices/F-1/pdf", headers=auth)
    assert deleted.status_code == 200 and deleted.json()["has_pdf"] is False
    assert client.get("/api/v1/invoices/F-1/pdf", headers=auth).status_code == 404
    assert _stored(tmp_path) == []
    assert client.delete("/api/v1/invoices/F-1/pdf", headers=auth).status_code == 200

    actions = session.execute(select(AuditEvent.action, AuditEvent.actor_type, AuditEvent.actor)
                              .where(AuditEvent.action.like("invoice.pdf%")).order_by(AuditEvent.id)).all()
    assert [tuple(a) for a in actions] == [("invoice.pdf_attached", "api", "sage-x3"),
                                           ("invoice.pdf_attached", "api", "sage-x3"),
                                           ("invoice.pdf_removed", "api", "sage-x3")]


def test_idempotency_key_replays_and_refuses_other_bytes(client, auth, invoice):
    headers = {**auth, **PDF, "Idempotency-Key": "pdf-1"}
    first = client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL, headers=headers)
    assert first.status_code == 201
    replay = client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL, headers=headers)
    assert replay.status_code == 201 and replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    other = client.put("/api/v1/invoices/F-1/pdf", content=REPLACEMENT, headers=headers)
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert client.get("/api/v1/invoices/F-1/pdf", headers=auth).content == ORIGINAL


def test_bad_input_is_refused_and_nothing_is_stored(client, auth, invoice, session: Session, tmp_path: Path):
    not_pdf = client.put("/api/v1/invoices/F-1/pdf", content=b"<html>invoice</html>", headers={**auth, **PDF})
    assert not_pdf.status_code == 422 and not_pdf.headers["content-type"] == PROBLEM
    assert not_pdf.json()["errors"][0]["field"] == "body"
    too_big = client.put("/api/v1/invoices/F-1/pdf", content=b"%PDF-1.7\n" + b"0" * 5000, headers={**auth, **PDF})
    assert too_big.status_code == 413 and too_big.headers["content-type"] == PROBLEM
    as_json = client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL,
                         headers={**auth, "Content-Type": "application/json"})
    assert as_json.status_code == 415
    unknown = client.put("/api/v1/invoices/F-404/pdf", content=ORIGINAL, headers={**auth, **PDF})
    assert unknown.status_code == 404

    _, reader = create_key(session, "ACME", "bi", read_only=True)
    create_company(session, code="OTHER", name="Other", currency="EUR")
    _, other = create_key(session, "OTHER", "other-erp")
    session.commit()
    read_only = client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL,
                           headers={"Authorization": f"Bearer {reader}", **PDF})
    assert read_only.status_code == 403
    assert client.delete("/api/v1/invoices/F-1/pdf", headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    elsewhere = {"Authorization": f"Bearer {other}"}
    assert client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL, headers={**elsewhere, **PDF}).status_code == 404
    assert client.get("/api/v1/invoices/F-1/pdf", headers=elsewhere).status_code == 404
    assert client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL, headers=PDF).status_code == 401

    assert _stored(tmp_path) == []
    assert session.scalar(select(Invoice.pdf_key).where(Invoice.number == "F-1")) is None


def test_portal_serves_the_original_then_the_summary_again(client, auth, invoice, session: Session):
    customer = session.scalar(select(Customer).where(Customer.ref == "C001"))
    invoice_id = session.scalar(select(Invoice.id).where(Invoice.number == "F-1"))
    assert customer is not None
    assert client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL, headers={**auth, **PDF}).status_code == 201
    # A debtor's magic-link session: a fresh client (no API key, cookies of its own).
    with TestClient(client.app, base_url="http://testserver") as debtor:
        assert debtor.get(f"/portal/invoices/{invoice_id}/pdf", follow_redirects=False).status_code != 200
        login(debtor, customer)
        served = debtor.get(f"/portal/invoices/{invoice_id}/pdf")
        assert served.status_code == 200 and served.content == ORIGINAL
        assert served.headers["content-type"] == "application/pdf"
        assert 'filename="F-1.pdf"' in served.headers["content-disposition"]
        assert served.headers["cache-control"] == "no-store"
        assert client.delete("/api/v1/invoices/F-1/pdf", headers=auth).status_code == 200
        summary = debtor.get(f"/portal/invoices/{invoice_id}/pdf")
        assert summary.status_code == 200 and summary.content.startswith(b"%PDF-")
        assert summary.content != ORIGINAL


def test_openapi_declares_the_pdf_operations(client):
    spec = client.get("/api/v1/openapi.json").json()
    path = spec["paths"]["/api/v1/invoices/{number}/pdf"]
    assert {m: op["operationId"] for m, op in path.items()} == {
        "put": "putInvoicePdf", "get": "getInvoicePdf", "delete": "deleteInvoicePdf"}
    assert list(path["put"]["requestBody"]["content"]) == ["application/pdf"]
    assert list(path["get"]["responses"]["200"]["content"]) == ["application/pdf"]
    assert "has_pdf" in spec["components"]["schemas"]["InvoiceOut"]["required"]
    assert client.get("/api/v1/docs").status_code == 200


class _MeetingStorage:
    """The real storage, where two requests wait for each other before they store: both have
    passed the Idempotency-Key check by then, and only one can commit."""

    def __init__(self, backend: ObjectStorage, meeting: threading.Barrier) -> None:
        self.backend = backend
        self.meeting = meeting

    def put(self, key: str, content: bytes) -> None:
        self.meeting.wait(timeout=30)
        self.backend.put(key, content)

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)


def test_the_request_that_loses_an_idempotency_race_leaves_no_file_behind(pg_server: PostgresServer,
                                                                          tmp_path: Path) -> None:
    """Two PUTs with one Idempotency-Key, both past its check, both storing their PDF: the one whose
    transaction loses deletes what it stored, so the storage holds exactly the files rows point to.
    PostgreSQL only: SQLite's write transactions (BEGIN IMMEDIATE) run one after the other, where
    the second simply replays the first."""
    url = pg_server.create_database(f"pdf_race_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    engine = make_engine(url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            create_company(session, code="ACME", name="Acme SA", currency="EUR")
            session.flush()
            _, key = create_key(session, "ACME", "sage-x3")
        settings = load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                                  "ENCOURS_BASE_URL": "http://testserver",
                                  "ENCOURS_STORAGE_DIR": str(tmp_path / "files")})
        app = create_app(settings)
        auth = {"Authorization": f"Bearer {key}"}
        with TestClient(app, base_url="http://testserver") as client:
            assert client.put("/api/v1/customers/C001", json=CUSTOMER, headers=auth).status_code == 201
            assert client.put("/api/v1/invoices/F-1", json=invoice_body(), headers=auth).status_code == 201
        app.state.storage = _MeetingStorage(app.state.storage, threading.Barrier(2))
        start = threading.Barrier(2)

        def put(_: int) -> int:
            with TestClient(app, base_url="http://testserver") as client:
                start.wait(timeout=30)
                return client.put("/api/v1/invoices/F-1/pdf", content=ORIGINAL,
                                  headers={**auth, **PDF, "Idempotency-Key": "pdf-F-1"}).status_code

        with ThreadPoolExecutor(max_workers=2) as pool:
            statuses = sorted(pool.map(put, range(2)))
        assert statuses == [201, 409]
        with make_sessionmaker(engine)() as session:
            referenced = set(session.scalars(select(Invoice.pdf_key).where(Invoice.pdf_key.is_not(None))))
        assert len(referenced) == 1
        assert {p.name for p in _stored(tmp_path)} == referenced
        assert [p.read_bytes() for p in _stored(tmp_path)] == [ORIGINAL]
    finally:
        engine.dispose()
