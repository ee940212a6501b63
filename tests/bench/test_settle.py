"""bench/settle.py: which tables a warm-up leaves to VACUUM (ANALYZE), from two readings."""

from __future__ import annotations

from bench import settle


def test_the_tables_a_warm_up_wrote_and_those_still_empty_are_settled() -> None:
    before = [("contacts", 50_000, 50_000.0), ("link_opens", 0, 0.0), ("outbox", 0, 0.0), ("users", 3, 3.0)]
    after = [("contacts", 50_000, 50_000.0), ("link_opens", 2_400, 0.0), ("outbox", 0, 0.0), ("users", 3, 3.0),
             ("new_table", 10, -1.0)]
    assert settle.to_settle(before, after) == (["link_opens", "new_table"], ["outbox"])


def test_a_table_is_settled_when_its_counters_are_late_but_its_statistics_say_empty() -> None:
    # A backend sends its counters when it goes idle or ends: an empty table is vacuumed anyway.
    reading = [("link_opens", 0, 0.0), ("contacts", 50_000, 50_000.0)]
    assert settle.to_settle(reading, reading) == ([], ["link_opens"])
    assert settle.empty(reading) == ["link_opens"]
