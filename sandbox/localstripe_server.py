"""localstripe (PyPI; GPL, in the `demo` and `test` extras only) run as its own process, for the
real `stripe` SDK to talk to.

localstripe's own command listens on every interface (`::`) and pickles its state to
/tmp/localstripe.pickle after every POST, which two xdist workers would share. So the
process is started with a tiny runner instead: it takes a socket this process bound to
127.0.0.1 (no port race), turns the pickling off, and serves localstripe's aiohttp app
unchanged. Its Stripe.js stand-in is at `<url>/js.stripe.com/v3/`; `DELETE /_config/data`
empties it between tests; `POST /_config/webhooks/<name>` makes it sign and send events.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

SECRET_KEY = "sk_test_encours_localstripe"
PUBLISHABLE_KEY = "pk_test_encours_localstripe"
WEBHOOK_SECRET = "whsec_encours_localstripe_test"

# Runs in the child: serve localstripe on the inherited socket, without its pickle file, and
# creating PaymentIntents as the API version the stripe SDK pins (2026-10-28.endive) does, which
# localstripe predates: `payment_method_types` is refused (400), `allowed_payment_method_types`
# taken instead and answered as the intent's `payment_method_types`.
RUNNER = """
import logging, socket, sys
from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError
resources.Store.dump_to_disk = lambda self: None
create_intent = resources.PaymentIntent._api_create
def create_current_intent(cls, payment_method_types=None, allowed_payment_method_types=None, **data):
    if payment_method_types is not None:
        raise UserError(400, "payment_method_types is no longer supported on this API version: "
                        "use allowed_payment_method_types", {"code": "payment_method_types_no_longer_supported",
                                                            "param": "payment_method_types"})
    intent = create_intent(**data)
    intent.payment_method_types = list(allowed_payment_method_types or ["card"])
    return intent
resources.PaymentIntent._api_create = classmethod(create_current_intent)
sock = socket.socket(fileno=int(sys.argv[1]))
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
web.run_app(server.app, sock=sock, print=None, access_log=None)
"""


@dataclass
class LocalStripe:
    url: str
    secret_key: str = SECRET_KEY
    publishable_key: str = PUBLISHABLE_KEY
    webhook_secret: str = WEBHOOK_SECRET

    @property
    def js_url(self) -> str:
        return f"{self.url}/js.stripe.com/v3/"

    def settings(self) -> dict[str, str]:
        """STRIPE_* settings pointing the app at this server."""
        return {
            "STRIPE_SECRET_KEY": self.secret_key,
            "STRIPE_PUBLISHABLE_KEY": self.publishable_key,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "STRIPE_API_BASE": self.url,
            "STRIPE_JS_URL": self.js_url,
        }

    def reset(self) -> None:
        http_request("DELETE", f"{self.url}/_config/data")

    def register_webhook(self, name: str, url: str, secret: str | None = None) -> None:
        body = json.dumps({"url": url, "secret": secret or self.webhook_secret}).encode()
        http_request("POST", f"{self.url}/_config/webhooks/{name}", body, {"Content-Type": "application/json"})

    def api(self, method: str, path: str, data: dict[str, Any] | None = None) -> Any:
        """A raw call to its API with the secret key (for what the SDK under test does not do)."""
        body = json.dumps(data).encode() if data is not None else None
        headers = {"Authorization": f"Bearer {self.secret_key}", "Content-Type": "application/json"}
        return json.loads(http_request(method, f"{self.url}{path}", body, headers) or b"null")


def http_request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: bytes = response.read()
    return answer


def start_localstripe() -> tuple[subprocess.Popen[bytes], str, Any]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    workdir = tempfile.TemporaryDirectory(prefix="localstripe-")
    log = open(os.path.join(workdir.name, "localstripe.log"), "wb")
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(listener.fileno())],
        pass_fds=[listener.fileno()], cwd=workdir.name, stdout=log, stderr=subprocess.STDOUT,
    )
    listener.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            http_request("GET", f"{url}/js.stripe.com/v3/")
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                output = open(log.name, "rb").read().decode(errors="replace")
                workdir.cleanup()
                raise RuntimeError(f"localstripe did not start:\n{output}")
            time.sleep(0.05)
    return process, url, (workdir, log)


def stop_localstripe(process: subprocess.Popen[bytes], workdir: Any, log: Any) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
    workdir.cleanup()
