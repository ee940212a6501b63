"""A secret the back-office just created, shown once: on the first whole page after the POST that
created it (post/redirect/get), to the staff user who created it. What the ERP API keys page and
the ERP webhook endpoints page share: the session carries only the id of what is to be shown
(never the secret, nor a URL), a reload shows nothing and creates nothing, and the service
function that reads the secret gives it once, whatever the session says (a cookie sent again, two
tabs): `ledger.api_keys.reveal_once`, `ledger.webhook_endpoints.reveal_secret_once`. The page
shows it with `admin/_reveal.html`'s `shown_once`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request


@dataclass(frozen=True)
class ShownOnce:
    """The session's slot for one page's secret to show."""

    session_key: str

    def hold(self, request: Request, reveal_id: int) -> None:
        """After the POST: the page's next whole load shows what `reveal_id` names."""
        request.session[self.session_key] = reveal_id

    def take(self, request: Request) -> int | None:
        """The id held for this page, taken out of the session; None for an htmx request (a part of
        the page, which would not show it) and when nothing is held."""
        if request.headers.get("HX-Request") == "true":
            return None
        held = request.session.pop(self.session_key, None)
        return held if isinstance(held, int) and not isinstance(held, bool) else None
