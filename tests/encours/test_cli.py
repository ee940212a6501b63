"""The real `encours` console script, run as a user would: every failure is one line on stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import click
import pytest
from sqlalchemy.orm import Session

import encours.cli
from kernel.clock import clock
from kernel.db import make_engine, migration_heads
from admin import auth
from admin.staff_accounts import check_password
from ledger.disputes import DEFAULT_REASONS, active_reasons
from ledger.models import AuditEvent, Company, Contact, Customer, User
from links import tokens
from links.tokens import LinkProblem
from tests.databases import sqlite_migrated_copy
from tests.pgserver import PostgresServer

ENCOURS = Path(sys.executable).with_name("encours")
SECRET = "cli-test-secret-0123456789abcdef"
BASE_URL = "http://127.0.0.1:8000"
UNREACHABLE = "postgresql+psycopg://nobody:s3cret@127.0.0.1:1/nowhere"
ERROR = "encours: error: "
LINK = re.compile(r"^http://127\.0\.0\.1:8000/p/(?P<token>[A-Za-z0-9_.\-]+)$")

assert len(SECRET) == 32


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group, info_name="encours")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _command_paths(command, (*prefix, name))


COMMANDS = [(), *_command_paths(encours.cli.cli)]


class Cli:
    """Runs the console script in a scratch directory (so no `.env` is read) against `url`."""

    def __init__(self, cwd: Path, url: str) -> None:
        self.cwd = cwd
        self.url = url

    def __call__(self, *args: str, input: str | None = None, url: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_"))}
        environ.update(
            ENCOURS_DATABASE_URL=url or self.url,
            ENCOURS_SECRET_KEY=SECRET,
            ENCOURS_BASE_URL=BASE_URL,
            PYTHONUNBUFFERED="1",
        )
        environ.update(env or {})
        return self._run(args, environ, input)

    def _run(self, args: tuple[str, ...], env: dict[str, str], input: str | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ENCOURS), *args],
            cwd=self.cwd,
            env=env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )


def one_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single error line, after checking the exit code and that nothing else was said."""
    output = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode == code, output
    assert "Traceback" not in result.stderr + result.stdout, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), output
    return lines[0][len(ERROR):]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


@pytest.fixture
def fresh_url(tmp_path: Path) -> str:
    """A SQLite file nobody ran the migrations on."""
    return f"sqlite:///{tmp_path / 'fresh.sqlite3'}"


@pytest.fixture
def db_file_url(tmp_path: Path, sqlite_migrated_template: Path) -> str:
    """`fresh_url`'s file, migrated (a copy of a file migrated once per session)."""
    return sqlite_migrated_copy(sqlite_migrated_template, tmp_path / "fresh.sqlite3")


@pytest.fixture
def run(tmp_path: Path, db_file_url: str) -> Cli:
    return Cli(tmp_path, db_file_url)


@pytest.fixture
def run_fresh(tmp_path: Path, fresh_url: str) -> Cli:
    return Cli(tmp_path, fresh_url)


@pytest.fixture
def db(db_file_url: str) -> Iterator[Session]:
    engine = make_engine(db_file_url)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def _customer(session: Session, company_code: str, ref: str) -> Customer:
    company = session.query(Company).filter_by(code=company_code).one_or_none()
    if company is None:
        company = Company(code=company_code, name=f"{company_code} SAS", base_currency="EUR")
        session.add(company)
        session.flush()
    customer = Customer(company_id=company.id, ref=ref, name=f"Customer {ref}")
    session.add(customer)
    session.flush()
    session.add(Contact(customer_id=customer.id, email=f"ap-{ref.lower()}@example.com", is_primary=True))
    session.commit()
    return customer


# --- help and usage errors -------------------------------------------------------------------


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "encours")
def test_every_command_has_help(tmp_path: Path, fresh_url: str, path: tuple[str, ...]) -> None:
    out = ok(Cli(tmp_path, fresh_url)(*path, "--help"))
    assert out.startswith(f"Usage: {' '.join(('encours', *path))} "), out
    assert not (tmp_path / "fresh.sqlite3").exists(), "--help must not touch the database"


def test_the_command_list_is_not_empty() -> None:
    paths = {" ".join(path) for path in COMMANDS}
    assert {"db upgrade", "company create", "link", "user create"} <= paths


@pytest.mark.parametrize(
    "args",
    [
        ("--bogus",),
        ("db", "upgrade", "--bogus"),
        ("company", "create", "ACME", "--name", "Acme", "--currency", "EUR", "--frobnicate"),
    ],
    ids=["top-level", "db upgrade", "company create"],
)
def test_unknown_option_is_one_line_exit_2(run_fresh: Cli, args: tuple[str, ...]) -> None:
    assert args[-1] in one_error(run_fresh(*args), 2)


@pytest.mark.parametrize(
    "args",
    [("company", "create"), ("link",), ("user", "create", "--role", "admin"), ("company", "create", "ACME")],
    ids=["company code", "link ref", "user email", "company --name"],
)
def test_missing_argument_is_one_line_exit_2(run_fresh: Cli, args: tuple[str, ...]) -> None:
    assert "Missing" in one_error(run_fresh(*args), 2)


@pytest.mark.parametrize("args", [("frobnicate",), ("db", "downgrade-everything")], ids=["top-level", "in a group"])
def test_unknown_command_is_one_line_exit_2(run_fresh: Cli, args: tuple[str, ...]) -> None:
    assert args[-1] in one_error(run_fresh(*args), 2)


def test_bad_choice_is_one_line_exit_2(run_fresh: Cli) -> None:
    assert "--role" in one_error(run_fresh("user", "create", "a@b.fr", "--role", "emperor"), 2)


# --- database problems -----------------------------------------------------------------------


@pytest.mark.parametrize("args", [("db", "upgrade"), ("link", "X"), ("company", "create", "A", "--name", "A",
                                                                      "--currency", "EUR")])
def test_unreachable_database_is_one_line_exit_1(run_fresh: Cli, args: tuple[str, ...]) -> None:
    message = one_error(run_fresh(*args, url=UNREACHABLE), 1)
    assert message.startswith("cannot use the database "), message
    assert "127.0.0.1" in message
    assert "s3cret" not in message


@pytest.mark.parametrize("args", [("link", "X"), ("company", "create", "A", "--name", "A", "--currency", "EUR"),
                                  ("user", "create", "a@b.fr", "--role", "admin")])
def test_sqlite_database_never_upgraded_says_to_upgrade(run_fresh: Cli, args: tuple[str, ...]) -> None:
    assert "encours db upgrade" in one_error(run_fresh(*args), 1)


@pytest.mark.postgres
def test_postgresql_database_never_upgraded_says_to_upgrade(tmp_path: Path, pg_server: PostgresServer) -> None:
    run = Cli(tmp_path, pg_server.create_database("cli_never_upgraded"))
    assert "encours db upgrade" in one_error(run("link", "X"), 1)
    assert "up to date" in ok(run("db", "upgrade"))
    assert "no customer" in one_error(run("link", "X"), 1)


# --- db upgrade, company create -------------------------------------------------------------------


def test_upgrade_then_create_a_company(run_fresh: Cli, fresh_url: str) -> None:
    assert "up to date" in ok(run_fresh("db", "upgrade"))
    assert "up to date" in ok(run_fresh("db", "upgrade"))  # twice is harmless
    out = ok(run_fresh("company", "create", "ACME", "--name", "Acme SAS", "--currency", "EUR"))
    assert "ACME" in out
    engine = make_engine(fresh_url)
    with Session(engine) as session:
        company = session.query(Company).filter_by(code="ACME").one()
        assert (company.name, company.base_currency, company.country, company.timezone) == (
            "Acme SAS", "EUR", "FR", "Europe/Paris")
        # Its debtors can dispute from day one: the company comes with the default reasons.
        reasons = active_reasons(session, company.id)
        assert [r.code for r in reasons] == [code for code, _fr, _en in DEFAULT_REASONS]
    engine.dispose()


def test_company_create_refuses_bad_input(run: Cli) -> None:
    ok(run("company", "create", "ACME", "--name", "Acme SAS", "--currency", "EUR"))
    assert "already exists" in one_error(run("company", "create", "ACME", "--name", "Other", "--currency", "EUR"))
    assert "XYZ" in one_error(run("company", "create", "B", "--name", "B", "--currency", "XYZ"))
    assert "Mars/Olympus" in one_error(
        run("company", "create", "C", "--name", "C", "--currency", "EUR", "--timezone", "Mars/Olympus"))
    assert "XX" in one_error(run("company", "create", "D", "--name", "D", "--currency", "EUR", "--country", "XX"))


# --- user create ----------------------------------------------------------------------------------


def test_user_create_prints_a_generated_password(run: Cli, db: Session) -> None:
    out = ok(run("user", "create", "a@b.fr", "--role", "admin"))
    match = re.search(r"^password: (\S+)$", out, re.MULTILINE)
    assert match, out
    user = db.query(User).filter_by(email="a@b.fr").one()
    assert user.role == "admin"
    assert check_password(user, match.group(1))
    assert user.must_change_password  # a password someone else saw: changed at first sign-in
    assert "first sign-in" in out


def test_user_create_reads_the_password_from_stdin(run: Cli, db: Session) -> None:
    out = ok(run("user", "create", "c@b.fr", "--role", "admin", "--password-stdin", input="correct horse battery\n"))
    assert "password" not in out.lower().replace("password-stdin", "")
    user = db.query(User).filter_by(email="c@b.fr").one()
    assert check_password(user, "correct horse battery")
    assert not check_password(user, "correct horse battery\n")
    assert not user.must_change_password


def test_user_create_with_a_short_or_missing_stdin_password_fails(run: Cli) -> None:
    assert "password" in one_error(run("user", "create", "c@b.fr", "--role", "admin", "--password-stdin", input="short\n"))
    assert "password" in one_error(run("user", "create", "c@b.fr", "--role", "admin", "--password-stdin"))


def test_collector_needs_a_company(run: Cli, db: Session) -> None:
    assert "--company" in one_error(run("user", "create", "col@b.fr", "--role", "collector"))
    assert "NOPE" in one_error(run("user", "create", "col@b.fr", "--role", "collector", "--company", "NOPE"))
    ok(run("company", "create", "ACME", "--name", "Acme SAS", "--currency", "EUR"))
    ok(run("user", "create", "col@b.fr", "--role", "collector", "--company", "ACME"))
    assert [c.code for c in db.query(User).filter_by(email="col@b.fr").one().companies] == ["ACME"]


def test_duplicate_user_is_one_line(run: Cli) -> None:
    ok(run("user", "create", "a@b.fr", "--role", "admin"))
    assert "already exists" in one_error(run("user", "create", "A@B.fr", "--role", "admin"))


# --- link -------------------------------------------------------------------------------------------


def test_link_prints_a_magic_link_that_verifies(run: Cli, db: Session) -> None:
    clock.reset()  # the subprocess signs with the real time
    customer = _customer(db, "ACME", "C001")
    lines = ok(run("link", "C001")).splitlines()
    assert len(lines) == 1
    match = LINK.match(lines[0])
    assert match, lines
    check = tokens.verify(db, SECRET, match.group("token"))
    assert check.ok, check.problem
    assert check.contact is not None and check.contact.customer_id == customer.id


def test_link_revoke_invalidates_earlier_links(run: Cli, db: Session) -> None:
    clock.reset()
    _customer(db, "ACME", "C001")
    first = LINK.match(ok(run("link", "C001")).strip())
    assert first
    assert "C001" in ok(run("link", "--revoke", "C001"))
    db.rollback()  # a fresh snapshot: the CLI wrote in another process
    assert tokens.verify(db, SECRET, first.group("token")).problem is LinkProblem.revoked
    second = LINK.match(ok(run("link", "C001")).strip())
    assert second
    db.rollback()  # a fresh snapshot: the CLI wrote in another process
    assert tokens.verify(db, SECRET, second.group("token")).ok


def test_link_for_an_unknown_customer_is_one_line(run: Cli, db: Session) -> None:
    _customer(db, "ACME", "C001")
    assert "UNKNOWN" in one_error(run("link", "UNKNOWN"))
    assert "OTHER" in one_error(run("link", "C001", "--company", "OTHER"))


def test_link_for_a_ref_in_two_companies_needs_company(run: Cli, db: Session) -> None:
    clock.reset()
    _customer(db, "ACME", "C001")
    other = _customer(db, "BETA", "C001")
    assert "--company" in one_error(run("link", "C001"))
    match = LINK.match(ok(run("link", "C001", "--company", "BETA")).strip())
    assert match
    check = tokens.verify(db, SECRET, match.group("token"))
    assert check.ok and check.contact is not None and check.contact.customer_id == other.id


# --- start-up checks: one line, before anything starts --------------------------------------------


@pytest.mark.parametrize(
    ("env", "args", "complaint"),
    [
        ({"ENCOURS_DATABASE_URL": "postgres://encours:pw@db.internal/encours"}, ("db", "upgrade"),
         "write postgresql+psycopg://"),
        ({"ENCOURS_DATABASE_URL": "postgres://encours:pw@db.internal/encours"}, ("worker", "--once"),
         "write postgresql+psycopg://"),
        ({"ENCOURS_DATABASE_URL": "no database here"}, ("company", "create", "A", "--name", "A", "--currency", "EUR"),
         "ENCOURS_DATABASE_URL is not a database URL"),
        ({"ENCOURS_DATABASE_URL": "postgresql+psycopg://u:pw@db:five/x"}, ("serve",),
         "ENCOURS_DATABASE_URL is not a database URL"),
        ({"ENCOURS_LINK_THROTTLE_MAX": "ten"}, ("serve",), "ENCOURS_LINK_THROTTLE_MAX must be a whole number"),
        ({"ENCOURS_OUTBOX_LEASE": "10m"}, ("worker", "--once"), "ENCOURS_OUTBOX_LEASE must be a whole number"),
        ({"ENCOURS_SMTP_URL": "mail.example.com:25"}, ("worker",), "ENCOURS_SMTP_URL must start with smtp://"),
        ({"ENCOURS_SMTP_URL": "smtp://mail.example.com:25?tls=1"}, ("serve",), "unknown option(s): tls"),
        ({"STRIPE_SECRET_KEY": "sk_test_abc", "STRIPE_PUBLISHABLE_KEY": "pk_live_abc",
          "STRIPE_WEBHOOK_SECRET": "whsec_abc"}, ("serve",), "STRIPE_SECRET_KEY is a test key but"),
        ({"STRIPE_SECRET_KEY": "sk_live_abc", "STRIPE_PUBLISHABLE_KEY": "pk_test_abc",
          "STRIPE_WEBHOOK_SECRET": "whsec_abc"}, ("worker", "--once"), "a live key but STRIPE_PUBLISHABLE_KEY a test"),
    ],
    ids=["postgres:// upgrade", "postgres:// worker", "not a url", "bad port", "throttle not a number",
         "lease not a number", "smtp scheme", "smtp option", "stripe test/live", "stripe live/test"],
)
def test_a_bad_setting_stops_the_command_before_it_starts(
    run: Cli, env: dict[str, str], args: tuple[str, ...], complaint: str
) -> None:
    message = one_error(run(*args, env=env), 1)
    assert complaint in message, message
    assert "pw@" not in message  # a password in the URL is never printed


def test_a_postgres_url_is_answered_with_the_url_to_write(run: Cli) -> None:
    message = one_error(run("db", "upgrade", env={"ENCOURS_DATABASE_URL": "postgresql://enc:pw@db:5432/enc"}))
    assert message.endswith("postgresql+psycopg://enc:***@db:5432/enc"), message


# --- db current, db downgrade, two upgrades at once ---------------------------------------------------


def test_db_current_follows_upgrade_and_downgrade(run_fresh: Cli) -> None:
    (head,) = migration_heads()
    assert "not migrated" in ok(run_fresh("db", "current"))
    ok(run_fresh("db", "upgrade"))
    assert ok(run_fresh("db", "current")).strip() == f"database: {head} (head)"
    assert "downgraded to -1" in ok(run_fresh("db", "downgrade", "-1"))
    out = ok(run_fresh("db", "current"))
    assert head not in out.split("(")[0] and "run 'encours db upgrade'" in out, out
    ok(run_fresh("db", "upgrade"))
    assert ok(run_fresh("db", "current")).strip() == f"database: {head} (head)"


def test_db_downgrade_to_an_unknown_revision_is_one_line(run: Cli) -> None:
    assert "cannot downgrade to 'nope'" in one_error(run("db", "downgrade", "nope"))


def _upgrade_twice_at_once(cwd: Path, url: str) -> list[subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCOURS_", "STRIPE_", "GOCARDLESS_"))}
    env.update(ENCOURS_DATABASE_URL=url, ENCOURS_SECRET_KEY=SECRET)
    processes = [subprocess.Popen([str(ENCOURS), "db", "upgrade"], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def test_two_upgrades_at_once_on_sqlite_both_succeed(tmp_path: Path, fresh_url: str) -> None:
    for result in _upgrade_twice_at_once(tmp_path, fresh_url):
        assert "up to date" in ok(result)
    assert "(head)" in ok(Cli(tmp_path, fresh_url)("db", "current"))


@pytest.mark.postgres
def test_two_upgrades_at_once_on_postgresql_both_succeed(tmp_path: Path, pg_server: PostgresServer) -> None:
    url = pg_server.create_database("cli_two_upgrades")
    for result in _upgrade_twice_at_once(tmp_path, url):
        assert "up to date" in ok(result)
    assert "(head)" in ok(Cli(tmp_path, url)("db", "current"))


# --- user reset-password, disable, enable ---------------------------------------------------------------


def test_reset_password_prints_a_new_one_and_ends_the_user_s_sessions(run: Cli, db: Session) -> None:
    ok(run("user", "create", "a@b.fr", "--role", "admin", "--password-stdin", input="the old password\n"))
    user = db.query(User).filter_by(email="a@b.fr").one()
    signed_in = auth.session_data(user)
    out = ok(run("user", "reset-password", "A@b.fr"))
    match = re.search(r"^password: (\S+)$", out, re.MULTILINE)
    assert match, out
    db.rollback()  # a fresh snapshot: the CLI wrote in another process
    user = db.query(User).filter_by(email="a@b.fr").one()
    assert check_password(user, match.group(1)) and not check_password(user, "the old password")
    assert user.must_change_password
    assert auth.current_user(db, signed_in) is None
    assert db.query(AuditEvent).filter_by(action="user.password_reset", entity_id=user.id, actor="cli").count() == 1


def test_reset_password_reads_it_from_stdin(run: Cli, db: Session) -> None:
    ok(run("user", "create", "a@b.fr", "--role", "admin"))
    out = ok(run("user", "reset-password", "a@b.fr", "--password-stdin", input="a chosen password\n"))
    assert "password:" not in out
    assert check_password(db.query(User).filter_by(email="a@b.fr").one(), "a chosen password")
    assert "at least 10" in one_error(run("user", "reset-password", "a@b.fr", "--password-stdin", input="short\n"))
    assert "no staff user 'nobody@b.fr'" in one_error(run("user", "reset-password", "nobody@b.fr"))


def test_disable_ends_the_sessions_and_enable_lets_the_user_back(run: Cli, db: Session) -> None:
    ok(run("user", "create", "boss@b.fr", "--role", "admin"))
    ok(run("user", "create", "a@b.fr", "--role", "admin", "--password-stdin", input="a good password\n"))
    user = db.query(User).filter_by(email="a@b.fr").one()
    signed_in = auth.session_data(user)
    assert "user a@b.fr disabled; its sessions have ended" in ok(run("user", "disable", "a@b.fr"))
    assert "already" in ok(run("user", "disable", "a@b.fr"))
    db.rollback()  # a fresh snapshot: the CLI wrote in another process
    assert auth.current_user(db, signed_in) is None
    assert not auth.authenticate(db, "a@b.fr", "a good password", "203.0.113.9").ok
    db.rollback()  # the failed attempt's writes would hold SQLite's write lock
    assert "user a@b.fr enabled" in ok(run("user", "enable", "a@b.fr"))
    db.rollback()  # a fresh snapshot: the CLI wrote in another process
    assert auth.current_user(db, signed_in) is not None
    actions = [e.action for e in db.query(AuditEvent).filter_by(entity_type="user", entity_id=user.id, actor="cli")]
    assert actions.count("user.deactivated") == 1 and actions.count("user.activated") == 1
    assert "boss@b.fr disabled" in ok(run("user", "disable", "boss@b.fr"))
    assert "At least one active administrator" in one_error(run("user", "disable", "a@b.fr"))  # the last one
    assert "no staff user" in one_error(run("user", "enable", "ghost@b.fr"))
