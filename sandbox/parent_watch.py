"""A stand-in run beside `encours demo` ends when the demo does, however the demo ends.

`encours demo` stops its stand-ins when it exits normally; killed (`pkill -9`, an OOM kill, a
closed terminal), it cannot, and they would keep their ports and localstripe running. So each
stand-in watches its parent itself and sends itself SIGTERM (its normal, clean way out) when the
parent is gone:
- on Linux, the kernel does it at once (`prctl(PR_SET_PDEATHSIG, SIGTERM)`; set by the stand-in
  on itself, so the demo needs no `preexec_fn`, which is unsafe once threads run; the kernel
  watches the parent *thread* that started it: `encours demo` starts them from its main thread);
- everywhere, a thread polls `os.getppid()`: an orphan is re-parented, so its parent pid changes.
The demo passes its pid (`--parent-pid`): a parent gone before the watch began is seen too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.5


def _ask_the_kernel() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the polling thread still does it


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def exit_with_parent(parent_pid: int | None = None) -> None:
    """SIGTERM to this process once `parent_pid` (default: the current parent) is no longer its parent.

    Install the SIGTERM handler that shuts the stand-in down before calling this."""
    parent = os.getppid() if parent_pid is None else parent_pid
    _ask_the_kernel()
    if os.getppid() != parent:  # gone before the kernel was asked: it will not signal
        _terminate_self()
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        _terminate_self()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
