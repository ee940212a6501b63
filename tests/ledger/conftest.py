from __future__ import annotations

import pytest


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    """Every test of this package runs on SQLite and on PostgreSQL."""
    return both_databases_session_factory
