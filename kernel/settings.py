"""All settings, read once from the environment (and `.env`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from starlette.config import Config
from starlette.datastructures import Secret

DEFAULT_DATABASE_URL = "sqlite:///encours.sqlite3"


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    secret_key: Secret
    base_url: str
    smtp_url: str
    mail_from: str
    stripe_secret_key: Secret | None
    stripe_publishable_key: str | None
    stripe_webhook_secret: Secret | None
    stripe_api_base: str | None
    stripe_js_url: str
    gocardless_access_token: Secret | None
    gocardless_webhook_secret: Secret | None
    gocardless_base_url: str | None
    link_throttle_max: int
    link_throttle_window_seconds: int
    storage_dir: str
    # How long the worker hides a message it claimed (see mail.outbox.deliver_due).
    outbox_lease_seconds: int = 600
    # Peers whose X-Forwarded-For / -Proto are believed (comma-separated addresses or networks, or "*").
    forwarded_allow_ips: str = "127.0.0.1"
    # Requests each ERP API key may make per minute (one window shared by every process).
    api_requests_per_minute: int = 600
    # Outgoing webhooks: to private or loopback addresses only when allowed (tests, an ERP on the LAN).
    webhook_allow_private: bool = False
    webhook_timeout_seconds: int = 10
    webhook_max_attempts: int = 8
    # How long an Idempotency-Key's first reply is kept for replays.
    api_idempotency_hours: int = 24

    @property
    def https(self) -> bool:
        return self.base_url.startswith("https://")

    @classmethod
    def from_config(cls, config: Config) -> "Settings":
        secret = config("ENCOURS_SECRET_KEY", cast=Secret, default=None)
        if secret is None or len(str(secret)) < 16:
            raise SettingsError(
                "ENCOURS_SECRET_KEY is missing or shorter than 16 characters; "
                "set it to a long random string (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        base_url = config("ENCOURS_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise SettingsError(f"ENCOURS_BASE_URL must start with http:// or https://, got {base_url!r}")
        from kernel.smtp import parse_smtp_url  # it raises SettingsErrors itself

        smtp_url = config("ENCOURS_SMTP_URL", default="smtp://127.0.0.1:25")
        parse_smtp_url(smtp_url)
        return cls(
            database_url=_database_url(config),
            secret_key=secret,
            base_url=base_url,
            smtp_url=smtp_url,
            mail_from=config("ENCOURS_MAIL_FROM", default="Encours <no-reply@encours.invalid>"),
            stripe_secret_key=config("STRIPE_SECRET_KEY", cast=Secret, default=None),
            stripe_publishable_key=config("STRIPE_PUBLISHABLE_KEY", default=None),
            stripe_webhook_secret=config("STRIPE_WEBHOOK_SECRET", cast=Secret, default=None),
            stripe_api_base=config("STRIPE_API_BASE", default=None),
            stripe_js_url=config("STRIPE_JS_URL", default="https://js.stripe.com/v3/"),
            gocardless_access_token=config("GOCARDLESS_ACCESS_TOKEN", cast=Secret, default=None),
            gocardless_webhook_secret=config("GOCARDLESS_WEBHOOK_SECRET", cast=Secret, default=None),
            gocardless_base_url=config("GOCARDLESS_BASE_URL", default=None),
            link_throttle_max=_whole_number(config, "ENCOURS_LINK_THROTTLE_MAX", default=10, minimum=1),
            link_throttle_window_seconds=_whole_number(config, "ENCOURS_LINK_THROTTLE_WINDOW", default=600, minimum=1),
            storage_dir=config("ENCOURS_STORAGE_DIR", default="var/storage"),
            # At least the time one message may take (connect, TLS, log in, send: SMTP timeouts).
            outbox_lease_seconds=_whole_number(config, "ENCOURS_OUTBOX_LEASE", default=600, minimum=10),
            forwarded_allow_ips=config("ENCOURS_FORWARDED_ALLOW_IPS", default="127.0.0.1"),
            api_requests_per_minute=_whole_number(config, "ENCOURS_API_RATE_PER_MINUTE", default=600, minimum=1),
            webhook_allow_private=_flag(config, "ENCOURS_WEBHOOK_ALLOW_PRIVATE"),
            webhook_timeout_seconds=_whole_number(config, "ENCOURS_WEBHOOK_TIMEOUT", default=10, minimum=1),
            webhook_max_attempts=_whole_number(config, "ENCOURS_WEBHOOK_MAX_ATTEMPTS", default=8, minimum=1),
            api_idempotency_hours=_whole_number(config, "ENCOURS_API_IDEMPOTENCY_HOURS", default=24, minimum=1),
        )


def _flag(config: Config, name: str) -> bool:
    text = str(config(name, default="") or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {text!r}")


def _whole_number(config: Config, name: str, *, default: int, minimum: int) -> int:
    raw = config(name, default=None)
    if raw is None or not str(raw).strip():
        return default
    text = str(raw).strip()
    if not (text.isascii() and text.isdigit()):
        raise SettingsError(f"{name} must be a whole number, got {text!r}")
    if int(text) < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {text}")
    return int(text)


def check_database_url(url: str) -> str:
    """`url` when SQLAlchemy can use it with the drivers Encours ships; else a SettingsError
    saying what to write instead."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise SettingsError(
            f"ENCOURS_DATABASE_URL is not a database URL: {_hide_password(url)!r}; write "
            "sqlite:///path/to/encours.sqlite3 or postgresql+psycopg://user:password@host:5432/dbname"
        ) from None
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgres+psycopg"):
        suggestion = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=True)
        raise SettingsError(
            f"ENCOURS_DATABASE_URL starts with {parsed.drivername}://, which Encours cannot use; "
            f"write postgresql+psycopg://... instead: {suggestion}"
        )
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise SettingsError(
            f"ENCOURS_DATABASE_URL uses {parsed.drivername}://; Encours runs on sqlite:/// or postgresql+psycopg://"
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise SettingsError(f"ENCOURS_DATABASE_URL has an invalid port {parsed.port}")
    return url


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def _database_url(config: Config) -> str:
    return check_database_url(config("ENCOURS_DATABASE_URL", default=DEFAULT_DATABASE_URL))


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | None = ".env") -> Settings:
    """Settings from `environ` (default: the process environment) over `env_file`."""
    if environ is None:
        config = Config(env_file if env_file and os.path.exists(env_file) else None)
    else:
        config = Config(environ=dict(environ))
    return Settings.from_config(config)


def database_url_from_env(env_file: str | None = ".env") -> str:
    """The database URL alone, for commands that need no secret (db upgrade, imports)."""
    config = Config(env_file if env_file and os.path.exists(env_file) else None)
    return _database_url(config)


def webhook_allow_private_from_env(env_file: str | None = ".env") -> bool:
    """ENCOURS_WEBHOOK_ALLOW_PRIVATE alone, for commands that need no secret (encours webhook add)."""
    config = Config(env_file if env_file and os.path.exists(env_file) else None)
    return _flag(config, "ENCOURS_WEBHOOK_ALLOW_PRIVATE")
