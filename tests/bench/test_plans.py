"""bench/plans.py: every statement an operation sends is recorded, then explained (and rolled back)."""

from __future__ import annotations

from sqlalchemy import Engine, func, insert, select

from bench.plans import Recorder, explain
from ledger.models import Company


def test_statements_are_recorded_and_explained_without_writing(pg_engine: Engine) -> None:
    recorder = Recorder()
    recorder.attach(pg_engine)

    def work() -> None:
        with pg_engine.connect() as connection:
            for _ in range(3):
                connection.execute(select(Company.id).where(Company.code == "NOPE"))
            connection.execute(insert(Company).values(code="PLANS", name="Plans SAS", base_currency="EUR"))
            connection.rollback()

    captured, _ = recorder.record(work)
    select_, insert_ = captured.values()
    assert select_.executions == 3 and "FROM companies" in select_.sql
    assert insert_.executions == 1 and insert_.sql.startswith("INSERT INTO companies")

    plan = explain(pg_engine, select_)
    assert plan["rows"] == 0 and any("companies" in scan for scan in plan["scans"])
    assert "error" not in explain(pg_engine, insert_)
    with pg_engine.connect() as connection:  # the INSERT ran under EXPLAIN ANALYZE, and was rolled back
        assert connection.execute(select(func.count()).select_from(Company)
                                  .where(Company.code == "PLANS")).scalar_one() == 0
