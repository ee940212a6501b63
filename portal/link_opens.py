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
from typing import Any, Callable

from anyio import to_thread


class OpenRecorder:
    def __init__(self, write: Callable[[list[dict[str, Any]]], None]) -> None:
        self.write = write  # writes the rows in one transaction (in a worker thread)
        self.pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self.draining: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def record(self, row: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # a new event loop (tests start one per client): nothing carries over
            self.loop, self.pending, self.draining = loop, [], None
        future: asyncio.Future[None] = loop.create_future()
        self.pending.append((row, future))
        if self.draining is None or self.draining.done():
            self.draining = asyncio.ensure_future(self._drain())
        await asyncio.shield(future)  # a client that goes away does not cancel its neighbours' write

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
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
