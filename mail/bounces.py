"""Bounces that come back after the SMTP server accepted a message: delivery status
notifications (DSNs, RFC 3464 `multipart/report; report-type=delivery-status`), fed to us by the
mail relay (POST /webhooks/bounces) or by a mailbox pipe (`encours mail bounce FILE`).

A DSN counts only when it names a message we sent: the returned headers carry our
`X-Encours-Message` (or our Message-ID), whose id and creation second must both match an
outbox row, and the failed recipient must be the address that row went to. A permanent
failure (`Action: failed`, status 5.x.x) marks the message failed and the contact's address
failing, as a synchronous SMTP refusal does; a delay or a success changes nothing."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import parseaddr

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.clock import clock
from ledger.models import Contact, OutboxMessage
from mail.outbox import message_reference

log = logging.getLogger("encours.bounces")
_REFERENCE = re.compile(r"^\s*(\d{1,18})\.(\d{1,12})\s*$")
_MESSAGE_ID = re.compile(r"<encours\.outbox\.(\d{1,18})\.(\d{1,12})@[^>]*>")


class NotADeliveryReport(ValueError):
    """The message is no RFC 3464 delivery status notification (an auto-reply, a person's mail)."""


@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a DSN."""

    recipient: str
    action: str  # failed, delayed, delivered, relayed, expanded
    status: str  # e.g. 5.1.1
    diagnostic: str

    @property
    def permanent_failure(self) -> bool:
        return self.action == "failed" and self.status.startswith("5")


@dataclass(frozen=True)
class DeliveryReport:
    """What a DSN says: about which of our messages (None: none we can name) and each recipient."""

    reference: str | None
    recipients: tuple[RecipientStatus, ...]


@dataclass(frozen=True)
class BounceOutcome:
    bounced: int = 0  # messages marked failed by this report
    already: int = 0  # permanent failures already known (the same DSN fed twice)
    ignored: int = 0  # delays, successes, recipients that are not the message's

    def summary(self) -> str:
        return f"{self.bounced} bounced, {self.already} already known, {self.ignored} ignored"


def parse_report(raw: bytes) -> DeliveryReport:
    message = BytesParser(policy=policy.compat32).parsebytes(raw)
    status_part = next((part for part in message.walk() if part.get_content_type() == "message/delivery-status"),
                       None)
    if status_part is None:
        raise NotADeliveryReport("no message/delivery-status part: not a delivery status notification (RFC 3464)")
    blocks = status_part.get_payload()
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise NotADeliveryReport("the delivery-status part has no per-recipient fields")
    recipients = tuple(status for status in (_recipient(block) for block in blocks[1:] if isinstance(block, Message))
                       if status is not None)
    if not recipients:
        raise NotADeliveryReport("the delivery-status part names no recipient")
    return DeliveryReport(reference=_reference(message), recipients=recipients)


def _recipient(block: Message) -> RecipientStatus | None:
    address = _typed_value(block.get("Final-Recipient")) or _typed_value(block.get("Original-Recipient"))
    if not address:
        return None
    return RecipientStatus(
        recipient=parseaddr(address)[1] or address,
        action=str(block.get("Action", "")).strip().lower(),
        status=str(block.get("Status", "")).strip().split(" ")[0],
        diagnostic=" ".join(_typed_value(block.get("Diagnostic-Code")).split())[:500],
    )


def _typed_value(field: object) -> str:
    """`rfc822; someone@example.com` -> `someone@example.com` (RFC 3464's address-type; value)."""
    if field is None:
        return ""
    text = str(field).strip()
    return text.split(";", 1)[1].strip() if ";" in text else text


def _returned_headers(message: Message) -> list[Message]:
    """The headers of the message that bounced, as the DSN returns them (whole message or headers only)."""
    found: list[Message] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            found.extend(item for item in (payload if isinstance(payload, list) else [payload])
                         if isinstance(item, Message))
        elif kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(part.get_payload())
            found.append(HeaderParser().parsestr(text))
    return found


def _reference(message: Message) -> str | None:
    for headers in _returned_headers(message):
        given = _REFERENCE.match(str(headers.get("X-Encours-Message", "")))
        if given:
            return f"{int(given[1])}.{int(given[2])}"
        named = _MESSAGE_ID.search(str(headers.get("Message-ID", "")))
        if named:
            return f"{int(named[1])}.{int(named[2])}"
    return None


def record_bounces(session: Session, raw: bytes) -> BounceOutcome:
    """Apply one DSN (NotADeliveryReport when it is none); the caller commits."""
    report = parse_report(raw)
    outbox = _our_message(session, report.reference)
    if outbox is None:
        log.warning("bounce report about no message of ours (reference %s): ignored", report.reference)
        return BounceOutcome(ignored=len(report.recipients))
    bounced = already = ignored = 0
    for status in report.recipients:
        if not status.permanent_failure or status.recipient.lower() != outbox.to_address.lower():
            ignored += 1
            continue
        if outbox.status == "failed" and (outbox.last_error or "").startswith("bounced"):
            already += 1
            continue
        error = f"bounced: {status.status} {status.diagnostic}".strip()
        outbox.status, outbox.last_error = "failed", error
        if outbox.contact_id is not None:
            contact = session.get(Contact, outbox.contact_id)
            if contact is not None and contact.email.lower() == outbox.to_address.lower():
                contact.email_failing_since, contact.email_failure = clock.now(), error
        log.warning("outbox: message %s bounced after delivery: %s", outbox.id, error,
                    extra={"outbox_message": outbox.id, "outcome": "bounced"})
        bounced += 1
    return BounceOutcome(bounced=bounced, already=already, ignored=ignored)


def _our_message(session: Session, reference: str | None) -> OutboxMessage | None:
    if reference is None:
        return None
    message_id = int(reference.split(".")[0])
    message = session.scalar(select(OutboxMessage).where(OutboxMessage.id == message_id).with_for_update())
    if message is None or message_reference(message.id, message.created_at) != reference:
        return None  # an id alone could be guessed; its creation second with it could not
    return message
