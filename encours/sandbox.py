"""Local stand-ins of the payment providers, run beside `encours demo` when no keys are set.

So a new user can try paying by card on one machine, the way django-payments' dummy provider
lets people try it. Never used with real keys: `encours demo` starts it only when no
STRIPE_* setting is in the environment, and the pages say "sandbox" (STRIPE_API_BASE is set).

Card: localstripe (PyPI, GPL, installed with the test tools) runs as its own process, bound to
127.0.0.1 with its pickle file off. Its Stripe.js stand-in renders the Card Element but its
`confirmCardPayment` never reads the card (it only plays 3-D Secure), and localstripe refuses
to confirm with a publishable key. So a small bridge, served from its own port, hands the
script to the page with two changes: the API base points at localstripe, and
`confirmCardPayment` posts the card to the bridge, which does with the secret key what Stripe
does (payment method, attach, confirm); a card needing 3-D Secure then goes through
localstripe's own dialog. localstripe signs the webhooks and posts them to /webhooks/stripe.

Instant bank transfer and direct debit: our GoCardless stand-in (tests/fakes/gocardless_server.py,
run as its own process from a source checkout, as `make demo` has) speaks GoCardless's wire
format, serves an authorisation page to click through, moves payments and mandates on by
itself and posts signed webhooks to /webhooks/gocardless.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("encours.sandbox")

# Serves localstripe's aiohttp app on a socket bound by the parent (no port race), without
# the pickle file it would otherwise write to /tmp after every request.
LOCALSTRIPE_RUNNER = """
import logging, socket, sys
from aiohttp import web
from localstripe import resources, server
resources.Store.dump_to_disk = lambda self: None
sock = socket.socket(fileno=int(sys.argv[1]))
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
web.run_app(server.app, sock=sock, print=None, access_log=None)
"""

STAND_IN_BASE = """const LOCALSTRIPE_BASE_API = (function () {"""

BRIDGE_JS = """
;(function () {
  var standIn = window.Stripe;
  window.Stripe = function (key, options) {
    var stripe = standIn(key, options);
    var authenticate = stripe.confirmCardPayment;
    stripe.confirmCardPayment = async function (clientSecret, data) {
      var element = data && data.payment_method && data.payment_method.card;
      var card = element && element.value && element.value.card;
      if (!card || !card.number) { return {error: {message: "Your card number is incomplete."}}; }
      var response = await fetch(%(confirm_url)s, {method: "POST", headers: {"Content-Type": "text/plain"},
                                                   body: JSON.stringify({client_secret: clientSecret, card: card})});
      var intent = await response.json();
      if (intent.error) { return {error: intent.error}; }
      if (intent.status === "requires_action") { return authenticate(clientSecret, data); }
      return {paymentIntent: intent};
    };
    return stripe;
  };
})();
"""


def _request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()  # type: ignore[no-any-return]


@dataclass
class Sandbox:
    """What runs beside the demo; `settings` are the environment variables pointing at it."""

    settings: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[ThreadingHTTPServer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workdir: tempfile.TemporaryDirectory[str] | None = None

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for process in self.processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.workdir is not None:
            self.workdir.cleanup()


class _StripeBridge(BaseHTTPRequestHandler):
    api_url: str = ""
    secret_key: str = ""
    page_origin: str = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("stripe bridge: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", self.page_origin)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path != "/js.stripe.com/v3/":
            self._send(404, b"not found", "text/plain")
            return
        script = _request("GET", f"{self.api_url}/js.stripe.com/v3/").decode()
        script = script.replace(STAND_IN_BASE, f"const LOCALSTRIPE_BASE_API = {json.dumps(self.api_url)};\n"
                                               "const LOCALSTRIPE_UNUSED = (function () {", 1)
        host, port = self.server.server_address[:2]
        script += BRIDGE_JS % {"confirm_url": json.dumps(f"http://{host}:{port}/confirm")}
        self._send(200, script.encode(), "application/javascript")

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/confirm":
            self._send(404, b"not found", "text/plain")
            return
        try:
            data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            card = data["card"]
            intent_id = str(data["client_secret"]).split("_secret_")[0]
            method = self._api("/v1/payment_methods", {"type": "card", "card": {
                "number": str(card["number"]).replace(" ", ""), "exp_month": str(card.get("exp_month", "")),
                "exp_year": str(card.get("exp_year", "")), "cvc": str(card.get("cvc", ""))}})
            self._api(f"/v1/payment_intents/{intent_id}", {"payment_method": method["id"]})
            intent = self._api(f"/v1/payment_intents/{intent_id}/confirm", {})
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            intent = {"error": body.get("error") or {"message": f"HTTP {error.code}"}}
        except (KeyError, TypeError, ValueError):
            intent = {"error": {"message": "Your card number is incomplete."}}
        self._send(200, json.dumps(intent).encode(), "application/json")

    def _api(self, path: str, data: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {self.secret_key}", "Content-Type": "application/json"}
        return json.loads(_request("POST", f"{self.api_url}{path}", json.dumps(data).encode(), headers))


def start(base_url: str) -> Sandbox:
    """Start what is installed; a missing stand-in leaves its method out and says so in `notes`."""
    sandbox = Sandbox(workdir=tempfile.TemporaryDirectory(prefix="encours-sandbox-"))
    try:
        _start_stripe(sandbox, base_url)
        _start_gocardless(sandbox, base_url)
    except Exception:
        sandbox.stop()
        raise
    return sandbox


def _start_stripe(sandbox: Sandbox, base_url: str) -> None:
    if importlib.util.find_spec("localstripe") is None:
        sandbox.notes.append("card: localstripe is not installed (make demo installs it), so no card payments")
        return
    assert sandbox.workdir is not None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    api_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    output = open(Path(sandbox.workdir.name) / "localstripe.log", "wb")
    process = subprocess.Popen([sys.executable, "-c", LOCALSTRIPE_RUNNER, str(listener.fileno())],
                               pass_fds=[listener.fileno()], cwd=sandbox.workdir.name, stdout=output,
                               stderr=subprocess.STDOUT)
    listener.close()
    sandbox.processes.append(process)
    deadline = time.monotonic() + 20
    while True:
        try:
            _request("GET", f"{api_url}/js.stripe.com/v3/")
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("localstripe did not start; see " + output.name) from None
            time.sleep(0.05)
    secret_key = "sk_test_encours_sandbox"
    webhook_secret = f"whsec_{secrets.token_hex(16)}"
    body = json.dumps({"url": f"{base_url}/webhooks/stripe", "secret": webhook_secret}).encode()
    _request("POST", f"{api_url}/_config/webhooks/encours", body, {"Content-Type": "application/json"})

    origin = base_url.split("/", 3)
    handler = type("StripeBridge", (_StripeBridge,), {"api_url": api_url, "secret_key": secret_key,
                                                      "page_origin": "/".join(origin[:3])})
    bridge = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=bridge.serve_forever, name="stripe-bridge", daemon=True).start()
    sandbox.servers.append(bridge)
    bridge_url = f"http://127.0.0.1:{bridge.server_address[1]}"
    sandbox.settings.update({
        "STRIPE_SECRET_KEY": secret_key,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_encours_sandbox",
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "STRIPE_API_BASE": api_url,
        "STRIPE_JS_URL": f"{bridge_url}/js.stripe.com/v3/",
    })
    sandbox.notes.append(f"card: localstripe at {api_url} (test card 4242 4242 4242 4242, any future date, any CVC)")


def _start_gocardless(sandbox: Sandbox, base_url: str) -> None:
    source = Path(__file__).resolve().parents[1]
    if not (source / "tests" / "fakes" / "gocardless_server.py").exists():
        sandbox.notes.append("instant transfer and direct debit: the GoCardless stand-in comes with the source "
                             "checkout (tests/fakes), so they are not offered")
        return
    assert sandbox.workdir is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token, secret = "sandbox_encours_demo", f"gc_{secrets.token_hex(16)}"
    output = open(Path(sandbox.workdir.name) / "gocardless.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.gocardless_server", "--port", str(port), "--token", token,
         "--secret", secret, "--webhook-url", f"{base_url}/webhooks/gocardless"],
        cwd=source, stdout=output, stderr=subprocess.STDOUT,
    )
    sandbox.processes.append(process)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except urllib.error.HTTPError:
            break  # it answers (401 without a token): it is up
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the GoCardless stand-in did not start; see " + output.name) from None
            time.sleep(0.05)
    sandbox.settings.update({"GOCARDLESS_ACCESS_TOKEN": token, "GOCARDLESS_WEBHOOK_SECRET": secret,
                             "GOCARDLESS_BASE_URL": url})
    sandbox.notes.append(f"instant transfer and direct debit: GoCardless stand-in at {url} "
                         "(click through its authorisation page)")


PROVIDER_SETTINGS = ("STRIPE_SECRET_KEY", "GOCARDLESS_ACCESS_TOKEN")
