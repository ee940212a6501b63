"""Local stand-ins of the payment providers, run beside `encours demo` when no keys are set.

So a new user can try every payment method on one machine, the way django-payments' dummy
provider lets people try it. Never used with real keys: `encours demo` starts them only when no
provider key is in the environment, and the pages say "sandbox".

The stand-ins are the top-level `sandbox` package, installed with the `demo` extra (which brings
localstripe, GPL, imported nowhere else); the tests talk to the same ones. Each provider names its
stand-in's module (`payments.base.StandIn`); each runs as its own process and prints one JSON line,
the settings pointing the app at it, and exits by itself when the demo's process is gone, however
it ended (`sandbox.parent_watch`):
- `sandbox.stripe_server`: localstripe plus a bridge that plays Stripe.js's part (card);
- `sandbox.gocardless_server`: our GoCardless stand-in (instant transfer, direct debit).
A stand-in that is not installed or does not start leaves its methods out, and the demo says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from payments.registry import PROVIDERS

SOURCE = Path(__file__).resolve().parents[1]  # the stand-ins run from here: a bare checkout finds `sandbox` too
PROVIDER_SETTINGS = ("STRIPE_SECRET_KEY", "GOCARDLESS_ACCESS_TOKEN")
START_TIMEOUT = 30.0  # seconds


@dataclass(frozen=True)
class StandIn:
    module: str  # run as `python -m module --webhook-url <base url><webhook>`
    webhook: str
    label: str
    note: str  # what the demo prints once it runs


# Each provider names its own stand-in (payments.base.PaymentProvider.stand_in).
STAND_INS = tuple(
    StandIn(provider.stand_in.module, f"/webhooks/{provider.name}", provider.stand_in.label, provider.stand_in.note)
    for provider in PROVIDERS if provider.stand_in is not None
)


@dataclass
class Sandbox:
    """What runs beside the demo; `settings` are the environment variables pointing at it."""

    settings: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workdir: tempfile.TemporaryDirectory[str] = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="encours-sandbox-"))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.workdir.cleanup()


def start(base_url: str) -> Sandbox:
    """Start every stand-in this checkout can run; one that is missing or does not start (e.g. the
    test tools are not installed) leaves its methods out and says so in `notes`."""
    sandbox = Sandbox()
    try:
        for stand_in in STAND_INS:
            _start(sandbox, stand_in, base_url)
    except Exception:
        sandbox.stop()
        raise
    return sandbox


def _start(sandbox: Sandbox, stand_in: StandIn, base_url: str) -> None:
    if not _installed(stand_in.module):
        sandbox.notes.append(f"{stand_in.label}: not offered ({stand_in.module} is not installed: "
                             "pip install 'encours[demo]', or `make demo`)")
        return
    log = open(Path(sandbox.workdir.name) / f"{stand_in.module.rsplit('.', 1)[-1]}.log", "wb")
    # --parent-pid: the stand-in exits by itself once this process is gone, even killed (SIGKILL)
    # before `stop` could run (sandbox/parent_watch.py).
    process = subprocess.Popen([sys.executable, "-m", stand_in.module, "--webhook-url", base_url + stand_in.webhook,
                                "--parent-pid", str(os.getpid())],
                               cwd=SOURCE, stdout=subprocess.PIPE, stderr=log)
    sandbox.processes.append(process)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
    line = process.stdout.readline() if ready else b""
    try:
        settings = json.loads(line)
    except ValueError:
        process.kill()
        sandbox.notes.append(f"{stand_in.label}: not offered ({stand_in.module} did not start; "
                             f"the `demo` extra installs what it needs; its log was {log.name})")
        return
    sandbox.settings.update(settings)
    url = settings.get("STRIPE_API_BASE") or settings.get("GOCARDLESS_BASE_URL")
    sandbox.notes.append(f"{stand_in.label}: {stand_in.note} at {url}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its package is missing
        return False
