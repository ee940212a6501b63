"""Group commit of magic-link opens (portal.link_opens.OpenRecorder)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from anyio import to_thread

from portal.link_opens import OpenRecorder


def _run(awaitable_factory: Any) -> Any:
    """asyncio.run in a thread of its own: the test process may already run an event loop in its
    main thread (Playwright's sync API leaves one running for the browser tests of this worker)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = asyncio.run(awaitable_factory())
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the scenario did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def test_opens_arriving_during_a_write_are_written_together_and_each_waits_for_its_own() -> None:
    batches: list[list[int]] = []
    writing, release = threading.Event(), threading.Event()

    def write(rows: list[dict[str, Any]]) -> None:
        batches.append([row["n"] for row in rows])
        if len(batches) == 1:
            writing.set()
            assert release.wait(10)

    async def scenario() -> None:
        recorder = OpenRecorder(write)
        first = asyncio.ensure_future(recorder.record({"n": 0}))
        assert await to_thread.run_sync(writing.wait, 10)
        others = [asyncio.ensure_future(recorder.record({"n": n})) for n in range(1, 5)]
        await asyncio.sleep(0)  # let them queue behind the write under way
        assert not any(task.done() for task in [first, *others])  # nobody answered before the commit
        release.set()
        await asyncio.gather(first, *others)

    _run(scenario)
    assert batches == [[0], [1, 2, 3, 4]]


def test_a_row_that_cannot_be_written_fails_alone() -> None:
    written: list[int] = []

    def write(rows: list[dict[str, Any]]) -> None:
        if any(row["n"] == 2 for row in rows):
            raise ValueError("contact 2 is gone")
        written.extend(row["n"] for row in rows)

    async def scenario() -> list[Any]:
        recorder = OpenRecorder(write)
        return await asyncio.gather(*(recorder.record({"n": n}) for n in range(4)), return_exceptions=True)

    results = _run(scenario)
    assert [type(result) for result in results] == [type(None), type(None), ValueError, type(None)]
    assert sorted(written) == [0, 1, 3]


def test_a_recorder_outlives_its_event_loop() -> None:
    written: list[int] = []
    recorder = OpenRecorder(lambda rows: written.extend(row["n"] for row in rows))
    _run(lambda: recorder.record({"n": 1}))
    _run(lambda: recorder.record({"n": 2}))  # a second loop, as a second test client starts
    assert written == [1, 2]
    with pytest.raises(ZeroDivisionError):
        _run(lambda: OpenRecorder(lambda rows: 1 / 0).record({"n": 3}))


def test_event_loops_running_at_once_each_get_their_opens_written() -> None:
    """A process may run several event loops at once (each test client runs its own): an open
    queued on one loop is never dropped because another loop recorded one meanwhile."""
    written: list[int] = []
    started = {0: threading.Event(), 1: threading.Event()}
    release = threading.Event()
    queued = threading.Barrier(3, timeout=10)

    def write(rows: list[dict[str, Any]]) -> None:
        numbers = [row["n"] for row in rows]
        if numbers[0] in started:  # each loop's first write holds until both loops queued another
            started[numbers[0]].set()
            assert release.wait(10)
        written.extend(numbers)

    recorder = OpenRecorder(write)

    def loop_of(n: int) -> None:
        async def scenario() -> None:
            first = asyncio.ensure_future(recorder.record({"n": n}))
            assert await to_thread.run_sync(started[n].wait, 10)
            second = asyncio.ensure_future(recorder.record({"n": n + 2}))
            await asyncio.sleep(0)  # queued behind this loop's write under way
            await to_thread.run_sync(queued.wait)
            await asyncio.wait_for(asyncio.gather(first, second), 10)
        asyncio.run(scenario())

    threads = [threading.Thread(target=loop_of, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    queued.wait()
    release.set()
    for thread in threads:
        thread.join(20)
    assert sorted(written) == [0, 1, 2, 3]
