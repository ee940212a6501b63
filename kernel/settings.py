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
    # Peers whose X-Forwarded-For / -Proto are believed (comma-separated addresses or networks, or "*").
    forwarded_allow_ips: str = "127.0.0.1"

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
        return cls(
            database_url=config("ENCOURS_DATABASE_URL", default=DEFAULT_DATABASE_URL),
            secret_key=secret,
            base_url=base_url,
            smtp_url=config("ENCOURS_SMTP_URL", default="smtp://127.0.0.1:25"),
            mail_from=config("ENCOURS_MAIL_FROM", default="Encours <no-reply@encours.invalid>"),
            stripe_secret_key=config("STRIPE_SECRET_KEY", cast=Secret, default=None),
            stripe_publishable_key=config("STRIPE_PUBLISHABLE_KEY", default=None),
            stripe_webhook_secret=config("STRIPE_WEBHOOK_SECRET", cast=Secret, default=None),
            stripe_api_base=config("STRIPE_API_BASE", default=None),
            stripe_js_url=config("STRIPE_JS_URL", default="https://js.stripe.com/v3/"),
            gocardless_access_token=config("GOCARDLESS_ACCESS_TOKEN", cast=Secret, default=None),
            gocardless_webhook_secret=config("GOCARDLESS_WEBHOOK_SECRET", cast=Secret, default=None),
            gocardless_base_url=config("GOCARDLESS_BASE_URL", default=None),
            link_throttle_max=config("ENCOURS_LINK_THROTTLE_MAX", cast=int, default=10),
            link_throttle_window_seconds=config("ENCOURS_LINK_THROTTLE_WINDOW", cast=int, default=600),
            storage_dir=config("ENCOURS_STORAGE_DIR", default="var/storage"),
            forwarded_allow_ips=config("ENCOURS_FORWARDED_ALLOW_IPS", default="127.0.0.1"),
        )


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
    return config("ENCOURS_DATABASE_URL", default=DEFAULT_DATABASE_URL)
