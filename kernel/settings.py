"""All settings, read once from the environment (and `.env`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

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
    # How long a worker's claim on a company's daily reminder run lasts without news (dunning.claims);
    # renewed between batches, so it need only outlast planning one company.
    reminder_lease_seconds: int = 900
    # Peers whose X-Forwarded-For / -Proto are believed (comma-separated addresses or networks, or "*").
    forwarded_allow_ips: str = "127.0.0.1"
    # Requests each ERP API key may make per minute (one window shared by every process).
    api_requests_per_minute: int = 600
    # The largest original invoice PDF an ERP may send (api PUT /invoices/{number}/pdf); 413 over it.
    api_pdf_max_bytes: int = 10 * 1024 * 1024
    # Days before the worker purges personal by-products (ledger.personal_data.purge); 0 keeps them.
    retain_link_opens_days: int = 395  # link opens' IP address and browser (13 months)
    retain_email_bodies_days: int = 90  # sent emails' bodies (they carried the magic links)
    retain_webhook_bodies_days: int = 400  # processed provider events' raw bodies
    # Days before the worker deletes rows that would otherwise grow for ever (ledger.personal_data.delete_expired).
    retain_sent_emails_days: int = 400  # sent outbox rows (their reminders stay)
    retain_webhook_events_days: int = 400  # processed provider events
    # Uploaded files: "local" (storage_dir, one machine) or "s3" (a bucket several machines share).
    storage_backend: str = "local"
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None  # MinIO, Ceph, Scaleway…; none: AWS
    s3_region: str | None = None
    s3_access_key_id: Secret | None = None  # none: boto3's own chain (environment, instance role)
    s3_secret_access_key: Secret | None = None
    # Logs: "text" (one readable line per event) or "json" (one JSON object per line).
    log_format: str = "text"
    log_level: str = "INFO"
    # Bearer token /metrics asks for; none: /metrics answers 404 (see encours.metrics).
    metrics_token: Secret | None = None
    sentry_dsn: Secret | None = None
    sentry_environment: str | None = None
    # Bearer token the mail relay's bounce reports (DSNs) are posted with; none: the endpoint answers 404.
    bounce_token: Secret | None = None
    # Outgoing webhooks: to private or loopback addresses only when allowed (tests, an ERP on the LAN).
    webhook_allow_private: bool = False
    webhook_timeout_seconds: int = 10
    webhook_max_attempts: int = 8
    # A claimed delivery stays hidden from other workers for the timeout plus this margin (api.webhooks.lease).
    webhook_lease_margin_seconds: int = 30
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
            reminder_lease_seconds=_whole_number(config, "ENCOURS_REMINDER_LEASE", default=900, minimum=10),
            forwarded_allow_ips=config("ENCOURS_FORWARDED_ALLOW_IPS", default="127.0.0.1"),
            api_requests_per_minute=_whole_number(config, "ENCOURS_API_RATE_PER_MINUTE", default=600, minimum=1),
            api_pdf_max_bytes=_whole_number(config, "ENCOURS_API_PDF_MAX_BYTES", default=10 * 1024 * 1024,
                                            minimum=1024),
            retain_link_opens_days=_whole_number(config, "ENCOURS_RETAIN_LINK_OPENS_DAYS", default=395, minimum=0),
            retain_email_bodies_days=_whole_number(config, "ENCOURS_RETAIN_EMAIL_BODIES_DAYS", default=90, minimum=0),
            retain_webhook_bodies_days=_whole_number(config, "ENCOURS_RETAIN_WEBHOOK_BODIES_DAYS", default=400,
                                                     minimum=0),
            retain_sent_emails_days=_whole_number(config, "ENCOURS_RETAIN_SENT_EMAILS_DAYS", default=400, minimum=0),
            retain_webhook_events_days=_whole_number(config, "ENCOURS_RETAIN_WEBHOOK_EVENTS_DAYS", default=400,
                                                     minimum=0),
            **_storage(config),
            log_format=_choice(config, "ENCOURS_LOG_FORMAT", ("text", "json"), default="text"),
            log_level=_choice(config, "ENCOURS_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO",
                              upper=True),
            metrics_token=_token(config, "ENCOURS_METRICS_TOKEN"),
            sentry_dsn=_sentry_dsn(config),
            sentry_environment=config("SENTRY_ENVIRONMENT", default=None) or None,
            bounce_token=_token(config, "ENCOURS_BOUNCE_TOKEN"),
            webhook_allow_private=_flag(config, "ENCOURS_WEBHOOK_ALLOW_PRIVATE"),
            webhook_timeout_seconds=_whole_number(config, "ENCOURS_WEBHOOK_TIMEOUT", default=10, minimum=1),
            webhook_max_attempts=_whole_number(config, "ENCOURS_WEBHOOK_MAX_ATTEMPTS", default=8, minimum=1),
            webhook_lease_margin_seconds=_whole_number(config, "ENCOURS_WEBHOOK_LEASE_MARGIN", default=30, minimum=5),
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


def _choice(config: Config, name: str, allowed: tuple[str, ...], *, default: str, upper: bool = False) -> str:
    raw = str(config(name, default="") or "").strip()
    value = (raw.upper() if upper else raw.lower()) or default
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return value


def _token(config: Config, name: str) -> Secret | None:
    """An access token someone sends us: unset, or long enough not to be guessed."""
    raw = str(config(name, default="") or "").strip()
    if not raw:
        return None
    if len(raw) < 16:
        raise SettingsError(f"{name} must be at least 16 characters long (a random string), or unset")
    return Secret(raw)


def _storage(config: Config) -> dict[str, Any]:
    backend = _choice(config, "ENCOURS_STORAGE", ("local", "s3"), default="local")
    values: dict[str, Any] = {"storage_backend": backend}
    if backend != "s3":
        return values
    bucket = str(config("ENCOURS_S3_BUCKET", default="") or "").strip()
    if not bucket:
        raise SettingsError("ENCOURS_STORAGE=s3 needs ENCOURS_S3_BUCKET (the bucket's name)")
    endpoint = str(config("ENCOURS_S3_ENDPOINT_URL", default="") or "").strip() or None
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise SettingsError(f"ENCOURS_S3_ENDPOINT_URL must start with http:// or https://, got {endpoint!r}")
    key_id = config("ENCOURS_S3_ACCESS_KEY_ID", cast=Secret, default=None)
    secret = config("ENCOURS_S3_SECRET_ACCESS_KEY", cast=Secret, default=None)
    if bool(key_id and str(key_id)) != bool(secret and str(secret)):
        raise SettingsError("ENCOURS_S3_ACCESS_KEY_ID and ENCOURS_S3_SECRET_ACCESS_KEY go together: set both or neither")
    return values | {
        "s3_bucket": bucket,
        "s3_prefix": str(config("ENCOURS_S3_PREFIX", default="") or "").strip(),
        "s3_endpoint_url": endpoint,
        "s3_region": str(config("ENCOURS_S3_REGION", default="") or "").strip() or None,
        "s3_access_key_id": key_id if key_id and str(key_id) else None,
        "s3_secret_access_key": secret if secret and str(secret) else None,
    }


def _sentry_dsn(config: Config) -> Secret | None:
    raw = str(config("SENTRY_DSN", default="") or "").strip()
    if not raw:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.username or not parts.hostname or not parts.path.strip("/"):
        raise SettingsError("SENTRY_DSN is not a DSN; write https://PUBLIC_KEY@HOST/PROJECT_ID (as Sentry shows it)")
    return Secret(raw)


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


def clock_file_from_env(env_file: str | None = ".env") -> str | None:
    """ENCOURS_CLOCK_FILE: a file whose moment every process takes as "now" (kernel.clock; tests only)."""
    config = Config(env_file if env_file and os.path.exists(env_file) else None)
    return str(config("ENCOURS_CLOCK_FILE", default="") or "") or None


def webhook_allow_private_from_env(env_file: str | None = ".env") -> bool:
    """ENCOURS_WEBHOOK_ALLOW_PRIVATE alone, for commands that need no secret (encours webhook add)."""
    config = Config(env_file if env_file and os.path.exists(env_file) else None)
    return _flag(config, "ENCOURS_WEBHOOK_ALLOW_PRIVATE")
