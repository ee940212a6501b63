"""The `encours` command line. Errors print one line on stderr and exit non-zero."""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from kernel.logs import configure_logging
from kernel.settings import (
    SettingsError,
    clock_file_from_env,
    database_url_from_env,
    load_settings,
    webhook_allow_private_from_env,
)


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
    from payments import registry as payment_providers

    try:
        settings = load_settings()
        payment_providers.check_settings(settings)  # the same start-up check the app makes, as one line
    except SettingsError as error:
        raise CommandError(str(error)) from None
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Encours: self-service payment portal for accounts-receivable collection."""
    _follow_clock()


def _follow_clock() -> None:
    """ENCOURS_CLOCK_FILE (tests that start processes): "now" comes from that file."""
    from kernel.clock import clock

    path = clock_file_from_env()
    if path is not None:
        try:
            clock.follow(path)
        except ValueError as error:
            raise CommandError(str(error)) from None
        click.echo(f"encours: warning: the clock follows ENCOURS_CLOCK_FILE ({path}), as in tests only", err=True)


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to ENCOURS_DATABASE_URL. A second run started meanwhile
    waits for this one, then finds nothing to do."""
    from kernel.db import upgrade

    _engine().dispose()
    upgrade(_database_url())
    click.echo("database is up to date")


@db.command("current")
def db_current() -> None:
    """Print the database's migration revision and how it stands against this code's head."""
    from kernel.db import current_revisions, migration_heads, schema_problem

    engine = _engine()
    try:
        with engine.connect() as connection:
            current = current_revisions(connection)
            problem = schema_problem(connection)
    finally:
        engine.dispose()
    heads = ", ".join(sorted(migration_heads()))
    if not current:
        click.echo(f"database: not migrated (this code's head: {heads}); run 'encours db upgrade'")
    elif current == migration_heads():
        click.echo(f"database: {', '.join(sorted(current))} (head)")
    elif problem is None:
        click.echo(f"database: {', '.join(sorted(current))} (later than this code's head {heads}; this code runs on it)")
    else:
        click.echo(f"database: {', '.join(sorted(current))} (this code's head is {heads}; run 'encours db upgrade')")


@db.command("downgrade", context_settings={"ignore_unknown_options": True})  # so that -1 is a revision
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Undo migrations down to REVISION (a revision id, or e.g. -1 for the last one). Only
    after the code that needs the later schema is stopped everywhere."""
    from alembic.util import CommandError as AlembicError

    from kernel.db import downgrade

    _engine().dispose()
    try:
        downgrade(_database_url(), revision)
    except AlembicError as error:
        raise CommandError(f"cannot downgrade to {revision!r}: {_first_line(error)}") from None
    click.echo(f"database downgraded to {revision}")


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
    from kernel.user_error import UserError
    from ledger.companies import create_company

    with unit_of_work(_sessions()) as session:
        try:
            created = create_company(session, code=code, name=name, currency=currency, country=country, timezone=tz)
        except UserError as error:
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
    from kernel.user_error import UserError

    try:
        with unit_of_work(_sessions()) as session:
            account = add_account(session, code, iban=iban, bic=bic, currency=currency, label=label)
            line = f"account {account.iban} ({account.currency}) added to {code}"
    except UserError as error:
        raise CommandError(str(error)) from None
    click.echo(line)


@company_account.command("list")
@click.argument("code")
def company_account_list(code: str) -> None:
    """List the bank accounts of company CODE."""
    from kernel.db import unit_of_work
    from reconciliation.accounts import list_accounts
    from kernel.user_error import UserError

    try:
        with unit_of_work(_sessions()) as session:
            lines = [f"{a.iban}\t{a.bic or '-'}\t{a.currency}\t{'active' if a.active else 'inactive'}\t{a.label or ''}"
                     for a in list_accounts(session, code)]
    except UserError as error:
        raise CommandError(str(error)) from None
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo(f"{code} has no bank account")
@company.command("reminders")
@click.argument("code")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--approval/--no-approval", default=None,
              help="Hold each day's reminders until a manager approves them (encours remind --approve).")
def company_reminders(code: str, state: str, approval: bool | None) -> None:
    """Switch the reminders of company CODE on or off (a new company's are off)."""
    from sqlalchemy import select

    from kernel.db import unit_of_work
    from ledger.companies import set_reminders
    from ledger.models import Company

    with unit_of_work(_sessions()) as session:
        found = session.scalar(select(Company).where(Company.code == code))
        if found is None:
            raise CommandError(f"unknown company {code!r}")
        changed = set_reminders(session, found, state == "on", actor_type="system", actor="cli",
                                need_approval=approval)
        held = " (held for approval)" if found.reminders_need_approval and state == "on" else ""
    click.echo(f"reminders of {code} are {state}{held}" + ("" if changed else " (unchanged)"))


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


def _run_import(kind: str, path: Path, company_code: str | None = None) -> None:
    from kernel.db import unit_of_work
    from kernel.user_error import UserErrors
    from ledger.csv_import import import_contacts, import_csv

    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None
    try:
        with unit_of_work(_sessions()) as session:
            if company_code is not None:
                report = import_contacts(session, raw, company_code=company_code, filename=path.name)
            else:
                report = import_csv(session, kind, raw)
    except UserErrors as failed:
        lines = failed.by_line("en")
        click.echo(f"encours: error: {path.name}: nothing imported, {len(lines)} bad line(s):", err=True)
        for line, problems in lines:
            click.echo(f"  line {line}: {problems}", err=True)
        sys.exit(1)
    click.echo(f"{path.name}: {report.summary()}")


@import_group.command("customers")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def import_customers(file: Path) -> None:
    """Import customers: company,customer_ref,name,email,language,phone,segment."""
    _run_import("customers", file)


@import_group.command("contacts")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--company", "company_code", required=True, help="Company code of the customers the file names.")
def import_contacts_command(file: Path, company_code: str) -> None:
    """Add or update customers' further contacts:
    customer_ref,email[,name,phone,language,role,receives_reminders]
    (role: accounts_payable, manager or other; receives_reminders: yes or no)."""
    _run_import("contacts", file, company_code)


@import_group.command("bank")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--company", "company_code", help="Book the file to this company when its account is not registered.")
def import_bank(file: Path, company_code: str | None) -> None:
    """Load a bank statement (camt.053/054, MT940, CSV) and match its credits; one line per statement."""
    from kernel.db import unit_of_work
    from kernel.user_error import UserError
    from reconciliation.imports import import_statement_file

    settings = _settings()  # receipts emailed for matched transfers carry links
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {file}: {error.strerror}") from None
    try:
        with unit_of_work(_sessions()) as session:
            report = import_statement_file(session, raw, file.name, company_code=company_code, settings=settings)
    except UserError as error:
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


@import_group.command("open-items")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--company", "company_code", required=True, help="Company code the snapshot is of.")
@click.option("--force", is_flag=True, help="Apply even when it closes more than the company's share of the book.")
def import_open_items(file: Path, company_code: str, force: bool) -> None:
    """The ERP's complete list of open items (number,open_amount[,currency]): invoices missing from
    it are settled outside Encours, the others lowered to the open amount given."""
    from sqlalchemy import select

    from kernel.clock import clock
    from kernel.db import unit_of_work
    from ledger.models import Company
    from kernel.user_error import UserErrors
    from ledger.open_items import apply_snapshot, read_snapshot_csv

    try:
        raw = file.read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {file}: {error.strerror}") from None
    try:
        items = read_snapshot_csv(raw)
        with unit_of_work(_sessions()) as session:
            company = session.scalar(select(Company).where(Company.code == company_code))
            if company is None:
                raise CommandError(f"unknown company {company_code!r}")
            report = apply_snapshot(session, company, items, as_of=clock.today(company.timezone), force=force,
                                    actor_type="system", actor="import")
    except UserErrors as refused:
        click.echo(f"encours: error: {file.name}: nothing applied:", err=True)
        for problem in refused:
            where = f"line {problem.line}: " if problem.line is not None else ""
            field = f"{problem.field}: " if problem.field else ""
            click.echo(f"  {where}{field}{problem}", err=True)
        sys.exit(1)
    click.echo(f"{file.name}: {report.summary()}")
    for number, ours, theirs in report.higher:
        click.echo(f"  {number}: the ERP shows {theirs} open, Encours {ours}; not applied")


@cli.group("mail")
def mail_group() -> None:
    """Email: feeding back bounces that arrived after delivery."""


@mail_group.command("bounce")
@click.argument("files", nargs=-1, required=True, type=click.File("rb"))
def mail_bounce(files: Any) -> None:
    """Apply delivery status notifications (RFC 3464 DSNs, one raw message per FILE; - reads
    stdin, e.g. from a mail server's pipe): a permanent failure marks the message failed and the
    contact's address failing. One line per file; exit 1 if a file is not a DSN."""
    from kernel.db import unit_of_work
    from mail import bounces

    refused = 0
    for handle in files:
        raw = handle.read()
        try:
            with unit_of_work(_sessions()) as session:
                outcome = bounces.record_bounces(session, raw)
        except bounces.NotADeliveryReport as error:
            click.echo(f"{handle.name}: {error}", err=True)
            refused += 1
            continue
        click.echo(f"{handle.name}: {outcome.summary()}")
    if refused:
        sys.exit(1)


@cli.group("apikey")
def apikey_group() -> None:
    """API keys of the ERP (the JSON API under /api/v1)."""


@apikey_group.command("create")
@click.option("--company", "company_code", required=True, help="Company code the key belongs to.")
@click.option("--name", required=True, help="A name unique in the company; the audit trail shows it.")
@click.option("--read-only", is_flag=True, help="The key may read, never write.")
def apikey_create(company_code: str, name: str, read_only: bool) -> None:
    """Create a key and print it: it is shown this once, only its hash is kept."""
    from kernel.db import unit_of_work
    from kernel.user_error import UserError
    from ledger.api_keys import create_key

    with unit_of_work(_sessions()) as session:
        try:
            _, key = create_key(session, company_code, name, read_only=read_only)
        except UserError as error:
            raise CommandError(str(error)) from None
    click.echo(f"key {name!r} created for {company_code}{' (read-only)' if read_only else ''}; it is shown once:")
    click.echo(key)


@apikey_group.command("revoke")
@click.argument("name")
@click.option("--company", "company_code", required=True, help="Company code the key belongs to.")
def apikey_revoke(name: str, company_code: str) -> None:
    """Revoke a key: every request with it is refused from now on."""
    from kernel.db import unit_of_work
    from kernel.user_error import UserError
    from ledger.api_keys import revoke_key

    with unit_of_work(_sessions()) as session:
        try:
            revoke_key(session, company_code, name)
        except UserError as error:
            raise CommandError(str(error)) from None
    click.echo(f"key {name!r} of {company_code} revoked")


@cli.group("gdpr")
def gdpr_group() -> None:
    """A person's data: export it, erase it (accounting records stay)."""


def _customer_and_contact(session: Any, customer_ref: str, company_code: str, contact_email: str | None) -> Any:
    from ledger.personal_data import contact_by_email
    from links import tokens

    try:
        customer = tokens.find_customer(session, customer_ref, company_code)
    except tokens.UnknownCustomer as error:
        raise CommandError(str(error)) from None
    contact = None
    if contact_email is not None:
        contact = contact_by_email(customer, contact_email)
        if contact is None:
            raise CommandError(f"customer {customer.ref} has no contact {contact_email.strip().lower()!r}")
    return customer, contact


@gdpr_group.command("export")
@click.option("--company", "company_code", required=True, help="Company code.")
@click.option("--customer", "customer_ref", required=True, help="The customer's reference.")
@click.option("--contact", "contact_email", help="Only this contact's data (its email address).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE, not stdout.")
def gdpr_export(company_code: str, customer_ref: str, contact_email: str | None, output: Path | None) -> None:
    """Everything held about a customer, or one of its contacts, as JSON (audited)."""
    from kernel.db import unit_of_work
    from ledger import audit
    from ledger.personal_data import export_customer

    with unit_of_work(_sessions()) as session:
        customer, contact = _customer_and_contact(session, customer_ref, company_code, contact_email)
        data = export_customer(session, customer, contact=contact)
        audit.record(session, actor_type="system", actor="encours gdpr export", action="personal_data.exported",
                     entity_type="customer", entity_id=customer.id, customer_id=customer.id,
                     after={"contact": contact.id if contact is not None else None})
    text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {output}")


@gdpr_group.command("erase")
@click.option("--company", "company_code", required=True, help="Company code.")
@click.option("--customer", "customer_ref", required=True, help="The customer's reference.")
@click.option("--contact", "contact_email", help="Only this contact (its email address); else every contact.")
@click.option("--yes", is_flag=True, help="Do it: without this flag nothing is changed.")
def gdpr_erase(company_code: str, customer_ref: str, contact_email: str | None, yes: bool) -> None:
    """Erase a customer's (or one contact's) personal data; invoices and payments stay, without it."""
    from kernel.db import unit_of_work
    from ledger.personal_data import erase
    from kernel.storage import storage_from_settings
    from ledger.storage import FileStorage

    if not yes:
        raise CommandError("erasing cannot be undone: add --yes to erase")
    storage = FileStorage(storage_from_settings(_settings()))
    with unit_of_work(_sessions()) as session:
        customer, contact = _customer_and_contact(session, customer_ref, company_code, contact_email)
        ref = customer.ref
        report = erase(session, customer, contact=contact, actor="encours gdpr erase", delete_file=storage.delete)
    click.echo(f"erased the personal data of {ref}: {report.summary()}")


@cli.command("purge")
def purge_command() -> None:
    """Purge what outlived its retention now (the worker does it daily): link opens' IP addresses and
    browsers, sent emails' bodies, processed provider events' raw bodies; delete sent emails and
    processed provider events older still (ENCOURS_RETAIN_* settings)."""
    from encours.worker import purge_now

    click.echo(purge_now(_settings(), _sessions()).summary())
@cli.group("webhook")
def webhook_group() -> None:
    """Webhook endpoints of the ERP: events sent to its URLs, signed (Encours-Signature)."""


@webhook_group.command("add")
@click.option("--company", "company_code", required=True, help="Company code whose events are sent.")
@click.option("--url", required=True, help="The https:// URL the events are POSTed to.")
@click.option("--events", default="*", show_default=True,
              help="Comma-separated event types (e.g. payment.succeeded,invoice.settled), or * for all.")
def webhook_add(company_code: str, url: str, events: str) -> None:
    """Register an endpoint and print its signing secret: it is shown this once."""
    from kernel.db import unit_of_work
    from ledger.webhook_endpoints import EndpointError, add_endpoint

    try:
        allow_private = webhook_allow_private_from_env()
    except SettingsError as error:
        raise CommandError(str(error)) from None
    with unit_of_work(_sessions()) as session:
        try:
            endpoint, secret = add_endpoint(session, company_code, url, events.split(","),
                                            allow_private=allow_private)
        except EndpointError as error:
            raise CommandError(str(error)) from None
        endpoint_id, types = endpoint.id, ",".join(endpoint.event_types)
    click.echo(f"endpoint {endpoint_id} of {company_code}: {url} ({types}); its signing secret is shown once:")
    click.echo(secret)


@webhook_group.command("list")
@click.option("--company", "company_code", default=None, help="Only this company's endpoints.")
def webhook_list(company_code: str | None) -> None:
    """The endpoints, one a line: id, company, URL, event types, deliveries queued and failed."""
    from sqlalchemy import func, select

    from kernel.db import unit_of_work
    from ledger.models import Company, WebhookDelivery
    from ledger.webhook_endpoints import endpoints

    with unit_of_work(_sessions()) as session:
        company_ids = None
        if company_code is not None:
            company_id = session.scalar(select(Company.id).where(Company.code == company_code))
            if company_id is None:
                raise CommandError(f"unknown company {company_code!r}")
            company_ids = [company_id]
        counts = {(endpoint_id, status): count for endpoint_id, status, count in session.execute(
            select(WebhookDelivery.endpoint_id, WebhookDelivery.status, func.count())
            .where(WebhookDelivery.status.in_(("queued", "failed")))
            .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.status))}
        found = endpoints(session, company_ids)
        for endpoint in found:
            click.echo(f"{endpoint.id}\t{endpoint.company.code}\t{endpoint.url}\t{','.join(endpoint.event_types)}"
                       f"\t{counts.get((endpoint.id, 'queued'), 0)} queued, {counts.get((endpoint.id, 'failed'), 0)} failed")
    if not found:
        click.echo("no webhook endpoints")


@webhook_group.command("remove")
@click.argument("endpoint_id", type=int)
@click.option("--company", "company_code", required=True, help="Company code the endpoint belongs to.")
def webhook_remove(endpoint_id: int, company_code: str) -> None:
    """Remove an endpoint: nothing more is sent to it, its delivery log goes with it."""
    from kernel.db import unit_of_work
    from ledger.webhook_endpoints import EndpointError, remove_endpoint

    with unit_of_work(_sessions()) as session:
        try:
            endpoint = remove_endpoint(session, company_code, endpoint_id)
        except EndpointError as error:
            raise CommandError(str(error)) from None
        url = endpoint.url
    click.echo(f"endpoint {endpoint_id} of {company_code} removed ({url})")


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
    from admin.staff_accounts import create_user, generate_password
    from kernel.user_error import UserError

    password = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
    with unit_of_work(_sessions()) as session:
        try:
            create_user(session, email=email, role=role, password=password, company_codes=list(companies),
                        one_time=not password_stdin)
        except UserError as error:
            raise CommandError(str(error)) from None
    click.echo(f"user {email} created with role {role}")
    if not password_stdin:
        click.echo(f"password: {password}")
        click.echo("the user chooses its own password at first sign-in")


def _staff_user(session: Any, email: str) -> Any:
    from admin.auth import find_user

    user = find_user(session, email)
    if user is None:
        raise CommandError(f"no staff user {email.strip().lower()!r}")
    return user


@user_group.command("reset-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
def user_reset_password(email: str, password_stdin: bool) -> None:
    """Give EMAIL a new password (printed, unless read from stdin); every session it had ends."""
    from admin.staff_accounts import reset_password
    from kernel.user_error import UserError
    from kernel.db import unit_of_work

    given = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with unit_of_work(_sessions()) as session:
        user = _staff_user(session, email)
        try:
            password = reset_password(session, actor=None, user=user, password=given)
        except UserError as error:
            raise CommandError(str(error)) from None
        address = user.email
    click.echo(f"password of {address} reset; its sessions have ended")
    if not password_stdin:
        click.echo(f"password: {password}")
        click.echo("the user chooses its own password at next sign-in")


def _set_active(email: str, active: bool) -> None:
    from admin.staff_accounts import set_active
    from kernel.user_error import UserError
    from kernel.db import unit_of_work

    with unit_of_work(_sessions()) as session:
        user = _staff_user(session, email)
        try:
            changed = set_active(session, actor=None, user=user, active=active)
        except UserError as error:
            raise CommandError(str(error)) from None
        address = user.email
    state = "enabled" if active else "disabled"
    click.echo(f"user {address} {state}" + ("" if changed else " already") +
               ("; its sessions have ended" if changed and not active else ""))


@user_group.command("disable")
@click.argument("email")
def user_disable(email: str) -> None:
    """Disable EMAIL: it can no longer sign in, and its open sessions end."""
    _set_active(email, False)


@user_group.command("enable")
@click.argument("email")
def user_enable(email: str) -> None:
    """Enable EMAIL again (its password is unchanged)."""
    _set_active(email, True)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def serve(host: str, port: int, workers: int) -> None:
    """Serve the portal, the back-office and the webhooks."""
    import uvicorn

    settings = _settings()
    _engine().dispose()
    configure_logging(settings.log_format, settings.log_level)
    _error_reports(settings, "serve")
    if workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _prepare_metrics_directory()
    # Forwarded headers are read by the app itself, from the proxies ENCOURS_FORWARDED_ALLOW_IPS names.
    # log_config=None: uvicorn's loggers reach our one handler (kernel.logs), secrets masked.
    uvicorn.run("encours.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                proxy_headers=False, log_config=None)


def _error_reports(settings: Any, component: str) -> None:
    from encours.error_reports import init_error_reports

    try:
        init_error_reports(settings, component=component)
    except SettingsError as error:
        raise CommandError(str(error)) from None


def _prepare_metrics_directory() -> None:
    """Several server processes: each writes its request metrics to files in one directory that
    /metrics sums (prometheus_client's multiprocess mode). Set before the processes start; the
    files of an earlier run are removed so counters start again from zero, as a restart does."""
    import tempfile

    from encours.metrics import MULTIPROCESS_ENV

    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        directory = os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="encours-metrics-")
    Path(directory).mkdir(parents=True, exist_ok=True)
    for stale in Path(directory).glob("*.db"):
        stale.unlink()


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
    # The worker's jobs run beside the server, as `encours worker` would: direct debits are collected
    # on their dates, transfers expire, promises settle. Without a mail server the emails stay queued.
    jobs = _demo_worker(settings, deliver="ENCOURS_SMTP_URL" in os.environ)
    click.echo(f"Serving on {base_url}  (Ctrl+C to stop)")
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", proxy_headers=False)
    finally:
        jobs.set()
        if stand_ins is not None:
            stand_ins.stop()


DEMO_WORKER_INTERVAL = 5.0  # seconds: a direct debit set up in the demo is seen paid within moments


def _demo_worker(settings: Any, *, deliver: bool) -> threading.Event:
    """Run the worker's loop in a daemon thread; set the returned event to stop it."""
    from encours import worker as background
    from kernel.db import make_engine, make_sessionmaker

    stop = threading.Event()
    session_factory = make_sessionmaker(make_engine(settings.database_url))
    threading.Thread(target=background.run_forever, name="demo-worker", daemon=True,
                     kwargs={"settings": settings, "session_factory": session_factory,
                             "interval": DEMO_WORKER_INTERVAL, "stop": stop, "deliver": deliver}).start()
    return stop


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
    configure_logging(settings.log_format, settings.log_level)
    _error_reports(settings, "worker")
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
@click.option("--approve", is_flag=True, help="Send the reminders waiting for approval (plans nothing).")
def remind(day: Any, company_code: str | None, dry_run: bool, approve: bool) -> None:
    """Plan today's reminders and queue one message per customer in the outbox."""
    from dunning.planner import UnknownCompany, run

    if approve:
        if dry_run or day:
            raise click.UsageError("--approve sends what waits for approval; it takes no --date nor --dry-run")
        _approve_held(company_code)
        return
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


def _approve_held(company_code: str | None) -> None:
    from sqlalchemy import select

    from dunning import approval
    from kernel.db import unit_of_work
    from ledger.models import Company

    with unit_of_work(_sessions()) as session:
        query = select(Company.id, Company.code).order_by(Company.code)
        if company_code is not None:
            query = query.where(Company.code == company_code)
        companies = session.execute(query).all()
        if company_code is not None and not companies:
            raise CommandError(f"unknown company {company_code!r}")
        for company_id, code in companies:
            waiting = approval.held(session, [company_id])
            sent = approval.approve(session, waiting, actor_type="system", actor="cli")
            click.echo(f"{code}: {sent} reminder(s) approved and queued for sending")


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
