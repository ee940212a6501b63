"""Signed cookie sessions, as a lean pure ASGI middleware.

The cookie has Starlette's `SessionMiddleware` format (`base64(json)` signed by itsdangerous'
`TimestampSigner` with the secret key), so sessions opened before an upgrade stay valid. What
differs is the cost: the cookie is parsed from the raw header bytes, the `Set-Cookie` attributes
are built once at start-up, a session that was not changed is neither re-signed nor sent back,
and paths that never use a session (webhooks: providers sign them) get none at all.
"""

from __future__ import annotations

import json
from base64 import b64decode, b64encode
from typing import Any, Literal

from itsdangerous import BadSignature, TimestampSigner, want_bytes
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Session(dict[str, Any]):
    """A dict that remembers whether it was used (`request.session`) or changed, as Starlette's does."""

    accessed = False
    modified = False

    def mark_accessed(self) -> None:  # called by starlette's `Request.session`
        self.accessed = True

    def __setitem__(self, key: str, value: Any) -> None:
        self.accessed = self.modified = True
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.accessed = self.modified = True
        super().__delitem__(key)

    def clear(self) -> None:
        self.accessed = self.modified = True
        super().clear()

    def pop(self, key: str, *default: Any) -> Any:
        self.accessed = True
        if super().__contains__(key):
            self.modified = True
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Any]:
        self.accessed = self.modified = True
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        if not super().__contains__(key):
            self.modified = True
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.accessed = self.modified = True
        super().update(*args, **kwargs)


VARY_COOKIE = (b"vary", b"Cookie")


class _Signer(TimestampSigner):
    """Derives its key once per secret, not on every sign and check (a hash each time)."""

    def __init__(self, secret_key: str) -> None:
        super().__init__(secret_key)
        self._keys = {key: super(_Signer, self).derive_key(key) for key in self.secret_keys}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        return self._keys.get(key) or super().derive_key(key)


class SessionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        secret_key: str,
        session_cookie: str = "session",
        max_age: int = 14 * 24 * 60 * 60,
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        exempt_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.signer = _Signer(str(secret_key))
        self.max_age = max_age
        self.exempt_prefixes = exempt_prefixes
        self.name = session_cookie.encode("latin-1")
        flags = f"; path=/; Max-Age={max_age}; httponly; samesite={same_site}" + ("; secure" if https_only else "")
        self.set_suffix = flags.encode("latin-1")
        self.clear_value = (f"{session_cookie}=null; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly; "
                            f"samesite={same_site}" + ("; secure" if https_only else "")).encode("latin-1")

    def _cookie(self, scope: Scope) -> bytes | None:
        """Our cookie's value from the raw Cookie header(s); the other cookies are left unparsed."""
        name = self.name
        for key, value in scope["headers"]:
            if key == b"cookie" and name in value:
                for part in value.split(b";"):
                    cookie_name, _, cookie_value = part.strip().partition(b"=")
                    if cookie_name == name:
                        return bytes(cookie_value).strip(b'"')
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        raw = self._cookie(scope)
        payload = b""  # the signed payload as it came, to tell an unchanged session
        session = Session()
        if raw:
            try:
                payload = self.signer.unsign(raw, max_age=self.max_age)
                loaded = json.loads(b64decode(payload))
                if isinstance(loaded, dict):
                    dict.update(session, loaded)
                else:
                    payload = b""
            except (BadSignature, ValueError):
                payload = b""
        scope["session"] = session

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and session.accessed:
                headers = list(message.get("headers", ()))
                headers.append(VARY_COOKIE)
                if session.modified:
                    if session:
                        data = b64encode(json.dumps(session).encode("utf-8"))
                        if data != payload:  # the same content again needs no new signature
                            headers.append((b"set-cookie", self.name + b"=" + self.signer.sign(data) + self.set_suffix))
                    elif payload:
                        headers.append((b"set-cookie", self.clear_value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_cookie)
