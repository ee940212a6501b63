"""`kernel.collector.collection_paused`: no automatic collection inside, in any thread, until the last
block ends; the collector is left as it was found."""

from __future__ import annotations

import gc
import threading

import pytest

from kernel.collector import collection_paused


def test_the_collector_is_off_inside_and_back_after() -> None:
    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()


def test_the_collector_comes_back_after_an_error() -> None:
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("the job failed")
    assert gc.isenabled()


def test_a_collector_found_off_stays_off() -> None:
    gc.disable()
    try:
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_it_comes_back_once_the_last_of_two_threads_has_finished() -> None:
    inside, release = threading.Event(), threading.Event()

    def job() -> None:
        with collection_paused():
            inside.set()
            release.wait(10)

    other = threading.Thread(target=job)
    other.start()
    inside.wait(10)
    with collection_paused():
        pass
    assert not gc.isenabled()  # the other thread's job is still running
    release.set()
    other.join()
    assert gc.isenabled()
