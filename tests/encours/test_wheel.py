"""The production install: the built wheel, in a clean virtual environment, from the lock file.

An operator installs Encours without the source tree and without test tools: `pip install
--require-hashes -r requirements/prod.txt` (what `deploy/Dockerfile` runs) and then the wheel. The
test does exactly that, then runs the installed `encours` from a directory outside the source tree,
against PostgreSQL (the driver must come with the wheel's dependencies), and fetches a page, its
stylesheet and a PDF: templates, static files, catalogs and migrations must all be inside the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from tests.encours.test_operator_journey import SECRET, _free_port, text_of

REPO = Path(__file__).resolve().parents[2]


def _build_inputs() -> list[str]:
    """What a build reads: the packages pyproject.toml lists, its metadata files and the lock; the rest
    of a checkout (venv, caches, databases, tests) stays out of the copy the wheel is built from."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    return ["pyproject.toml", "README.md", "LICENSE", "requirements", *packages]


pytestmark = pytest.mark.postgres


def _clean_env() -> dict[str, str]:
    """The environment without the test run's Python set-up: no PYTHONPATH pointing at the source
    tree, no virtual environment, so pip and the installed code see only the new environment."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_", "PYTHON", "VIRTUAL_ENV"))}


def _run(args: list[str | Path], **kwargs: object) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(map(str, args))}: {result.returncode}\n{result.stdout}{result.stderr}"
    return str(result.stdout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding the wheel and the production lock, and nothing else."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in _build_inputs():
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, source / name)
    # Every step runs from the temporary directory: `python -m` puts the working directory first on
    # sys.path, and a checkout there (with its egg-info) would pass for an installed Encours.
    outside = {"cwd": root, "env": _clean_env()}
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", root / "dist", source],
         **outside)
    wheels = list((root / "dist").glob("encours-*.whl"))
    assert len(wheels) == 1, wheels

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", venv], **outside)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "--upgrade", "pip>=25"], **outside)  # as the README says: Debian's pip 23 misreads the lock
    _run([*pip, "--require-hashes", "-r", REPO / "requirements" / "prod.txt"], **outside)
    _run([*pip, "--no-deps", wheels[0]], **outside)
    return venv


@pytest.fixture
def operator_env(installed: Path, pg_server: object, tmp_path: Path) -> dict[str, str]:
    url = str(pg_server.create_database("wheel_install"))  # type: ignore[attr-defined]
    env = _clean_env()
    env.update(ENCOURS_DATABASE_URL=url, ENCOURS_SECRET_KEY=SECRET, ENCOURS_STORAGE_DIR=str(tmp_path / "files"),
               PATH=f"{installed / 'bin'}:{env.get('PATH', '')}")
    return env


@pytest.fixture
def served(installed: Path, operator_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    port = _free_port()
    operator_env["ENCOURS_BASE_URL"] = f"http://127.0.0.1:{port}"
    encours = installed / "bin" / "encours"

    def run(*args: str) -> str:
        return _run([encours, *args], cwd=tmp_path, env=operator_env, stdin=subprocess.DEVNULL)

    # The code that runs is the installed copy, not the checkout the tests run from.
    where = _run([installed / "bin" / "python", "-c", "import encours, kernel, psycopg; print(encours.__file__)"],
                 cwd=tmp_path, env=operator_env)
    assert where.startswith(str(installed)), where

    today = datetime.now(timezone.utc).date()
    run("db", "upgrade")
    run("company", "create", "WHEEL", "--name", "Roue Libre SARL", "--currency", "EUR")
    (tmp_path / "customers.csv").write_text("company,customer_ref,name,email,language,phone,segment\n"
                                            "WHEEL,C-1,Cycles Martin,compta@cycles.test,fr,,\n", encoding="utf-8")
    run("import", "customers", str(tmp_path / "customers.csv"))
    (tmp_path / "invoices.csv").write_text(
        "company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until\n"
        f"WHEEL,C-1,F-1,{today - timedelta(days=40)},{today - timedelta(days=10)},EUR,1234.56,,\n", encoding="utf-8")
    run("import", "invoices", str(tmp_path / "invoices.csv"))
    link = run("link", "C-1", "--company", "WHEEL").strip()

    server = subprocess.Popen([encours, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                              env=operator_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _attempt in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            try:
                server.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"encours serve exited: {server.stderr.read().decode() if server.stderr else ''}")
        else:
            raise AssertionError("encours serve did not answer /healthz")
        yield f"http://127.0.0.1:{port}", link
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_installed_wheel_serves_pages_styles_catalogs_and_pdfs(served: tuple[str, str]) -> None:
    base, link = served
    with httpx.Client(base_url=base, timeout=60, headers={"Accept-Language": "fr"}) as debtor:
        statement = debtor.get(link, follow_redirects=True)
        assert statement.status_code == 200 and statement.url.path == "/portal"
        shown = text_of(statement.text)
        assert "Cycles Martin" in shown and "F-1" in shown
        assert "Relevé de compte" in shown  # the French catalog came with the wheel
        assert "1 234,56 €" in shown

        stylesheet = debtor.get("/static/css/portal.css")
        assert stylesheet.status_code == 200 and stylesheet.headers["content-type"].startswith("text/css")
        assert debtor.get("/static/vendor/htmx/htmx.min.js").status_code == 200

        invoice_path = next(part.split('"')[0] for part in statement.text.split('href="')
                            if part.startswith("/portal/invoices/"))
        pdf = debtor.get(f"{invoice_path}/pdf")
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF-")

    assert httpx.get(f"{base}/admin/login", timeout=30).status_code == 200
