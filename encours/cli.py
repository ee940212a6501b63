"""The `encours` command line. Errors print one line on stderr and exit non-zero."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from kernel.settings import SettingsError, database_url_from_env, load_settings


class CommandError(click.ClickException):
    """A failure the user can act on; its message is the whole output."""


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"encours: error: {message}", err=True)
    sys.exit(code)


def _database_url() -> str:
    return database_url_from_env()


def _engine() -> Any:
    from kernel.db import check_connection, make_engine

    url = _database_url()
    engine = make_engine(url)
    check_connection(engine)
    return engine


def _sessions() -> Any:
    from kernel.db import make_sessionmaker

    return make_sessionmaker(_engine())


def _settings() -> Any:
    from payments import stripe as stripe_provider

    try:
        settings = load_settings()
        stripe_provider.check_settings(settings)  # the same start-up check the app makes, as one line
    except SettingsError as error:
        raise CommandError(str(error)) from None
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Encours: self-service payment portal for accounts-receivable collection."""


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to ENCOURS_DATABASE_URL."""
    from kernel.db import upgrade

    _engine().dispose()
    upgrade(_database_url())
    click.echo("database is up to date")


@cli.group()
def company() -> None:
    """Creditor entities."""


@company.command("create")
@click.argument("code")
@click.option("--name", required=True, help="Legal name shown to debtors.")
@click.option("--currency", required=True, help="Base currency (ISO 4217), e.g. EUR.")
@click.option("--country", default="FR", show_default=True, help="ISO 3166 country code.")
@click.option("--timezone", "tz", default="Europe/Paris", show_default=True, help="IANA timezone.")
def company_create(code: str, name: str, currency: str, country: str, tz: str) -> None:
    """Create a creditor entity CODE."""
    from kernel.db import unit_of_work
    from ledger.companies import CompanyError, create_company

    with unit_of_work(_sessions()) as session:
        try:
            created = create_company(session, code=code, name=name, currency=currency, country=country, timezone=tz)
        except CompanyError as error:
            raise CommandError(str(error)) from None
    click.echo(f"company {created.code} created ({created.name}, {created.base_currency})")


@company.group("account")
def company_account() -> None:
    """A company's bank accounts (statements are booked to the company by their IBAN)."""


@company_account.command("add")
@click.argument("code")
@click.option("--iban", required=True, help="The account's IBAN (spaces allowed).")
@click.option("--bic", help="The bank's BIC.")
@click.option("--currency", help="The account's currency (ISO 4217); default: the company's.")
@click.option("--label", help="A name for staff, e.g. 'BNP main account'.")
def company_account_add(code: str, iban: str, bic: str | None, currency: str | None, label: str | None) -> None:
    """Register a bank account of company CODE."""
    from kernel.db import unit_of_work
    from reconciliation.accounts import add_account
    from reconciliation.errors import ReconciliationError

    try:
        with unit_of_work(_sessions()) as session:
            account = add_account(session, code, iban=iban, bic=bic, currency=currency, label=label)
            line = f"account {account.iban} ({account.currency}) added to {code}"
    except ReconciliationError as error:
        raise CommandError(str(error)) from None
    click.echo(line)


@company_account.command("list")
@click.argument("code")
def company_account_list(code: str) -> None:
    """List the bank accounts of company CODE."""
    from kernel.db import unit_of_work
    from reconciliation.accounts import list_accounts
    from reconciliation.errors import ReconciliationError

    try:
        with unit_of_work(_sessions()) as session:
            lines = [f"{a.iban}\t{a.bic or '-'}\t{a.currency}\t{'active' if a.active else 'inactive'}\t{a.label or ''}"
                     for a in list_accounts(session, code)]
    except ReconciliationError as error:
        raise CommandError(str(error)) from None
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo(f"{code} has no bank account")


@cli.command("link")
@click.argument("customer_ref")
@click.option("--company", "company_code", help="Company code, when the ref exists in several.")
@click.option("--revoke", is_flag=True, help="Revoke every link the customer's contacts were sent.")
def link(customer_ref: str, company_code: str | None, revoke: bool) -> None:
    """Print a fresh magic link for CUSTOMER_REF's primary contact, or revoke all its links."""
    from kernel.db import unit_of_work
    from links import tokens

    settings = _settings()
    with unit_of_work(_sessions()) as session:
        try:
            customer = tokens.find_customer(session, customer_ref, company_code)
            if revoke:
                count = tokens.revoke_all(session, customer)
                click.echo(f"revoked every link of {customer.ref} ({count} contact(s))")
                return
            click.echo(tokens.fresh_link(session, settings.secret_key._value, settings.base_url, customer))
        except tokens.UnknownCustomer as error:
            raise CommandError(str(error)) from None


@cli.group("import")
def import_group() -> None:
    """ERP imports (CSV, all-or-nothing)."""


def _run_import(kind: str, path: Path) -> None:
    from kernel.db import unit_of_work
    from ledger.csv_import import ImportFailed, import_csv

    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None
    try:
        with unit_of_work(_sessions()) as session:
            report = import_csv(session, kind, raw)
    except ImportFailed as failed:
        click.echo(f"encours: error: {path.name}: nothing imported, {len(failed.errors)} bad line(s):", err=True)
        for error in failed.errors:
            click.echo(f"  {error}", err=True)
        sys.exit(1)
    click.echo(f"{path.name}: {report.summary()}")


@import_group.command("customers")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def import_customers(file: Path) -> None:
    """Import customers: company,customer_ref,name,email,language,phone,segment."""
    _run_import("customers", file)


@import_group.command("bank")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--company", "company_code", help="Book the file to this company when its account is not registered.")
def import_bank(file: Path, company_code: str | None) -> None:
    """Load a bank statement (camt.053/054, MT940, CSV) and match its credits; one line per statement."""
    from kernel.db import unit_of_work
    from reconciliation.errors import ReconciliationError
    from reconciliation.imports import import_statement_file

    settings = _settings()  # receipts emailed for matched transfers carry links
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {file}: {error.strerror}") from None
    try:
        with unit_of_work(_sessions()) as session:
            report = import_statement_file(session, raw, file.name, company_code=company_code, settings=settings)
    except ReconciliationError as error:
        raise CommandError(str(error)) from None
    for summary in report.statements:
        click.echo(summary.line())
        for warning in summary.warnings[:20]:
            click.echo(f"  warning: {warning}")
        if len(summary.warnings) > 20:
            click.echo(f"  ... and {len(summary.warnings) - 20} more warning(s)")


@import_group.command("invoices")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def import_invoices(file: Path) -> None:
    """Import invoices and credit notes:
    company,customer_ref,number,issue_date,due_date,currency,amount,discount_percent,discount_until[,type]."""
    _run_import("invoices", file)


@cli.group("user")
def user_group() -> None:
    """Staff accounts."""


@user_group.command("create")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(["admin", "manager", "collector", "viewer"]))
@click.option("--company", "companies", multiple=True, help="Company code this user may see (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def user_create(email: str, role: str, companies: tuple[str, ...], password_stdin: bool) -> None:
    """Create a staff account; prints a generated password unless one is read from stdin."""
    from kernel.db import unit_of_work
    from admin.staff_accounts import UserError, create_user, generate_password

    password = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
    with unit_of_work(_sessions()) as session:
        try:
            create_user(session, email=email, role=role, password=password, company_codes=list(companies))
        except UserError as error:
            raise CommandError(str(error)) from None
    click.echo(f"user {email} created with role {role}")
    if not password_stdin:
        click.echo(f"password: {password}")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def serve(host: str, port: int, workers: int) -> None:
    """Serve the portal, the back-office and the webhooks."""
    import uvicorn

    _settings()
    _engine().dispose()
    uvicorn.run("encours.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                proxy_headers=True)


@cli.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--dir", "directory", default="var", show_default=True, type=click.Path(path_type=Path, file_okay=False),
              help="Where the demo database and its secret live.")
@click.option("--no-serve", is_flag=True, help="Create the demo and print its logins, without serving.")
@click.option("--no-sandbox", is_flag=True,
              help="Do not run the payment providers' local stand-ins (they run only when no provider keys are set).")
def demo(host: str, port: int, directory: Path, no_serve: bool, no_sandbox: bool) -> None:
    """Create (or refresh) the SQLite demo, print the staff login and debtor links, and serve it.

    Without provider keys in the environment, the providers' local stand-ins run beside it
    (sandbox), so every payment method can be tried end to end on this machine."""
    from encours import demo as demo_data
    from kernel.db import make_engine, make_sessionmaker, unit_of_work, upgrade

    directory.mkdir(parents=True, exist_ok=True)
    database = (directory / "demo.sqlite3").resolve()
    for stale in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        stale.unlink(missing_ok=True)
    secret_file = directory / "demo-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    url = f"sqlite:///{database}"
    os.environ["ENCOURS_DATABASE_URL"] = url
    os.environ.setdefault("ENCOURS_SECRET_KEY", secret_file.read_text().strip())
    os.environ["ENCOURS_BASE_URL"] = base_url
    settings = _settings()
    upgrade(url)
    engine = make_engine(url)
    with unit_of_work(make_sessionmaker(engine)) as session:
        info = demo_data.seed(session, secret=str(settings.secret_key), base_url=base_url,
                              staff_password=secrets.token_urlsafe(12))
    engine.dispose()
    click.echo(f"Encours demo database: {database}")
    click.echo("")
    click.echo(f"Staff login:  {base_url}/admin/login")
    click.echo(f"       email: {info.staff_email}")
    click.echo(f"    password: {info.staff_password}")
    click.echo("")
    click.echo("Debtor links (each opens that customer's portal):")
    for debtor in info.debtors:
        click.echo(f"  {debtor.label} ({debtor.company_code} / {debtor.customer_ref}):")
        click.echo(f"    {debtor.link}")
    click.echo("")
    if no_serve:
        return
    import uvicorn

    from encours import sandbox as providers_sandbox
    from encours.app import create_app

    stand_ins = None
    if not no_sandbox and not any(os.environ.get(name) for name in providers_sandbox.PROVIDER_SETTINGS):
        stand_ins = providers_sandbox.start(base_url)
        os.environ.update(stand_ins.settings)
        settings = _settings()
        click.echo("Sandbox payments (local stand-ins, nothing real is charged):")
        for note in stand_ins.notes:
            click.echo(f"  {note}")
        click.echo("")
    click.echo(f"Serving on {base_url}  (Ctrl+C to stop)")
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    finally:
        if stand_ins is not None:
            stand_ins.stop()


@cli.command("worker")
@click.option("--once", is_flag=True, help="Do what is due now, print a summary and exit.")
@click.option("--interval", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds between runs, when not --once.")
def worker(once: bool, interval: float) -> None:
    """Background work: the daily reminder plan of each company at its local reminder hour, webhook
    events to retry, direct debits to collect on active GoCardless mandates, and delivering the
    email outbox over ENCOURS_SMTP_URL, with retries.
    Runs until SIGTERM or Ctrl+C; --once does what is due now and exits."""
    from mail.outbox import SMTPConfigError
    from encours import worker as background

    def echo(report: Any) -> None:
        if once or report.busy:
            for line in report.lines():
                click.echo(line)

    settings = _settings()
    sessions = _sessions()
    try:
        if once:
            echo(background.run_once(settings, sessions))
            return
        click.echo(f"encours worker: running every {interval:g} s (Ctrl+C or SIGTERM to stop)")
        background.run_forever(settings, sessions, interval=interval, on_report=echo)
    except SMTPConfigError as error:
        raise CommandError(str(error)) from None


@cli.command("remind")
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Plan as of this date (YYYY-MM-DD); default: each company's local today.")
@click.option("--company", "company_code", help="Only this company (its code).")
@click.option("--dry-run", is_flag=True, help="Print what would go, to whom and why; queue nothing.")
def remind(day: Any, company_code: str | None, dry_run: bool) -> None:
    """Plan today's reminders and queue one message per customer in the outbox."""
    from dunning.planner import UnknownCompany, run

    settings = _settings()
    try:
        reports = run(_sessions(), settings, day.date() if day else None, company_code, dry_run=dry_run)
    except UnknownCompany as error:
        raise CommandError(str(error)) from None
    if not reports:
        click.echo("no company: nothing to plan")
    for report in reports:
        click.echo(report.summary())
        if dry_run:
            for message in report.messages:
                click.echo(f"  would send {message.describe()}")
        for skipped in report.skipped:
            click.echo(f"  skipped {skipped.customer_ref}: {skipped.reason}")
        for problem in report.problems:
            click.echo(f"  problem: {problem}")


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="encours", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:
        click.echo(error.ctx.get_help() if error.ctx else str(error))
        sys.exit(2)
    except click.UsageError as error:
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        _fail(f"{error.format_message()}{hint}", 2)
    except click.ClickException as error:
        _fail(error.format_message(), error.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 1)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except OperationalError as error:
        if "no such table" in str(error.orig) or "no such column" in str(error.orig):  # SQLite's missing schema
            _fail(f"database at {_safe_url()} is not ready ({_first_line(error.orig)}); run 'encours db upgrade'")
        _fail(f"cannot use the database at {_safe_url()}: {_first_line(error.orig)}")
    except ProgrammingError as error:
        _fail(f"database at {_safe_url()} is not ready ({_first_line(error.orig)}); run 'encours db upgrade'")
    except DBAPIError as error:
        _fail(f"database error: {_first_line(error.orig)}")
    except SettingsError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        sys.exit(130)


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _safe_url() -> str:
    from sqlalchemy import make_url

    try:
        return make_url(_database_url()).render_as_string(hide_password=True)
    except Exception:
        return "ENCOURS_DATABASE_URL"


if __name__ == "__main__":
    main()
