"""The SMTP server setting (`ENCOURS_SMTP_URL`), parsed and checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from kernel.settings import SettingsError

DEFAULT_PORTS = {("smtp", False): 25, ("smtp", True): 587, ("smtps", False): 465}
TRUE_FLAGS = ("1", "true", "yes", "on")
FALSE_FLAGS = ("0", "false", "no", "off", "")


class SMTPConfigError(SettingsError, ValueError):
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
    # MAIL FROM is the company's own address when it sends under it (DMARC alignment through SPF),
    # instead of ours (bounces come back to us): see mail.outbox.envelope_sender.
    align_envelope: bool = False


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
    unknown = sorted(set(query) - {"starttls", "timeout", "align_envelope"})
    if unknown:
        raise SMTPConfigError(
            f"ENCOURS_SMTP_URL has unknown option(s): {', '.join(unknown)} (known: starttls, timeout, align_envelope)"
        )
    starttls = _flag(query, "starttls")
    align_envelope = _flag(query, "align_envelope")
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
        align_envelope=align_envelope,
    )


def _flag(query: dict[str, list[str]], name: str) -> bool:
    value = query.get(name, ["0"])[-1].lower()
    if value not in TRUE_FLAGS + FALSE_FLAGS:
        raise SMTPConfigError(f"ENCOURS_SMTP_URL: {name} must be 1 or 0, got {value!r}")
    return value in TRUE_FLAGS
