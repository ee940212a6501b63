"""The services of My day and of the reports per collector on SQLite and on PostgreSQL: the same
worlds and figures as tests/admin/test_my_day.py and test_reports.py, run on both databases."""

from __future__ import annotations

import pytest

from tests.admin.test_my_day import (  # noqa: F401 - collected here on both databases
    test_the_list_ranks_urgent_reasons_then_converted_overdue as test_my_day_on_both_databases,
)
from tests.admin.test_reports import (  # noqa: F401 - collected here on both databases
    test_each_collectors_figures_over_the_period as test_report_on_both_databases,
)


@pytest.fixture
def session_factory(both_databases_session_factory):  # type: ignore[no-untyped-def]
    return both_databases_session_factory
