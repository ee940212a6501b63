"""Error reports to Sentry (or a Sentry-compatible service: GlitchTip, self-hosted Sentry) when
SENTRY_DSN is set; the `sentry` extra installs the SDK. Nothing personal leaves: no PII, no
request bodies or cookies, no local variables, and every string of an event scrubbed of
tokens, passwords, keys and card numbers (kernel.logs.mask_secrets) before it is sent."""

from __future__ import annotations

import logging
from typing import Any

from kernel.logs import mask_secrets
from kernel.settings import Settings, SettingsError

log = logging.getLogger("encours.errors")
# Headers that carry credentials: dropped whole, whatever their value looks like.
_SECRET_HEADERS = {"authorization", "cookie", "set-cookie", "x-csrf-token", "stripe-signature", "webhook-signature",
                   "proxy-authorization"}


def scrub(value: Any) -> Any:
    """`value` (an event or part of one) with every string masked and credential headers dropped."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {key: "[hidden]" if isinstance(key, str) and key.lower() in _SECRET_HEADERS else scrub(item)
                for key, item in value.items() if key != "cookies"}
    if isinstance(value, (list, tuple)):
        # Headers may come as [name, value] pairs.
        if len(value) == 2 and isinstance(value[0], str) and value[0].lower() in _SECRET_HEADERS:
            return [value[0], "[hidden]"]
        return [scrub(item) for item in value]
    return value


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)  # form fields: passwords, messages people wrote
        request.pop("cookies", None)
    scrubbed: dict[str, Any] = scrub(event)
    return scrubbed


def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    scrubbed: dict[str, Any] = scrub(crumb)
    return scrubbed


def init_error_reports(settings: Settings, *, component: str) -> bool:
    """Starts the Sentry SDK when SENTRY_DSN is set (in each process: serve's workers, the worker);
    True when it did. Without the SDK installed, a SettingsError says how to install it."""
    if settings.sentry_dsn is None:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.starlette import StarletteIntegration
    except ImportError:
        raise SettingsError("SENTRY_DSN is set but the Sentry SDK is not installed: pip install 'encours[sentry]'") \
            from None
    sentry_sdk.init(
        dsn=str(settings.sentry_dsn),
        environment=settings.sentry_environment,
        send_default_pii=False,
        include_local_variables=False,  # a frame's locals may hold a token or a password
        max_request_body_size="never",
        traces_sample_rate=None,  # errors only; tracing is Prometheus's job here
        integrations=[StarletteIntegration()],
        before_send=before_send,  # type: ignore[arg-type]
        before_breadcrumb=before_breadcrumb,  # type: ignore[arg-type]
    )
    sentry_sdk.set_tag("component", component)
    log.info("error reports go to Sentry (%s)", component)
    return True
