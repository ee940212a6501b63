"""Fixtures giving a test the GoCardless stand-in (`sandbox.gocardless_server`) in this process."""

from __future__ import annotations

from typing import Iterator

import pytest

from sandbox.gocardless_server import GoCardlessStandIn


@pytest.fixture(scope="session")
def gocardless_server() -> Iterator[GoCardlessStandIn]:
    """One stand-in per test session (per xdist worker); events sent only by `flush_webhooks()`."""
    server = GoCardlessStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def gocardless(gocardless_server: GoCardlessStandIn) -> GoCardlessStandIn:
    """The stand-in, emptied before the test."""
    gocardless_server.reset()
    return gocardless_server
