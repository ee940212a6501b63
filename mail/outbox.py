"""SMTP delivery of the email outbox, with retries; safe with several workers at once."""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import secrets
import smtplib
import ssl
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any, Iterator, cast

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from kernel.clock import clock
from kernel.retry import RetryPolicy
# The SMTP setting is parsed in the kernel (a start-up check); callers of the outbox keep these names here.
from kernel.smtp import SMTPConfig, SMTPConfigError, parse_smtp_url  # noqa: F401
from ledger.models import Company, Contact, Customer, OutboxMessage, User, UTCDateTime

OUTBOX = cast(Table, OutboxMessage.__table__)
CONTACTS = cast(Table, Contact.__table__)
CUSTOMERS = cast(Table, Customer.__table__)
COMPANIES = cast(Table, Company.__table__)
USERS = cast(Table, User.__table__)

RETRY = RetryPolicy(max_attempts=8)
MAX_ATTEMPTS = RETRY.max_attempts
# A claimed message is hidden this long: if its worker dies mid-send, another one retries it then.
LEASE = timedelta(minutes=10)


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
    contact_id: int | None = None  # the debtor's contact it goes to, if any (a bounce marks its address)
    # Where the debtor's answer goes: the customer's collector, else the company's collections address.
    reply_to: str | None = None


log = logging.getLogger(__name__)


class _ConnectionLost(Exception):
    """Opening the SMTP session failed: the rest of the batch waits for the next run."""


def message_reference(message_id: int, created_at: datetime) -> str:
    """What ties an email back to its outbox row (Message-ID, X-Encours-Message, bounces):
    its id and its creation second, which no one outside can guess for a given id."""
    return f"{message_id}.{int(created_at.timestamp())}"


# Every outbox email is sent by a program, not a person (RFC 3834): vacation responders and
# other robots must not answer it; Exchange is asked not to send its automatic replies either.
AUTOMATED_HEADERS = (("Auto-Submitted", "auto-generated"), ("X-Auto-Response-Suppress", "All"))


def _build_email(message: ClaimedMessage, mail_from: str) -> EmailMessage:
    email = EmailMessage()
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    reference = message_reference(message.id, message.created_at)
    # Stable across retries, so a receiver can drop the copy resent after a crash mid-send.
    email["Message-ID"] = f"<encours.outbox.{reference}@{domain}>"
    email["Date"] = format_datetime(clock.now())
    # The From a debtor reads is the company's when it set one (see envelope_sender for MAIL FROM).
    email["From"] = message.sender or mail_from
    email["To"] = message.to_address
    if message.reply_to:
        email["Reply-To"] = message.reply_to
    email["Subject"] = message.subject
    for name, value in AUTOMATED_HEADERS:
        email[name] = value
    email["X-Encours-Message"] = reference
    email.set_content(message.body_text)
    if message.body_html:
        email.add_alternative(message.body_html, subtype="html")
    return email


def _email_bytes(message: ClaimedMessage, mail_from: str) -> bytes | None:
    """The same email as `_build_email`, written out directly: text (and HTML) parts in UTF-8,
    base64, headers folded at 78 columns. The `email` package's generator cost several times
    the rest of a message's work at outbox speed (folding a UTF-8 Subject alone was a third).
    None when an address is not ASCII: `send_message` then negotiates SMTPUTF8 (or refuses)."""
    sender = message.sender or mail_from
    reply_to = message.reply_to or ""
    if not (message.to_address.isascii() and _address(sender)[1].isascii() and _address(mail_from)[1].isascii()
            and reply_to.isascii()):
        return None
    if any(ch in value for value in (message.subject, sender, message.to_address, reply_to) for ch in "\r\n"):
        raise ValueError("a header holds a line break")
    domain = _address(mail_from)[1].rpartition("@")[2] or "localhost"
    reference = message_reference(message.id, message.created_at)
    headers = [
        _fold(f"Message-ID: <encours.outbox.{reference}@{domain}>"),
        f"Date: {format_datetime(clock.now())}",
        _fold(f"From: {_from_header(sender)}"),
        _fold(f"To: {message.to_address}"),
        *([_fold(f"Reply-To: {_from_header(reply_to)}")] if reply_to else []),
        _fold(f"Subject: {message.subject if message.subject.isascii() else _encoded_words(message.subject)}"),
        "MIME-Version: 1.0",
        *(f"{name}: {value}" for name, value in AUTOMATED_HEADERS),
        f"X-Encours-Message: {reference}",
    ]
    text = _base64_body(message.body_text)
    if not message.body_html:
        head = "\r\n".join([TEXT_PART_HEADERS.format(subtype="plain"), *headers])
        return head.encode("ascii") + b"\r\n\r\n" + text
    # Base64 lines never begin with "--": no boundary can clash with a part's content.
    boundary = f"=_encours_{secrets.token_hex(12)}".encode("ascii")
    head = "\r\n".join([_fold(f'Content-Type: multipart/alternative; boundary="{boundary.decode()}"'), *headers])
    return b"".join([
        head.encode("ascii"), b"\r\n\r\n",
        b"--", boundary, b"\r\n", TEXT_PART_HEADERS.format(subtype="plain").encode("ascii"), b"\r\n\r\n", text,
        b"--", boundary, b"\r\n", TEXT_PART_HEADERS.format(subtype="html").encode("ascii"), b"\r\n\r\n",
        _base64_body(message.body_html),
        b"--", boundary, b"--\r\n",
    ])


TEXT_PART_HEADERS = 'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: base64'
HEADER_WIDTH = 78  # RFC 5322's "SHOULD"; the hard limit is 998
ENCODED_WORD_BYTES = 42  # base64 to 56 characters, 68 with "=?utf-8?b?" and "?=": a line of its own fits


def _base64_body(text: str) -> bytes:
    """Text in its canonical form (CRLF line breaks, RFC 2046), UTF-8, then base64 in
    76-column CRLF lines ending with a line break."""
    canonical = text.replace("\r\n", "\n").replace("\n", "\r\n")
    encoded = binascii.b2a_base64(canonical.encode("utf-8"), newline=False)
    return b"\r\n".join([encoded[start:start + 76] for start in range(0, len(encoded), 76)]) + b"\r\n"


@functools.lru_cache(maxsize=1024)  # a run sends the same few subjects again and again
def _encoded_words(text: str) -> str:
    """RFC 2047 encoded words of UTF-8 (never splitting a character), separated by spaces,
    which readers drop between encoded words, so that `_fold` can break the line there."""
    words: list[str] = []
    chunk = bytearray()
    for character in text:
        encoded = character.encode("utf-8")
        if len(chunk) + len(encoded) > ENCODED_WORD_BYTES:
            words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
            chunk.clear()
        chunk += encoded
    words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
    return " ".join(words)


def _fold(line: str) -> str:
    """A header line folded at spaces to HEADER_WIDTH columns where it can be."""
    if len(line) <= HEADER_WIDTH:
        return line
    first, *words = line.split(" ")
    lines = [first]
    for word in words:
        width = len(lines[-1]) + (len(lines) > 1)  # a continuation line starts with the folding space
        if word and width + 1 + len(word) > HEADER_WIDTH:
            lines.append(word)
        else:
            lines[-1] += f" {word}"
    return "\r\n ".join(lines)


@functools.lru_cache(maxsize=256)
def _address(text: str) -> tuple[str, str]:
    return parseaddr(text)


@functools.lru_cache(maxsize=256)
def _from_header(sender: str) -> str:
    return formataddr(_address(sender), charset="utf-8")


def deliver_due(
    session_factory: sessionmaker[Session], smtp_config: SMTPConfig, mail_from: str, limit: int = 100,
    lease: timedelta = LEASE,
) -> DeliveryReport:
    """Send up to `limit` queued messages that are due, one at a time, over one SMTP connection.

    A message's outcome is written as soon as the server has answered, in the same transaction
    that claims the next message: one commit per message, and never more than one message
    claimed without its outcome written. A worker killed between the server's 250 and that
    commit leaves exactly that one message to be sent again after its LEASE, under the same
    Message-ID (receivers can drop the copy); nothing else is resent, lost or held back. A
    database that goes away meanwhile is waited for (half the lease) before that happens.
    `lease` must outlast sending one message (connecting included).
    """
    outcomes = _Outcomes()
    database = _Database(session_factory)
    envelope_from = parseaddr(mail_from)[1]
    connection: smtplib.SMTP | None = None
    tried = 0
    try:
        claimed = _record_and_claim(database, outcomes, lease, claim=limit > 0)
        while claimed is not None:
            tried += 1
            # An unexpected error here leaves this message on its lease: it may have been sent.
            connection, stop = _deliver_one(connection, smtp_config, envelope_from, mail_from, claimed, outcomes)
            claimed = _record_and_claim(database, outcomes, lease, claim=tried < limit and not stop)
    finally:
        database.close()
        if connection is not None:
            _close(connection)
    return outcomes.report()


class _Database:
    """One database connection kept for a whole `deliver_due`, a short transaction per message:
    at one transaction per message, taking a connection from the pool each time (and a
    Session's bookkeeping) cost more than the statements. A connection that failed is dropped
    and a new one opened for the next attempt."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._bind = session_factory.kw["bind"]  # write sessions' engine: BEGIN IMMEDIATE on SQLite
        self._connection: Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        if isinstance(self._bind, Connection):  # tests: one outer transaction, a savepoint of it
            with self._bind.begin_nested():
                yield self._bind
            return
        if self._connection is None:
            self._connection = self._bind.connect()
        try:
            with self._connection.begin():
                yield self._connection
        except OperationalError:
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.close()
            except SQLAlchemyError:  # already broken: the pool discards it
                pass


def _record_and_claim(
    database: _Database, outcomes: _Outcomes, lease: timedelta, *, claim: bool
) -> ClaimedMessage | None:
    """Write the outcome noted so far and claim the next due message, in one transaction.

    A lost connection (database restart, failover, a killed backend) is retried for up to half
    the lease: the message just sent must not go out again because our
    write of its outcome failed. Both writes may be replayed safely: an outcome matches the
    claim's `attempts`, and a claim whose commit we did not see only waits for its lease."""
    deadline = time.monotonic() + (lease / 2).total_seconds()
    pause = 0.05
    while True:
        try:
            with database.transaction() as connection:
                outcomes.write(connection)
                claimed = _claim_next(connection, connection.dialect.name == "postgresql", lease) if claim else None
        except OperationalError as error:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("outbox: database unavailable (%s); retrying in %.2f s", _first_line(error), pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        outcomes.written()
        return claimed


_NOW = bindparam("b_now", type_=UTCDateTime())
# Built once: at one claim per message, building the statements cost more than running them.
_CLAIM = (
    select(OUTBOX.c.id, OUTBOX.c.attempts, OUTBOX.c.to_address, OUTBOX.c.subject,
           OUTBOX.c.body_text, OUTBOX.c.body_html, OUTBOX.c.created_at, OUTBOX.c.contact_id,
           COMPANIES.c.name, COMPANIES.c.reminder_from, COMPANIES.c.collections_email,
           USERS.c.email.label("collector_email"))
    .select_from(OUTBOX.outerjoin(CUSTOMERS, CUSTOMERS.c.id == OUTBOX.c.customer_id)
                 .outerjoin(COMPANIES, COMPANIES.c.id == CUSTOMERS.c.company_id)
                 .outerjoin(USERS, (USERS.c.id == CUSTOMERS.c.collector_id) & USERS.c.active.is_(True)))
    .where(OUTBOX.c.status == "queued", OUTBOX.c.next_attempt_at <= _NOW)
    .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
    .limit(1)
)
_CLAIM_LOCKED = _CLAIM.with_for_update(skip_locked=True, of=OUTBOX)
_TAKE = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("b_id"), OUTBOX.c.status == "queued", OUTBOX.c.next_attempt_at <= _NOW)
    .values(attempts=OUTBOX.c.attempts + 1, next_attempt_at=bindparam("b_until", type_=UTCDateTime()))
)


def _claim_next(connection: Connection, postgres: bool, lease: timedelta) -> ClaimedMessage | None:
    """Take the due message that has waited longest.

    A claim bumps `attempts` and hides the message for `lease`. On PostgreSQL the row is read
    locked with SKIP LOCKED: a concurrent worker passes it by and takes the next one. SQLite
    has no row locks: the transaction begins IMMEDIATE, holding the one write lock from its
    first statement, so a second worker's claim starts only once ours is committed.
    """
    now = clock.now()
    row = connection.execute(_CLAIM_LOCKED if postgres else _CLAIM, {"b_now": now}).first()
    if row is None:
        return None
    taken = connection.execute(_TAKE, {"b_id": row.id, "b_now": now, "b_until": now + lease})
    if taken.rowcount != 1:  # cannot happen with the locks above: never send on a lost race
        raise RuntimeError(f"outbox claim of message {row.id} took {taken.rowcount} rows")
    return ClaimedMessage(
        id=row.id,
        attempts=row.attempts + 1,
        to_address=row.to_address,
        subject=row.subject,
        body_text=row.body_text,
        body_html=row.body_html,
        created_at=row.created_at,
        # Mail to a debtor's contact comes from the company's reminder address when it
        # set one; staff notices (no contact) keep ours.
        sender=formataddr((row.name, row.reminder_from)) if row.contact_id is not None and row.reminder_from else None,
        contact_id=row.contact_id,
        # A debtor's answer reaches a person: its collector, else the company's collections team.
        reply_to=(row.collector_email or row.collections_email) if row.contact_id is not None else None,
    )


def _deliver_one(
    connection: smtplib.SMTP | None,
    smtp_config: SMTPConfig,
    envelope_from: str,
    mail_from: str,
    claimed: ClaimedMessage,
    outcomes: _Outcomes,
) -> tuple[smtplib.SMTP | None, bool]:
    """Send one claimed message and note its outcome; also says whether the run must stop."""
    try:
        raw = _email_bytes(claimed, mail_from)
        email = _build_email(claimed, mail_from) if raw is None else None
    except (ValueError, TypeError) as error:  # e.g. a line break in a header: no retry can fix it
        outcomes.failed(claimed, f"cannot build the email: {error}")
        return connection, False
    try:
        if connection is None:
            connection = _connect(smtp_config)
        sender = envelope_sender(claimed, envelope_from, smtp_config.align_envelope)
        if email is None:
            connection.sendmail(sender, [claimed.to_address], raw)  # type: ignore[arg-type]
        else:
            connection.send_message(email, from_addr=sender, to_addrs=[claimed.to_address])
    except smtplib.SMTPSenderRefused as error:
        # Our own sender refused (auth required, domain not allowed) is a settings problem
        # that every message would hit alike: none is given up for it.
        outcomes.retry(claimed, _describe(error))
        return connection, True
    except smtplib.SMTPRecipientsRefused as error:
        code, text = error.recipients.get(claimed.to_address, next(iter(error.recipients.values())))
        outcomes.refused(claimed, code, text, at_recipient=True)
        return connection, code == 421  # the server closed the connection
    except smtplib.SMTPResponseException as error:
        outcomes.refused(claimed, error.smtp_code, error.smtp_error)
        return connection, error.smtp_code == 421
    except smtplib.SMTPNotSupportedError as error:  # e.g. an internationalised address, no SMTPUTF8
        outcomes.failed(claimed, _describe(error))
        return connection, False
    except (_ConnectionLost, OSError) as error:  # refused, timed out, reset, disconnected
        outcomes.retry(claimed, _describe(error))
        if connection is not None:
            connection.close()  # not quit(): a timed-out server would make us wait again
        return connection, True
    outcomes.sent(claimed)
    return connection, False


def envelope_sender(claimed: ClaimedMessage, ours: str, align: bool) -> str:
    """MAIL FROM: ours (bounces come back to us: the DSN intake, mail.bounces), unless the
    operator chose alignment (ENCOURS_ENVELOPE_ALIGN) and the company sends under its own
    address: then that address, so SPF passes aligned with the From domain for DMARC (bounces
    then reach the company's mailbox). See the README's deliverability section."""
    if align and claimed.sender:
        return _address(claimed.sender)[1] or ours
    return ours


class _Outcomes:
    """The outcome of the message just tried, kept until `write` records it (with the next
    claim), and the run's counts.

    Each write matches `attempts` too: if our lease ran out and another worker took the
    message over, its outcome is the one that counts."""

    def __init__(self) -> None:
        self.counts = {"sent": 0, "retried": 0, "failed": 0}
        self._rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in _WRITES}

    def sent(self, claimed: ClaimedMessage) -> None:
        self._add("sent", claimed, b_at=clock.now())

    def retry(self, claimed: ClaimedMessage, error: str) -> None:
        next_attempt = RETRY.next_attempt(claimed.attempts, clock.now())
        if next_attempt is None:
            self.failed(claimed, f"gave up after {claimed.attempts} attempts: {error}")
        else:
            log.warning("outbox: message %s not sent (attempt %s), retried after %s: %s", claimed.id,
                        claimed.attempts, next_attempt.isoformat(timespec="seconds"), error,
                        extra={"outbox_message": claimed.id, "outcome": "retried"})
            self._add("retried", claimed, b_error=error, b_at=next_attempt)

    def failed(self, claimed: ClaimedMessage, error: str) -> None:
        log.error("outbox: message %s failed for good (attempt %s): %s", claimed.id, claimed.attempts, error,
                  extra={"outbox_message": claimed.id, "outcome": "failed"})
        self._add("failed", claimed, b_error=error)

    def refused(self, claimed: ClaimedMessage, code: int, text: bytes | str, at_recipient: bool = False) -> None:
        if 500 <= code < 600:
            self.failed(claimed, _reply(code, text))
            if at_recipient and claimed.contact_id is not None:
                # The server refused the address itself for good: the contact's address is failing.
                self._rows["bounced"].append({"b_contact": claimed.contact_id, "b_address": claimed.to_address,
                                              "b_error": _reply(code, text), "b_at": clock.now()})
        else:
            self.retry(claimed, _reply(code, text))

    def _add(self, kind: str, claimed: ClaimedMessage, **values: Any) -> None:
        self._rows[kind].append({"b_id": claimed.id, "b_attempts": claimed.attempts, **values})
        self.counts[kind] += 1

    def write(self, connection: Connection) -> None:
        """Execute the noted outcomes in the caller's transaction; `written` once it committed."""
        for kind, rows in self._rows.items():
            if rows:
                connection.execute(_WRITES[kind], rows)

    def written(self) -> None:
        for rows in self._rows.values():
            rows.clear()

    def report(self) -> DeliveryReport:
        return DeliveryReport(**self.counts)


def _outcome_update(**values: Any) -> Any:
    return (
        update(OUTBOX)
        .where(OUTBOX.c.id == bindparam("b_id"), OUTBOX.c.attempts == bindparam("b_attempts"))
        .values(**values)
    )


_AT = bindparam("b_at", type_=UTCDateTime())
_WRITES = {
    "sent": _outcome_update(status="sent", last_error=None, sent_at=_AT),
    "retried": _outcome_update(status="queued", last_error=bindparam("b_error"), next_attempt_at=_AT),
    "failed": _outcome_update(status="failed", last_error=bindparam("b_error")),
    # Only while the contact still has the address that bounced.
    "bounced": update(CONTACTS)
    .where(CONTACTS.c.id == bindparam("b_contact"), CONTACTS.c.email == bindparam("b_address"))
    .values(email_failing_since=_AT, email_failure=bindparam("b_error")),
}


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


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
