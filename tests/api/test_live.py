"""The API on a live server: the README's example as written, and schemathesis against the
OpenAPI document (every operation, a bounded number of examples, a fixed seed)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from encours.app import create_app
from kernel.db import make_engine, make_sessionmaker, unit_of_work, upgrade
from kernel.settings import load_settings
from ledger.api_keys import create_key
from ledger.companies import create_company
from tests.conftest import TEST_SECRET

README = Path(__file__).resolve().parents[2] / "README.md"
KEYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('live') / 'api.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    with unit_of_work(make_sessionmaker(engine)) as session:
        create_company(session, code="ACME", name="Acme SA", currency="EUR")
        _, KEYS["ACME"] = create_key(session, "ACME", "erp")
    engine.dispose()
    settings = load_settings({"ENCOURS_DATABASE_URL": url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                              "ENCOURS_BASE_URL": "http://127.0.0.1", "ENCOURS_API_RATE_PER_MINUTE": "100000"})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_readme_example_runs_against_a_live_server(live: str) -> None:
    text = README.read_text()
    example = re.search(r"<!-- api-example[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert example, "the README's ERP API example is gone"
    assert len(example.group(1).strip().splitlines()) <= 10
    env = {**os.environ, "ENCOURS_URL": live, "ENCOURS_API_KEY": KEYS["ACME"]}
    done = subprocess.run([sys.executable, "-c", example.group(1)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    import httpx

    invoice = httpx.get(f"{live}/api/v1/invoices/F-2026-001",
                        headers={"Authorization": f"Bearer {KEYS['ACME']}"}).json()
    assert (invoice["customer_ref"], invoice["amount"], invoice["open_amount"]) == ("C001", "1200.00", "1200.00")


def test_every_operation_conforms_to_the_document(live: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live}/api/v1/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=10, derandomize=True, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
        def conforms(case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {KEYS['ACME']}"}, checks=checks)

        conforms()
