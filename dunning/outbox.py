"""SMTP delivery of the email outbox, with retries; safe with several workers at once."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from encours.clock import clock
from encours.db import unit_of_work
from ledger.models import Company, Customer, OutboxMessage

COMPAT_SMTP = compat32.clone(linesep="\r\n")

MAX_ATTEMPTS = 8
# Wait after the n-th failed attempt (the last one also applies to any later attempt).
BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(hours=24),
)
# A claimed message is hidden this long: if its worker dies mid-send, another one retries it then.
LEASE = timedelta(minutes=10)
DEFAULT_PORTS = {("smtp", False): 25, ("smtp", True): 587, ("smtps", False): 465}
TRUE_FLAGS = ("1", "true", "yes", "on")
FALSE_FLAGS = ("0", "false", "no", "off", "")


class SMTPConfigError(ValueError):
    """ENCOURS_SMTP_URL is malformed; the message says how."""


@dataclass(frozen=True)
class SMTPConfig:
    scheme: str  # "smtp" (plain, or STARTTLS) or "smtps" (TLS from the first byte)
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    timeout: float = 30.0


def parse_smtp_url(url: str) -> SMTPConfig:
    """`smtp://user:pass@host:587?starttls=1&timeout=10`, `smtps://host:465`, `smtp://127.0.0.1:2525`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise SMTPConfigError(f"ENCOURS_SMTP_URL must start with smtp:// or smtps://, got {url.split(':', 1)[0]!r}")
    if not parts.hostname:
        raise SMTPConfigError("ENCOURS_SMTP_URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise SMTPConfigError("ENCOURS_SMTP_URL has an invalid port") from None
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"starttls", "timeout"})
    if unknown:
        raise SMTPConfigError(
            f"ENCOURS_SMTP_URL has unknown option(s): {', '.join(unknown)} (known: starttls, timeout)"
        )
    starttls_flag = query.get("starttls", ["0"])[-1].lower()
    if starttls_flag not in TRUE_FLAGS + FALSE_FLAGS:
        raise SMTPConfigError(f"ENCOURS_SMTP_URL: starttls must be 1 or 0, got {starttls_flag!r}")
    starttls = starttls_flag in TRUE_FLAGS
    if starttls and scheme == "smtps":
        raise SMTPConfigError("ENCOURS_SMTP_URL: starttls=1 makes no sense with smtps:// (already TLS)")
    try:
        timeout = float(query.get("timeout", ["30"])[-1])
    except ValueError:
        timeout = 0.0
    if not timeout > 0:
        raise SMTPConfigError("ENCOURS_SMTP_URL: timeout must be a positive number of seconds")
    return SMTPConfig(
        scheme=scheme,
        host=parts.hostname,
        port=port or DEFAULT_PORTS[(scheme, starttls)],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        starttls=starttls,
        timeout=timeout,
    )


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0

    def summary(self) -> str:
        return f"{self.sent} sent, {self.retried} retried, {self.failed} failed"


@dataclass(frozen=True)
class ClaimedMessage:
    """What a worker needs of a message it holds, read in the claiming transaction."""

    id: int
    attempts: int
    to_address: str
    subject: str
    body_text: str
    body_html: str | None
    created_at: datetime
    # The company's own sender for mail to its debtors (its settings' reminder address), if any.
    sender: str | None = None


class _ConnectionLost(Exception):
    """Opening the SMTP session failed: the rest of the batch waits for the next run."""


def backoff(attempts: int) -> timedelta:
    """How long to wait after `attempts` failed attempts."""
    return BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]


def _build_email(message: ClaimedMessage, mail_from: str) -> EmailMessage:
    email = EmailMessage()
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    # Stable across retries, so a receiver can drop the copy resent after a crash mid-send.
    email["Message-ID"] = f"<encours.outbox.{message.id}.{int(message.created_at.timestamp())}@{domain}>"
    email["Date"] = format_datetime(clock.now())
    # The envelope sender stays ours (bounces, SPF); the From a debtor reads is the company's when it set one.
    email["From"] = message.sender or mail_from
    email["To"] = message.to_address
    email["Subject"] = message.subject
    email.set_content(message.body_text)
    if message.body_html:
        email.add_alternative(message.body_html, subtype="html")
    return email


def _email_bytes(message: ClaimedMessage, mail_from: str) -> bytes | None:
    """The same email as `_build_email`, made with the compat32 MIME classes: about five times
    cheaper, which is most of a message's cost at outbox speed. None when an address is not
    ASCII: `send_message` then negotiates SMTPUTF8 (or refuses) as it should."""
    sender = message.sender or mail_from
    if not (message.to_address.isascii() and parseaddr(sender)[1].isascii() and parseaddr(mail_from)[1].isascii()):
        return None
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    text = MIMEText(message.body_text, "plain", "utf-8")
    if message.body_html:
        email: Message = MIMEMultipart("alternative")
        email.attach(text)
        email.attach(MIMEText(message.body_html, "html", "utf-8"))
    else:
        email = text
    email["Message-ID"] = f"<encours.outbox.{message.id}.{int(message.created_at.timestamp())}@{domain}>"
    email["Date"] = format_datetime(clock.now())
    email["From"] = formataddr(parseaddr(sender), charset="utf-8")
    email["To"] = message.to_address
    email["Subject"] = message.subject if message.subject.isascii() else Header(message.subject, "utf-8")  # type: ignore[assignment]
    if any(ch in value for value in (message.subject, sender, message.to_address) for ch in "\r\n"):
        raise ValueError("a header holds a line break")
    return email.as_bytes(policy=COMPAT_SMTP)


def deliver_due(
    session_factory: sessionmaker[Session], smtp_config: SMTPConfig, mail_from: str, limit: int = 100
) -> DeliveryReport:
    """Send up to `limit` queued messages that are due, over one SMTP connection."""
    outcomes = {"sent": 0, "retried": 0, "failed": 0}
    envelope_from = parseaddr(mail_from)[1]
    connection: smtplib.SMTP | None = None
    try:
        for _ in range(limit):
            claimed = _claim_next(session_factory)
            if claimed is None:
                break
            try:
                raw = _email_bytes(claimed, mail_from)
                email = _build_email(claimed, mail_from) if raw is None else None
            except (ValueError, TypeError) as error:  # e.g. a line break in a header: no retry can fix it
                outcomes[_failed(session_factory, claimed, f"cannot build the email: {error}")] += 1
                continue
            try:
                if connection is None:
                    connection = _connect(smtp_config)
                if email is None:
                    connection.sendmail(envelope_from, [claimed.to_address], raw)  # type: ignore[arg-type]
                else:
                    connection.send_message(email, from_addr=envelope_from, to_addrs=[claimed.to_address])
            except smtplib.SMTPSenderRefused as error:
                # Our own sender refused (auth required, domain not allowed) is a settings problem
                # that every message would hit alike: none is given up for it.
                outcomes[_retry(session_factory, claimed, _describe(error))] += 1
                break
            except smtplib.SMTPRecipientsRefused as error:
                code, text = error.recipients.get(claimed.to_address, next(iter(error.recipients.values())))
                outcomes[_refused(session_factory, claimed, code, text)] += 1
                if code == 421:  # the server closed the connection
                    break
            except smtplib.SMTPResponseException as error:
                outcomes[_refused(session_factory, claimed, error.smtp_code, error.smtp_error)] += 1
                if error.smtp_code == 421:
                    break
            except smtplib.SMTPNotSupportedError as error:  # e.g. an internationalised address, no SMTPUTF8
                outcomes[_failed(session_factory, claimed, _describe(error))] += 1
            except (_ConnectionLost, OSError) as error:  # refused, timed out, reset, disconnected
                outcomes[_retry(session_factory, claimed, _describe(error))] += 1
                if connection is not None:
                    connection.close()  # not quit(): a timed-out server would make us wait again
                break
            else:
                _finish(session_factory, claimed, "sent")
                outcomes["sent"] += 1
    finally:
        if connection is not None:
            _close(connection)
    return DeliveryReport(**outcomes)


def _claim_next(session_factory: sessionmaker[Session]) -> ClaimedMessage | None:
    """Take the next due message, or None when nothing is due.

    A claim bumps `attempts` and hides the message for LEASE. On PostgreSQL the row is read
    and claimed in one transaction, locked with SKIP LOCKED. SQLite has no row locks: the
    UPDATE only matches while `attempts` is still what was read, so of two workers one wins.
    """
    while True:
        with unit_of_work(session_factory) as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            query = (
                select(OutboxMessage)
                .where(OutboxMessage.status == "queued", OutboxMessage.next_attempt_at <= clock.now())
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(1)
            )
            if postgres:
                query = query.with_for_update(skip_locked=True)
            message = session.scalars(query).first()
            if message is None:
                return None
            seen = message.attempts
            claimed = ClaimedMessage(
                id=message.id,
                attempts=seen + 1,
                to_address=message.to_address,
                subject=message.subject,
                body_text=message.body_text,
                body_html=message.body_html,
                created_at=message.created_at,
                sender=_company_sender(session, message),
            )
            if postgres:
                _take(session, claimed, seen)  # the row is ours until commit: this always matches
                return claimed
        # SQLite: a transaction that has read cannot take the write lock once another worker has
        # written, so the claim is a transaction of its own that starts with the write.
        with unit_of_work(session_factory) as session:
            if _take(session, claimed, seen):
                return claimed
        # Another worker took it first; its claim moved it out of the due set, so look again.


def _company_sender(session: Session, message: OutboxMessage) -> str | None:
    """`Company name <reminder_from>` for a message to a debtor's contact; staff notices keep ours."""
    if message.contact_id is None or message.customer_id is None:
        return None
    row = session.execute(
        select(Company.name, Company.reminder_from).join(Customer, Customer.company_id == Company.id)
        .where(Customer.id == message.customer_id)
    ).first()
    if row is None or not row.reminder_from:
        return None
    return formataddr((row.name, row.reminder_from))


def _take(session: Session, claimed: ClaimedMessage, seen_attempts: int) -> bool:
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == claimed.id,
            OutboxMessage.status == "queued",
            OutboxMessage.attempts == seen_attempts,
        )
        .values(attempts=claimed.attempts, next_attempt_at=clock.now() + LEASE)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def _finish(
    session_factory: sessionmaker[Session],
    claimed: ClaimedMessage,
    status: str,
    *,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> None:
    values: dict[str, object] = {"status": status, "last_error": error}
    if status == "sent":
        values["sent_at"] = clock.now()
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    with unit_of_work(session_factory) as session:
        # Matching `attempts` too: if our lease ran out and another worker took the message
        # over, its outcome is the one that counts.
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == claimed.id, OutboxMessage.attempts == claimed.attempts)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def _refused(session_factory: sessionmaker[Session], claimed: ClaimedMessage, code: int, text: bytes | str) -> str:
    if 500 <= code < 600:
        return _failed(session_factory, claimed, _reply(code, text))
    return _retry(session_factory, claimed, _reply(code, text))


def _retry(session_factory: sessionmaker[Session], claimed: ClaimedMessage, error: str) -> str:
    if claimed.attempts >= MAX_ATTEMPTS:
        return _failed(session_factory, claimed, f"gave up after {claimed.attempts} attempts: {error}")
    _finish(session_factory, claimed, "queued", error=error, retry_at=clock.now() + backoff(claimed.attempts))
    return "retried"


def _failed(session_factory: sessionmaker[Session], claimed: ClaimedMessage, error: str) -> str:
    _finish(session_factory, claimed, "failed", error=error)
    return "failed"


def _connect(config: SMTPConfig) -> smtplib.SMTP:
    connection: smtplib.SMTP | None = None
    try:
        if config.scheme == "smtps":
            connection = smtplib.SMTP_SSL(
                config.host, config.port, timeout=config.timeout, context=ssl.create_default_context()
            )
        else:
            connection = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            if config.starttls:
                connection.starttls(context=ssl.create_default_context())
        if config.username:
            connection.login(config.username, config.password or "")
        return connection
    except OSError as error:  # smtplib's errors and ssl's are OSErrors too
        if connection is not None:
            connection.close()
        # Even a 5xx here (bad password, no STARTTLS) is about the server, never the message.
        raise _ConnectionLost(f"cannot reach {config.host}:{config.port}: {_describe(error)}") from error


def _close(connection: smtplib.SMTP) -> None:
    try:
        if connection.sock is not None:
            connection.quit()
    except OSError:  # smtplib's errors are OSErrors too
        pass
    finally:
        connection.close()


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {message}".strip()


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        return _reply(error.smtp_code, error.smtp_error)
    if isinstance(error, _ConnectionLost):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
