"""A stand-in for GoCardless's API, for the real `gocardless-pro` SDK to talk HTTP to.

It speaks GoCardless's wire format for what Encours uses: resource-wrapped JSON
(`{"billing_requests": {...}}`), ids like BRQ…, BRF…, CU…, MD…, PM…, EV…, Bearer-token auth,
idempotency keys (a key used again answers 409 `invalid_state` / `idempotent_creation_conflict`
with `links.conflicting_resource_id`, which the SDK turns into a GET of that resource), and
GoCardless's error shapes. A flow's `authorisation_url` is an HTML page of this server that a
browser completes ("Confirm payment" / "Set up mandate"): the billing request is fulfilled, the
mandate and/or payment made, and the browser sent to the flow's `redirect_uri`.

Events are queued and POSTed as GoCardless does: `{"events": [...], "meta": {"webhook_id": ...}}`,
several per request, `Webhook-Signature` = hex HMAC-SHA256 of the raw body with the secret.
In tests, `flush_webhooks()` sends them when the test says (in any order); with `auto=True`
(the demo, the browser tests) payments and mandates move on by themselves (confirmed, active)
and a background thread delivers the events a moment later.

    python -m sandbox.gocardless_server --port 8765 --webhook-url http://127.0.0.1:8000/webhooks/gocardless --secret S

prints one JSON line, the GOCARDLESS_* settings pointing at it, then serves until SIGTERM/SIGINT or
until its parent (`--parent-pid`, by default the process that started it) is gone.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import itertools
import json
import sys
import secrets
import signal
import string
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

from sandbox.parent_watch import exit_with_parent

ACCESS_TOKEN = "sandbox_encours_standin_token"
WEBHOOK_SECRET = "encours-gocardless-standin-secret"
INSTANT_CURRENCIES = ("EUR", "GBP")
SCHEMES = {"sepa_core": "EUR", "bacs": "GBP"}


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    """The Webhook-Signature header exactly as GoCardless computes it."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message, self.errors = status, error_type, message, errors

    def body(self) -> dict[str, Any]:
        return {"error": {
            "message": self.message,
            "documentation_url": f"https://developer.gocardless.com/api-reference#{self.errors[0].get('reason', 'error')}"
            if self.errors else "https://developer.gocardless.com/api-reference",
            "type": self.error_type,
            "request_id": secrets.token_hex(8),
            "errors": self.errors,
            "code": self.status,
        }}


def _invalid(field_name: str, message: str, resource: str) -> ApiError:
    return ApiError(422, "validation_failed", "Validation failed",
                    [{"field": field_name, "message": message, "request_pointer": f"/{resource}/{field_name}"}])


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Delivery:
    body: bytes
    status: int | None
    event_ids: list[str]


@dataclass
class GoCardlessStandIn:
    access_token: str = ACCESS_TOKEN
    webhook_secret: str = WEBHOOK_SECRET
    webhook_url: str | None = None
    auto: bool = False  # move payments/mandates on by themselves and deliver events in the background
    host: str = "127.0.0.1"
    port: int = 0
    batch_size: int = 3  # events per webhook request: GoCardless batches (up to 250)

    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], str] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path, headers
    fail_next: list[ApiError] = field(default_factory=list)  # answered to the next API calls, in order
    # A slow GoCardless: while `hold_reads` is on, every API GET waits for `release` (and sets `held`).
    hold_reads: bool = False
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # --- life cycle ---

    def start(self) -> GoCardlessStandIn:
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        serve = threading.Thread(target=self._server.serve_forever, name="gocardless-standin", daemon=True)
        serve.start()
        self._threads.append(serve)
        if self.auto:
            sender = threading.Thread(target=self._deliver_forever, name="gocardless-standin-webhooks", daemon=True)
            sender.start()
            self._threads.append(sender)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def reset(self) -> None:
        with self._lock:
            self.resources.clear()
            self.idempotency.clear()
            self.pending.clear()
            self.deliveries.clear()
            self.requests.clear()
            self.fail_next.clear()
            self.hold_reads = False
            self.held.clear()
            self.release.clear()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def settings(self) -> dict[str, str]:
        """GOCARDLESS_* settings pointing the app at this server."""
        return {"GOCARDLESS_ACCESS_TOKEN": self.access_token, "GOCARDLESS_WEBHOOK_SECRET": self.webhook_secret,
                "GOCARDLESS_BASE_URL": self.url}

    # --- state ---

    def _new_id(self, prefix: str) -> str:
        tail = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(6))
        return f"{prefix}{next(self._ids):04d}{tail}"

    def get(self, kind: str, identity: str) -> dict[str, Any]:
        with self._lock:
            found = self.resources.get(kind, {}).get(identity)
            if found is None:
                raise ApiError(404, "invalid_api_usage", "Resource not found",
                               [{"reason": "resource_not_found", "message": "Resource not found"}])
            return found

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.resources.get(kind, {}).values())

    def _store(self, kind: str, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.setdefault(kind, {})[resource["id"]] = resource
        return resource

    def emit(self, resource_type: str, action: str, links: dict[str, str], *, cause: str | None = None,
             description: str | None = None, origin: str = "gocardless", resource_metadata: dict[str, Any] | None = None,
             **details: Any) -> dict[str, Any]:
        """Queue an event as GoCardless would record it; returns it."""
        event = {
            "id": self._new_id("EV"),
            "created_at": _now(),
            "resource_type": resource_type,
            "action": action,
            "links": links,
            "details": {"origin": origin, "cause": cause or f"{resource_type[:-1]}_{action}",
                        "description": description or f"The {resource_type[:-1].replace('_', ' ')} is {action}.",
                        **details},
            "metadata": {},
        }
        if resource_metadata is not None:
            event["resource_metadata"] = resource_metadata
        with self._lock:
            self.pending.append(event)
        return event

    # --- the API ---

    def create(self, kind: str, body: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        params = body.get(kind)
        if not isinstance(params, dict):
            raise ApiError(400, "invalid_api_usage", f"Invalid document structure: expected {kind}",
                           [{"reason": "invalid_document_structure", "message": "Invalid document structure"}])
        with self._lock:
            if idempotency_key and (kind, idempotency_key) in self.idempotency:
                existing = self.idempotency[(kind, idempotency_key)]
                raise ApiError(409, "invalid_state", "A resource has already been created with this idempotency key",
                               [{"reason": "idempotent_creation_conflict",
                                 "message": "A resource has already been created with this idempotency key",
                                 "links": {"conflicting_resource_id": existing}}])
            maker = {"billing_requests": self._create_billing_request,
                     "billing_request_flows": self._create_flow,
                     "payments": self._create_payment}.get(kind)
            if maker is None:
                raise ApiError(404, "invalid_api_usage", "Not found", [{"reason": "path_not_found",
                                                                       "message": "Path not found"}])
            resource = maker(params)
            # Flows are not idempotent at GoCardless (the SDK has no way back to one): never keyed here.
            if idempotency_key and kind != "billing_request_flows":
                self.idempotency[(kind, idempotency_key)] = resource["id"]
            return resource

    def _create_billing_request(self, params: dict[str, Any]) -> dict[str, Any]:
        payment_request = params.get("payment_request")
        mandate_request = params.get("mandate_request")
        if not payment_request and not mandate_request:
            raise _invalid("payment_request", "or mandate_request must be present", "billing_requests")
        if payment_request:
            amount = payment_request.get("amount")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
                raise _invalid("amount", "must be a positive integer (minor units)", "billing_requests/payment_request")
            if payment_request.get("currency") not in INSTANT_CURRENCIES:
                raise _invalid("currency", "is not supported for instant bank pay", "billing_requests/payment_request")
        if mandate_request:
            scheme = mandate_request.get("scheme")
            if scheme not in SCHEMES:
                raise _invalid("scheme", "is not a supported scheme", "billing_requests/mandate_request")
            if mandate_request.get("currency", SCHEMES[scheme]) != SCHEMES[scheme]:
                raise _invalid("currency", f"must be {SCHEMES[scheme]} for {scheme}", "billing_requests/mandate_request")
        request = {
            "id": self._new_id("BRQ"),
            "created_at": _now(),
            "status": "pending",
            "metadata": params.get("metadata") or {},
            "payment_request": {**payment_request, "links": {}} if payment_request else None,
            "mandate_request": {**mandate_request, "links": {}} if mandate_request else None,
            "links": {"creditor": "CR0000STANDIN"},
            "actions": [{"type": "bank_authorisation", "status": "pending", "required": True}],
        }
        return self._store("billing_requests", request)

    def _create_flow(self, params: dict[str, Any]) -> dict[str, Any]:
        request_id = (params.get("links") or {}).get("billing_request")
        request = self.get("billing_requests", str(request_id))
        if request["status"] != "pending":
            raise ApiError(422, "invalid_state", "Billing request is not pending",
                           [{"reason": "billing_request_not_pending", "message": "Billing request is not pending"}])
        if not params.get("redirect_uri"):
            raise _invalid("redirect_uri", "is required", "billing_request_flows")
        flow_id = self._new_id("BRF")
        flow = {
            "id": flow_id,
            "created_at": _now(),
            "expires_at": (datetime.now(timezone.utc) + timedelta(days=7)).isoformat(),
            "authorisation_url": f"{self.url}/flow/{flow_id}",
            "redirect_uri": params["redirect_uri"],
            "exit_uri": params.get("exit_uri"),
            "session_token": None,
            "links": {"billing_request": request_id},
        }
        return self._store("billing_request_flows", flow)

    def _create_payment(self, params: dict[str, Any]) -> dict[str, Any]:
        amount = params.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise _invalid("amount", "must be a positive integer (minor units)", "payments")
        mandate_id = (params.get("links") or {}).get("mandate")
        if not mandate_id:
            raise _invalid("links", "mandate is required", "payments")
        mandate = self.get("mandates", str(mandate_id))
        if mandate["status"] in ("failed", "cancelled", "expired"):
            raise ApiError(422, "invalid_state", "Mandate is inactive",
                           [{"reason": "mandate_is_inactive", "message": "The mandate is inactive"}])
        if params.get("currency") != SCHEMES[mandate["scheme"]]:
            raise _invalid("currency", f"must be {SCHEMES[mandate['scheme']]} for this mandate", "payments")
        payment = self._payment(amount, params["currency"], params.get("metadata") or {}, mandate_id,
                                params.get("description"))
        self._after_payment_created(payment)
        return payment

    def _payment(self, amount: int, currency: str, metadata: dict[str, Any], mandate_id: str | None,
                 description: str | None) -> dict[str, Any]:
        payment: dict[str, Any] = {
            "id": self._new_id("PM"),
            "created_at": _now(),
            "charge_date": (date.today() + timedelta(days=3)).isoformat(),
            "amount": amount,
            "currency": currency,
            "description": description,
            "status": "pending_submission",
            "metadata": metadata,
            "links": {"creditor": "CR0000STANDIN", **({"mandate": mandate_id} if mandate_id else {})},
        }
        self._store("payments", payment)
        self.emit("payments", "created", {"payment": payment["id"]}, cause="payment_created",
                  description="Payment created by an API request.", origin="api")
        return payment

    def _after_payment_created(self, payment: dict[str, Any]) -> None:
        if self.auto:
            self.move_payment(payment["id"], "submitted")
            self.move_payment(payment["id"], "confirmed")

    # --- the authorisation page's action ---

    def fulfil(self, flow_id: str) -> str:
        """What the debtor's "Confirm" does: the billing request fulfilled; returns the redirect_uri."""
        with self._lock:
            flow = self.get("billing_request_flows", flow_id)
            request = self.get("billing_requests", flow["links"]["billing_request"])
            if request["status"] == "fulfilled":
                return str(flow["redirect_uri"])
            customer = self._store("customers", {"id": self._new_id("CU"), "created_at": _now(),
                                                 "given_name": "Test", "family_name": "Payer"})
            links: dict[str, str] = {"billing_request": request["id"], "billing_request_flow": flow_id,
                                     "customer": customer["id"]}
            mandate = None
            if request["mandate_request"]:
                mandate_request = request["mandate_request"]
                mandate = self._store("mandates", {
                    "id": self._new_id("MD"), "created_at": _now(), "scheme": mandate_request["scheme"],
                    "status": "pending_submission", "metadata": mandate_request.get("metadata") or {},
                    "next_possible_charge_date": (date.today() + timedelta(days=3)).isoformat(),
                    "links": {"customer": customer["id"], "creditor": "CR0000STANDIN"},
                })
                mandate_request["links"] = {"mandate": mandate["id"]}
                links["mandate_request_mandate"] = mandate["id"]
            payment = None
            if request["payment_request"]:
                payment_request = request["payment_request"]
                payment = self._payment(payment_request["amount"], payment_request["currency"],
                                        payment_request.get("metadata") or {}, None,
                                        payment_request.get("description"))
                payment_request["links"] = {"payment": payment["id"]}
                links["payment_request_payment"] = payment["id"]
            request["status"] = "fulfilled"
            request["links"].update({key: value for key, value in links.items() if key != "billing_request"})
            self.emit("billing_requests", "fulfilled", links, cause="billing_request_fulfilled",
                      description="This billing request has been fulfilled, and the resources have been created.")
            if mandate is not None:
                self.emit("mandates", "created", {"mandate": mandate["id"]}, cause="mandate_created",
                          description="Mandate created via the API.", origin="api")
                if self.auto:
                    self.move_mandate(mandate["id"], "submitted")
                    self.move_mandate(mandate["id"], "active")
            if payment is not None and self.auto:
                self.move_payment(payment["id"], "confirmed")  # Instant Bank Pay: no submission step
            return str(flow["redirect_uri"])

    # --- moving resources on, as the banks would ---

    def move_payment(self, payment_id: str, action: str, *, cause: str | None = None,
                     description: str | None = None, **details: Any) -> dict[str, Any]:
        """Change a payment's status and queue its event, e.g. ("failed", cause="insufficient_funds");
        `details` go into the event's details (e.g. will_attempt_retry=True)."""
        with self._lock:
            payment = self.get("payments", payment_id)
            payment["status"] = {"late_failure": "failed", "resubmission_requested": "pending_submission"}.get(
                action, action)
            return self.emit("payments", action, {"payment": payment_id}, cause=cause, description=description,
                             origin="bank" if action in ("failed", "late_failure", "charged_back") else "gocardless",
                             **details)

    def move_mandate(self, mandate_id: str, action: str, *, cause: str | None = None,
                     description: str | None = None) -> dict[str, Any]:
        with self._lock:
            mandate = self.get("mandates", mandate_id)
            mandate["status"] = action
            return self.emit("mandates", action, {"mandate": mandate_id}, cause=cause, description=description)

    # --- webhooks ---

    def webhook_body(self, events: list[dict[str, Any]]) -> bytes:
        return json.dumps({"events": events, "meta": {"webhook_id": self._new_id("WB")}}).encode()

    def flush_webhooks(self, order: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
                       batch_size: int | None = None,
                       post: Callable[[bytes, dict[str, str]], int] | None = None) -> list[Delivery]:
        """Send the queued events, `batch_size` per request (default: self.batch_size), in `order`
        (a function reordering the list); `post(body, headers) -> status` instead of HTTP when given."""
        with self._lock:
            events, self.pending = list(self.pending), []
        if order is not None:
            events = order(events)
        size = batch_size or self.batch_size
        sent = []
        for start in range(0, len(events), size):
            batch = events[start:start + size]
            body = self.webhook_body(batch)
            headers = {"Content-Type": "application/json", "Webhook-Signature": sign(body, self.webhook_secret),
                       "User-Agent": "gocardless-webhook-service/1.1", "Origin": "https://api.gocardless.com"}
            status = post(body, headers) if post is not None else self._post(body, headers)
            delivery = Delivery(body=body, status=status, event_ids=[event["id"] for event in batch])
            sent.append(delivery)
            with self._lock:
                self.deliveries.append(delivery)
            if status is None or not 200 <= status < 300:
                with self._lock:  # GoCardless retries a failed delivery
                    self.pending[:0] = batch
        return sent

    def _post(self, body: bytes, headers: dict[str, str]) -> int | None:
        if not self.webhook_url:
            raise RuntimeError("the stand-in has no webhook_url to send events to")
        request = urllib.request.Request(self.webhook_url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (urllib.error.URLError, OSError):
            return None

    def _deliver_forever(self) -> None:
        while not self._stop.wait(0.3):
            if self.pending and self.webhook_url:
                self.flush_webhooks()


class _Handler(BaseHTTPRequestHandler):
    standin: GoCardlessStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode())

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _api(self, method: str) -> None:
        standin = self.standin
        path = urlsplit(self.path).path.rstrip("/")
        with standin._lock:
            standin.requests.append((method, path, {k.lower(): v for k, v in self.headers.items()}))
        body = self._body() if method == "POST" else b""
        try:
            if self.headers.get("Authorization") != f"Bearer {standin.access_token}":
                raise ApiError(401, "invalid_api_usage", "Authentication failed",
                               [{"reason": "authentication_failed", "message": "Authentication failed"}])
            with standin._lock:
                if standin.fail_next:
                    raise standin.fail_next.pop(0)
            if method == "GET" and standin.hold_reads:
                standin.held.set()
                standin.release.wait(timeout=60)
            parts = path.strip("/").split("/")
            if method == "POST" and len(parts) == 1:
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    raise ApiError(400, "invalid_api_usage", "Invalid JSON",
                                   [{"reason": "invalid_json", "message": "Invalid JSON"}]) from None
                resource = standin.create(parts[0], payload, self.headers.get("Idempotency-Key"))
                self._json(201, {parts[0]: resource})
            elif method == "GET" and len(parts) == 2:
                self._json(200, {parts[0]: standin.get(parts[0], parts[1])})
            else:
                raise ApiError(404, "invalid_api_usage", "Not found",
                               [{"reason": "path_not_found", "message": "Path not found"}])
        except ApiError as error:
            self._json(error.status, error.body())

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/flow/"):
            self._flow_page(self.path.split("/")[2].split("?")[0])
        else:
            self._api("GET")

    def do_POST(self) -> None:  # noqa: N802
        if self.path.startswith("/flow/") and self.path.endswith("/confirm"):
            self._body()
            try:
                location = self.standin.fulfil(self.path.split("/")[2])
            except ApiError:
                self._send(404, b"Unknown flow", "text/plain")
                return
            self._send(303, b"", "text/plain", {"Location": location})
        else:
            self._api("POST")

    def _flow_page(self, flow_id: str) -> None:
        standin = self.standin
        try:
            flow = standin.get("billing_request_flows", flow_id)
            request = standin.get("billing_requests", flow["links"]["billing_request"])
        except ApiError:
            self._send(404, b"Unknown flow", "text/plain")
            return
        lines = []
        payment, mandate = request["payment_request"], request["mandate_request"]
        if payment:
            amount = f"{payment['amount'] // 100}.{payment['amount'] % 100:02d} {payment['currency']}"
            lines.append(f"<p>Pay <strong id='amount'>{html.escape(amount)}</strong> from your bank account now"
                         f" ({html.escape(str(payment.get('description') or ''))}).</p>")
        if mandate:
            lines.append(f"<p>Authorise a <strong id='scheme'>{html.escape(mandate['scheme'])}</strong> "
                         "Direct Debit mandate for future payments.</p>")
        button = "Confirm payment" if payment else "Set up mandate"
        exit_link = (f"<p><a href='{html.escape(flow['exit_uri'])}'>Cancel and go back</a></p>"
                     if flow.get("exit_uri") else "")
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GoCardless stand-in: authorise</title></head>
<body><main><h1>GoCardless (stand-in)</h1>
{''.join(lines)}
<form method="post" action="/flow/{html.escape(flow_id)}/confirm"><button type="submit">{button}</button></form>
{exit_link}</main></body></html>"""
        if request["status"] == "fulfilled":
            page = page.replace("<form", "<p>Already authorised.</p><form")
        self._send(200, page.encode(), "text/html; charset=utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--webhook-url", required=True)
    parser.add_argument("--secret", default=WEBHOOK_SECRET)
    parser.add_argument("--token", default=ACCESS_TOKEN)
    parser.add_argument("--parent-pid", type=int, help="exit when this process (the demo) is gone")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    exit_with_parent(args.parent_pid)
    server = GoCardlessStandIn(access_token=args.token, webhook_secret=args.secret, webhook_url=args.webhook_url,
                               auto=True, host=args.host, port=args.port).start()
    # One JSON line, the GOCARDLESS_* settings pointing at it (read by encours/sandbox.py).
    print(json.dumps(server.settings()), flush=True)
    print(f"GoCardless stand-in on {server.url}, webhooks to {args.webhook_url}", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
