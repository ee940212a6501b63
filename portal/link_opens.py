"""Recording magic-link opens with group commit.

Every first open of a link writes a `link_opens` row before the debtor is redirected. One
transaction per open made every concurrent exchange queue for SQLite's single write lock, and a
waiting writer sleeps in SQLite's busy handler (1, 2, 5, ... 100 ms) however soon the lock is
free: under a burst of first opens (a reminder day) throughput collapsed to the lock's rhythm.
Here the opens that arrive while a write is under way are written together by the next one, in
one transaction: one writer per process, and each request still waits until its own row is
committed, so an answered exchange is a recorded one.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, Callable

from anyio import to_thread


class _Queue:
    """The opens waiting on one event loop, and the task writing them."""

    def __init__(self) -> None:
        self.pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self.draining: asyncio.Task[None] | None = None


class OpenRecorder:
    def __init__(self, write: Callable[[list[dict[str, Any]]], None]) -> None:
        self.write = write  # writes the rows in one transaction (in a worker thread)
        # One queue per event loop: a server has one, but a process may run several at once (each
        # test client runs its own), and a future can only be awaited on its own loop.
        self.queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()
        self.lock = threading.Lock()

    async def record(self, row: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        with self.lock:
            queue = self.queues.get(loop)
            if queue is None:
                queue = self.queues[loop] = _Queue()
        future: asyncio.Future[None] = loop.create_future()
        queue.pending.append((row, future))
        if queue.draining is None or queue.draining.done():
            queue.draining = asyncio.ensure_future(self._drain(queue))
        await asyncio.shield(future)  # a client that goes away does not cancel its neighbours' write

    async def _drain(self, queue: _Queue) -> None:
        while queue.pending:
            batch, queue.pending = queue.pending, []
            try:
                await to_thread.run_sync(self.write, [row for row, _ in batch])
            except Exception:
                # One bad row (a contact deleted meanwhile) must not fail the others: each alone.
                for row, future in batch:
                    try:
                        await to_thread.run_sync(self.write, [row])
                    except Exception as error:
                        _settle(future, error)
                    else:
                        _settle(future, None)
            else:
                for _, future in batch:
                    _settle(future, None)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
