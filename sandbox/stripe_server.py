"""localstripe plus a Stripe.js bridge, as one process `encours demo` runs beside the server.

localstripe (GPL, in the `demo` extra) runs in a process this one starts. Its Stripe.js stand-in
renders the Card Element but its `confirmCardPayment` never reads the card (it only plays 3-D
Secure), and localstripe refuses to confirm with a publishable key. So the bridge, served from its
own port, hands the script to the page with two changes: the API base points at localstripe, and
`confirmCardPayment` posts the card to the bridge, which does with the secret key what Stripe does
(payment method, attach, confirm); a card needing 3-D Secure then goes through localstripe's own
dialog. localstripe signs the webhooks and posts them to the demo's /webhooks/stripe.

    python -m sandbox.stripe_server --webhook-url http://127.0.0.1:8000/webhooks/stripe

prints one JSON line, the STRIPE_* settings pointing at it, then serves until SIGTERM/SIGINT or
until its parent (`--parent-pid`, by default the process that started it) is gone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import secrets
import signal
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from sandbox.localstripe_server import LocalStripe, http_request, start_localstripe, stop_localstripe
from sandbox.parent_watch import exit_with_parent

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


# Stripe's test cards that its API declines on the card itself (`card_declined`, decline code
# `generic_decline` for 4000 0000 0000 0002). localstripe declines these only when a card is
# attached to a customer, not when a PaymentIntent is confirmed: the bridge attaches first.
DECLINED_ON_ATTACH = ("4000000000000002", "4000000000009995", "4000000000009987", "4000000000009979",
                      "4000000000000069", "4000000000000127", "4000000000000119")


# What Stripe answers for each of them (https://docs.stripe.com/testing#declined-payments): localstripe
# says only `card_declined`, so the bridge gives the documented code and decline code.
DECLINES = {
    "4000000000000002": {"code": "card_declined", "decline_code": "generic_decline"},
    "4000000000009995": {"code": "card_declined", "decline_code": "insufficient_funds"},
    "4000000000009987": {"code": "card_declined", "decline_code": "lost_card"},
    "4000000000009979": {"code": "card_declined", "decline_code": "stolen_card"},
    "4000000000000069": {"code": "expired_card"},
    "4000000000000127": {"code": "incorrect_cvc"},
    "4000000000000119": {"code": "processing_error"},
}


class Declined(Exception):
    """The card was declined: `error` is Stripe's error object, as Stripe.js hands it to the page."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


def card_year(value: Any) -> str:
    """The expiry year as typed, two or four digits: localstripe's Card Element prefixes "20" to
    whatever it is given, so "2034" arrives as "202034"."""
    year = str(value or "")
    return year[2:] if len(year) == 6 and year.startswith("20") else year


def confirm_card(api: Any, intent_id: str, card: dict[str, Any]) -> Any:
    """What Stripe.js does with a Card Element's values: a payment method, then confirm the intent.
    Raises Declined with Stripe's error when a test card is declined (urllib.error.HTTPError with
    localstripe's error body for anything else it refuses)."""
    number = str(card["number"]).replace(" ", "")
    method = api("POST", "/v1/payment_methods", {"type": "card", "card": {
        "number": number, "exp_month": str(card.get("exp_month", "")),
        "exp_year": card_year(card.get("exp_year")), "cvc": str(card.get("cvc", ""))}})
    if number in DECLINED_ON_ATTACH:
        customer = api("POST", "/v1/customers", {})
        try:
            api("POST", f"/v1/payment_methods/{method['id']}/attach", {"customer": customer["id"]})
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}").get("error") or {}
            raise Declined({**body, "type": "card_error", **DECLINES.get(number, {})}) from None
    api("POST", f"/v1/payment_intents/{intent_id}", {"payment_method": method["id"]})
    return api("POST", f"/v1/payment_intents/{intent_id}/confirm", {})


class _Bridge(BaseHTTPRequestHandler):
    localstripe: LocalStripe
    page_origin: str = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

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
        api_url = self.localstripe.url
        script = http_request("GET", self.localstripe.js_url).decode()
        script = script.replace(STAND_IN_BASE, f"const LOCALSTRIPE_BASE_API = {json.dumps(api_url)};\n"
                                               "const LOCALSTRIPE_UNUSED = (function () {", 1)
        address = self.server.server_address
        assert isinstance(address, tuple)  # an AF_INET server's: (host, port)
        host, port = address[0], address[1]
        script += BRIDGE_JS % {"confirm_url": json.dumps(f"http://{host}:{port}/confirm")}
        self._send(200, script.encode(), "application/javascript")

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/confirm":
            self._send(404, b"not found", "text/plain")
            return
        api = self.localstripe.api
        try:
            data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            card = data["card"]
            intent_id = str(data["client_secret"]).split("_secret_")[0]
            intent = confirm_card(api, intent_id, card)
        except Declined as declined:
            intent = {"error": declined.error}
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            intent = {"error": body.get("error") or {"message": f"HTTP {error.code}"}}
        except (KeyError, TypeError, ValueError):
            intent = {"error": {"message": "Your card number is incomplete."}}
        self._send(200, json.dumps(intent).encode(), "application/json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhook-url", required=True, help="where localstripe posts its signed events")
    parser.add_argument("--parent-pid", type=int, help="exit when this process (the demo) is gone")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("localstripe") is None:
        parser.exit(1, "localstripe is not installed: it comes with the `demo` extra (pip install 'encours[demo]')\n")
    # Before localstripe starts: a SIGTERM from here on still stops it (in `finally`).
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    exit_with_parent(args.parent_pid)
    process, url, (workdir, log) = start_localstripe()
    bridge: ThreadingHTTPServer | None = None
    try:
        localstripe = LocalStripe(url=url, secret_key="sk_test_encours_sandbox",
                                  publishable_key="pk_test_encours_sandbox",
                                  webhook_secret=f"whsec_{secrets.token_hex(16)}")
        localstripe.register_webhook("encours", args.webhook_url)
        target = urlsplit(args.webhook_url)
        handler = type("Bridge", (_Bridge,), {"localstripe": localstripe,
                                              "page_origin": f"{target.scheme}://{target.netloc}"})
        bridge = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=bridge.serve_forever, name="stripe-bridge", daemon=True).start()
        settings = {**localstripe.settings(),
                    "STRIPE_JS_URL": f"http://127.0.0.1:{bridge.server_address[1]}/js.stripe.com/v3/"}
        print(json.dumps(settings), flush=True)
        stop.wait()
    finally:
        if bridge is not None:
            bridge.shutdown()
            bridge.server_close()
        stop_localstripe(process, workdir, log)


if __name__ == "__main__":
    main()
