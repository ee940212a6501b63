"""The demo's provider stand-ins come from the sandbox package, and never outlive the demo, even
when it is killed outright."""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from encours import sandbox

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 90  # localstripe starting on a busy machine
GONE_SECONDS = 10

# What `encours demo` does before serving: start the sandbox, then run until killed.
DEMO = """
import json, signal
from encours import sandbox
stand_ins = sandbox.start("http://127.0.0.1:9")
print(json.dumps({"pids": [p.pid for p in stand_ins.processes], "notes": stand_ins.notes}), flush=True)
signal.pause()
"""


def _state(pid: int) -> str | None:
    """The process's state letter, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")  # a zombie has exited; only its reaper is missing


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while True:
        alive = {pid for pid in pids if _alive(pid)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)  # polling other processes' exit, not a business-rule clock


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_stand_ins_exit_when_the_demo_is_killed() -> None:
    demo = subprocess.Popen([sys.executable, "-c", DEMO], cwd=ROOT, stdout=subprocess.PIPE)
    started: set[int] = set()
    try:
        assert demo.stdout is not None
        ready, _, _ = select.select([demo.stdout], [], [], START_SECONDS)
        assert ready, "the sandbox did not start"
        report = json.loads(demo.stdout.readline())
        assert len(report["pids"]) == len(sandbox.STAND_INS), report["notes"]
        assert not any("not offered" in note for note in report["notes"]), report["notes"]
        started = _descendants(demo.pid)  # the stand-ins and localstripe under the Stripe one
        assert set(report["pids"]) < started
        assert all(_alive(pid) for pid in started)

        demo.send_signal(signal.SIGKILL)  # no `finally`, no atexit: nothing of the demo's own runs
        demo.wait(timeout=10)

        assert _wait_gone(started, GONE_SECONDS) == set()
    finally:
        demo.kill()
        demo.wait()
        _kill({pid for pid in started if _alive(pid)})


def test_a_stand_in_whose_parent_is_already_gone_exits_at_once() -> None:
    # The demo died between starting it and its watch: its parent is not the pid it was given.
    stand_in = subprocess.Popen(
        [sys.executable, "-m", "sandbox.gocardless_server", "--webhook-url", "http://127.0.0.1:9/webhooks",
         "--parent-pid", str(os.getpid() + 10_000_000)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert stand_in.wait(timeout=60) is not None
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_stand_in_that_is_not_installed_is_left_out_and_the_demo_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = sandbox.StandIn("sandbox_not_installed.server", "/webhooks/stripe", "card", "never printed")
    monkeypatch.setattr(sandbox, "STAND_INS", (missing,))
    stand_ins = sandbox.start("http://127.0.0.1:9")
    try:
        assert stand_ins.processes == [] and stand_ins.settings == {}
        assert stand_ins.notes == ["card: not offered (sandbox_not_installed.server is not installed: "
                                   "pip install 'encours[demo]', or `make demo`)"]
    finally:
        stand_ins.stop()


def test_every_providers_stand_in_is_a_module_of_the_sandbox_package() -> None:
    # What the demo runs is installed with Encours (the `sandbox` package), never taken from tests/.
    modules = [stand_in.module for stand_in in sandbox.STAND_INS]
    assert sorted(modules) == ["sandbox.gocardless_server", "sandbox.stripe_server"]
    assert all(importlib.util.find_spec(module) is not None for module in modules)
