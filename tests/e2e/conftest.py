"""Browser tests against the real demo, served in-process.

Per pytest session (so per xdist worker): the real `encours demo --no-serve` command
creates a SQLite demo in a temporary folder and prints its debtor links; the app is then
served from this process by uvicorn in a daemon thread, on a socket bound before the demo
was created (no port race), so tests can move `kernel.clock.clock` under the server.

Browsers come from pytest-playwright (Debian's chromium, see `browser_type_launch_args`);
every test gets its own browser context, so no cookie survives from one test to the next.
"""

from __future__ import annotations

from contextlib import contextmanager

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn
from playwright.sync_api import BrowserContext, Page
from sqlalchemy import Engine, select

from encours.app import create_app
from kernel.clock import clock
from kernel.db import make_engine
from kernel.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
# The console script next to the interpreter running the tests (.venv/bin/encours), else the repo's venv.
ENCOURS = next((path for path in (Path(sys.executable).with_name("encours"), REPO / ".venv" / "bin" / "encours")
                if path.exists()), REPO / ".venv" / "bin" / "encours")
CHROMIUM = "/usr/bin/chromium"

# `  French customer, EUR (DURAND / C-MARTIN):` then `    http://127.0.0.1:PORT/p/<token>`
DEBTOR_LINE = re.compile(
    r"^\s+(?P<label>.+) \((?P<company>[^ /]+) / (?P<ref>[^)]+)\):\s*\n\s+(?P<link>http\S+/p/\S+)\s*$", re.MULTILINE
)


@dataclass
class LiveDemo:
    """The demo served for this worker. `links` maps customer refs to their current link."""

    base_url: str
    directory: Path
    database_url: str
    secret: str
    created_at: datetime
    engine: Engine
    links: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # CLI label -> customer ref

    def link(self, key: str) -> str:
        """The current link of a customer, by ref (`C-MARTIN`) or by the demo's label (`UK customer, GBP`)."""
        return self.links[self.labels.get(key, key)]

    def env(self) -> dict[str, str]:
        """The environment of an `encours` command run against this demo."""
        return {**_clean_environ(), "ENCOURS_DATABASE_URL": self.database_url,
                "ENCOURS_SECRET_KEY": self.secret, "ENCOURS_BASE_URL": self.base_url}

    def cli(self, *args: str, input: str | None = None) -> str:
        """Run the real `encours` command on the demo; returns its stdout."""
        done = subprocess.run([str(ENCOURS), *args], cwd=self.directory, env=self.env(), capture_output=True,
                              text=True, timeout=60, input=input)
        assert done.returncode == 0, f"encours {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
        return done.stdout

    def staff(self, email: str, role: str, *companies: str) -> str:
        """A staff account made with the real CLI, its password chosen by its owner on the command
        line (a generated one is one-time: tests/e2e/test_first_sign_in_browser.py); returns it."""
        password = f"chosen {email} password"
        args = [arg for code in companies for arg in ("--company", code)]
        self.cli("user", "create", email, "--role", role, *args, "--password-stdin", input=password + "\n")
        return password

    def invoices(self) -> list[tuple[int, str, str]]:
        """(id, number, customer ref) of every invoice and credit note in the demo database."""
        from ledger.models import Customer, Invoice

        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Invoice.id, Invoice.number, Customer.ref).join(Customer, Customer.id == Invoice.customer_id)
                .order_by(Invoice.id)
            ).all()
        return [(row[0], row[1], row[2]) for row in rows]


def _clean_environ() -> dict[str, str]:
    """The process environment without any Encours/provider setting that could leak into the demo
    (the demo command would, for instance, prefer an inherited ENCOURS_SECRET_KEY to its own)."""
    prefixes = ("ENCOURS_", "STRIPE_", "GOCARDLESS_")
    return {name: value for name, value in os.environ.items() if not name.startswith(prefixes)}


def _parse_links(stdout: str) -> tuple[dict[str, str], dict[str, str]]:
    links: dict[str, str] = {}
    labels: dict[str, str] = {}
    for match in DEBTOR_LINE.finditer(stdout):
        links[match["ref"]] = match["link"]
        labels[match["label"]] = match["ref"]
    assert len(links) == 3, f"expected three debtor links in the demo's output:\n{stdout}"
    return links, labels


def _wait_until_healthy(base_url: str, thread: threading.Thread, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the live server thread died while starting")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last = error
        time.sleep(0.05)
    raise RuntimeError(f"the live server did not answer /healthz within {timeout}s: {last}")


def _run_demo(port: int, directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """`encours demo --no-serve`, as a user runs it; the debtor links it printed."""
    done = subprocess.run(
        [str(ENCOURS), "demo", "--no-serve", "--port", str(port), "--dir", str(directory)],
        cwd=directory, env=_clean_environ(), capture_output=True, text=True, timeout=120,
    )
    if done.returncode != 0:
        pytest.fail(f"encours demo failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)
    links, labels = _parse_links(done.stdout)
    assert all(link.startswith(f"http://127.0.0.1:{port}/p/") for link in links.values()), done.stdout
    return links, labels


@contextmanager
def serve_demo(directory: Path, extra_settings: dict[str, str] | None = None,
               uvicorn_options: dict[str, Any] | None = None) -> Iterator[LiveDemo]:
    """Create a demo with the real `encours demo --no-serve` in `directory` and serve it from a
    thread of this process (so tests can move the clock), until the block ends."""
    # Bound now and handed to uvicorn later: the port the demo's links name stays ours.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    engine: Engine | None = None
    try:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        base_url = f"http://127.0.0.1:{port}"
        created_at = datetime.now(timezone.utc).replace(microsecond=0)
        links, labels = _run_demo(port, directory)

        database_url = f"sqlite:///{(directory / 'demo.sqlite3').resolve()}"
        secret = (directory / "demo-secret").read_text().strip()
        settings = load_settings({
            "ENCOURS_DATABASE_URL": database_url,
            "ENCOURS_SECRET_KEY": secret,
            "ENCOURS_BASE_URL": base_url,
            "ENCOURS_STORAGE_DIR": str(directory / "storage"),
            # Several tests open bad links on purpose, all from 127.0.0.1 at one frozen instant:
            # keep the per-IP throttle (which has its own tests) out of their way.
            "ENCOURS_LINK_THROTTLE_MAX": "100000",
            **(extra_settings or {}),
        })
        options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **(uvicorn_options or {})}
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, **options))
        listener.listen(128)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]},
                                  name=f"live-server-{directory.name}", daemon=True)
        thread.start()
        _wait_until_healthy(base_url, thread)
        engine = make_engine(database_url)
        yield LiveDemo(base_url=base_url, directory=directory, database_url=database_url, secret=secret,
                       created_at=created_at, engine=engine, links=links, labels=labels)
    finally:
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        listener.close()
        if engine is not None:
            engine.dispose()


@pytest.fixture(scope="session")
def live_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    with serve_demo(tmp_path_factory.mktemp("demo")) as demo:
        yield demo


@pytest.fixture(autouse=True)
def frozen_clock(live_demo: LiveDemo) -> Iterator[None]:
    """Overrides tests/conftest.py's: freeze at the moment the demo was created, whose dates are
    relative to that day (the demo runs in a subprocess on the real clock), so due dates, days
    overdue and discounts read the same whenever the suite runs. Tokens are signed a moment
    later, which is fine: a token from the "future" is not expired."""
    clock.set(live_demo.created_at)
    yield
    clock.reset()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
    }


@pytest.fixture(scope="session")
def base_url(live_demo: LiveDemo) -> str:
    """pytest-playwright gives every browser context this base URL: relative URLs go to the live demo."""
    return live_demo.base_url


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "accept_downloads": True}


DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


@pytest.fixture
def make_page(new_context: Any) -> Any:
    """A page in a fresh browser context (its own cookies): a French browser on a desktop by default.
    pytest-playwright closes the contexts after the test."""

    def _make_page(*, viewport: dict[str, int] | None = None, locale: str = "fr-FR") -> Page:
        context = new_context(viewport=viewport or DESKTOP, locale=locale)
        return context.new_page()

    return _make_page


@pytest.fixture
def context(new_context: Any) -> BrowserContext:
    """pytest-playwright's `page` comes from this context: French, desktop-sized."""
    return new_context(viewport=DESKTOP, locale="fr-FR")
