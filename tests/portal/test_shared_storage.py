"""Several web machines: a file uploaded through one is downloaded through another, when they
share only the database and an S3 bucket (ENCOURS_STORAGE=s3)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.settings import Settings, load_settings
from ledger.models import Attachment, Dispute
from tests import factories
from tests.conftest import TEST_SECRET
from tests.fakes.s3 import S3Server, s3_server
from tests.portal.conftest import csrf_from, login

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n" + b"%" * 200_000


def _settings(db_url: str, machine_dir: Path, storage: dict[str, str]) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": db_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver",
                          # each machine its own local disk: what they share must be the bucket
                          "ENCOURS_STORAGE_DIR": str(machine_dir)} | storage)


def _upload_then_download(db_url: str, tmp_path: Path, session: Session, session_factory: sessionmaker[Session],
                          storage: dict[str, str]) -> tuple[int, bytes]:
    company = factories.company(session)
    customer = factories.customer(session, company)
    invoice = factories.invoice(session, customer, total_minor=100_00, number="F-1", due_date=date(2026, 11, 1))
    session.commit()
    first = create_app(_settings(db_url, tmp_path / "machine-1", storage), sessions=session_factory)
    second = create_app(_settings(db_url, tmp_path / "machine-2", storage), sessions=session_factory)
    with TestClient(first) as uploader:
        login(uploader, customer)
        token = csrf_from(uploader.get("/portal/requests/new").text)
        response = uploader.post("/portal/requests/new", data={
            "csrf_token": token, "kind": "dispute", "reason": "quality", "message": "Livraison abîmée",
            "invoice": [str(invoice.id)]}, files=[("files", ("bon.pdf", PDF, "application/pdf"))],
            follow_redirects=False)
        assert response.status_code == 303, response.text
    case = session.scalars(select(Dispute)).one()
    attachment = session.scalars(select(Attachment)).one()
    with TestClient(second) as reader:
        login(reader, customer)
        download = reader.get(f"/portal/requests/{case.id}/files/{attachment.id}")
    return download.status_code, download.content


def test_an_attachment_uploaded_on_one_machine_downloads_on_another(
    db_url: str, tmp_path: Path, session: Session, session_factory: sessionmaker[Session], s3_server: S3Server,
) -> None:
    bucket = s3_server.create_bucket()
    status, content = _upload_then_download(db_url, tmp_path, session, session_factory, s3_server.settings(bucket))
    assert status == 200 and content == PDF
    # The bytes are in the bucket, not on either machine's disk.
    assert [item["Size"] for item in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]] == [len(PDF)]
    assert not (tmp_path / "machine-1").exists() and not (tmp_path / "machine-2").exists()


def test_with_local_storage_the_second_machine_does_not_have_the_file(
    db_url: str, tmp_path: Path, session: Session, session_factory: sessionmaker[Session],
) -> None:
    status, _ = _upload_then_download(db_url, tmp_path, session, session_factory, {})
    assert status == 404  # why ENCOURS_STORAGE=s3 exists
