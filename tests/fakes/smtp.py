"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives, for tests.

The `smtp_server` fixture is available everywhere (tests/conftest.py loads this module as a plugin):

    def test_x(smtp_server: CapturingSMTP) -> None:
        smtp_server.fail_rcpt("450 4.2.1 Mailbox busy")   # next RCPT answers 450, then back to 250
        smtp_server.hold("ap@client.test")   # the next DATA to it waits (held.wait()) until release()
        ... smtp_server.url ... smtp_server.messages[0].message["Subject"] ...
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    peer: tuple[str, int] | None = None  # the client's address and port: which process sent it
    received_at: float = 0.0  # time.monotonic() when it was accepted

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "no text/plain part"
        return str(part.get_content()).replace("\r\n", "\n")

    def html(self) -> str | None:
        part = self.message.get_body(preferencelist=("html",))
        return None if part is None else str(part.get_content()).replace("\r\n", "\n")


class _Handler:
    def __init__(self, server: CapturingSMTP) -> None:
        self.server = server

    async def handle_EHLO(
        self, smtp: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # with this hook, aiosmtpd leaves it to us
        with self.server._lock:
            self.server.sessions += 1
        return responses

    async def handle_RCPT(self, smtp: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        reply = self.server._next_reply("rcpt")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        server = self.server
        with server._lock:
            held = server._hold is not None and server._hold in envelope.rcpt_tos
            if held:
                server._hold, server.held_peer = None, tuple(session.peer[:2])
        if held:
            server.held.set()
            while not server._released.is_set():  # other sessions go on meanwhile
                await asyncio.sleep(0.02)
            return "451 4.3.0 Held by the test, not accepted"
        reply = server._next_reply("data")
        if reply:
            return reply
        raw = envelope.original_content or envelope.content
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        with server._lock:
            server.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message,
                                            tuple(session.peer[:2]), time.monotonic()))
        return "250 Message accepted for delivery"


class _Controller(Controller):
    def _trigger_server(self) -> None:
        # Bound to port 0: learn the port the system chose before aiosmtpd connects to itself.
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class CapturingSMTP:
    """Accepts every message unless told to answer RCPT or DATA with another reply."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.messages: list[Received] = []
        self.logins: list[str] = []
        self.sessions = 0  # EHLOs seen: one per client connection
        self._lock = threading.Lock()
        self._replies: dict[str, list[str]] = {"rcpt": [], "data": []}
        self._credentials = credentials
        self._hold: str | None = None
        self._released = threading.Event()
        self.held = threading.Event()  # set once the held message's DATA arrived
        self.held_peer: tuple[str, int] | None = None
        auth: dict[str, Any] = {}
        if credentials is not None:
            auth = {"authenticator": self._authenticate, "auth_require_tls": False}
        self._controller = _Controller(_Handler(self), hostname=HOST, port=0, server_hostname="fake-smtp.test", **auth)

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    def fail_rcpt(self, reply: str, times: int = 1) -> None:
        """Answer the next `times` RCPT TO commands with `reply`, e.g. "550 5.1.1 No such user"."""
        with self._lock:
            self._replies["rcpt"].extend([reply] * times)

    def fail_data(self, reply: str, times: int = 1) -> None:
        """Answer the end of the next `times` DATA commands with `reply`."""
        with self._lock:
            self._replies["data"].extend([reply] * times)

    def hold(self, address: str) -> None:
        """Keep the next message to `address` waiting at DATA (its sender blocked, the server
        serving others) until `release()`, which then refuses it with a 451; nothing is kept."""
        with self._lock:
            self._hold = address
        self._released.clear()
        self.held.clear()

    def release(self) -> None:
        self._released.set()

    def _next_reply(self, command: str) -> str | None:
        with self._lock:
            replies = self._replies[command]
            return replies.pop(0) if replies else None

    def _authenticate(self, smtp: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert self._credentials is not None
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if (login, password) == self._credentials:
                self.logins.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> CapturingSMTP:
        self._controller.start()
        return self

    def stop(self) -> None:
        self.release()
        self._controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[CapturingSMTP]:
    server = CapturingSMTP().start()
    yield server
    server.stop()
