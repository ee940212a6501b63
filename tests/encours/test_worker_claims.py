"""Several workers at a company's reminder hour: each company's day is planned once (a claim on the
run, `dunning.claims`), and a worker that died while planning loses nothing once its lease ran
out. Both engines, committed data, one engine (one connection) per worker, released together."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Callable

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from dunning import claims, planner
from encours import worker
from kernel.clock import clock
from kernel.db import make_sessionmaker
from kernel.settings import Settings, load_settings
from ledger.models import OutboxMessage, Reminder, ReminderClaim, ReminderRun
from tests import factories
from tests.databases import together
from tests.conftest import TEST_SECRET

DAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)  # 11:00 in Paris: past every company's hour
COMPANIES, CUSTOMERS = 3, 12


class Died(Exception):
    """The worker stops here, as if killed: nothing after this line of its run happens."""


def _settings(fresh_url: str) -> Settings:
    return load_settings({"ENCOURS_DATABASE_URL": fresh_url, "ENCOURS_SECRET_KEY": TEST_SECRET,
                          "ENCOURS_BASE_URL": "http://testserver", "ENCOURS_REMINDER_LEASE": "600"})


def _book(factory: sessionmaker[Session], companies: int = COMPANIES) -> list[int]:
    ids = []
    with factory() as session:
        for c in range(companies):
            company = factories.company(session, code=f"CO{c}", reminder_hour=9)
            for n in range(CUSTOMERS):
                customer = factories.customer(session, company, ref=f"C{c}-{n:03d}")
                factories.invoice(session, customer, 100_00 + n, due_date=DAY - timedelta(days=5 + n % 20))
            ids.append(company.id)
        session.commit()
    return ids


def _runs(factory: sessionmaker[Session]) -> list[tuple[int | None, date, bool]]:
    with factory() as session:
        return [tuple(row) for row in session.execute(  # type: ignore[misc]
            select(ReminderRun.company_id, ReminderRun.run_date, ReminderRun.finished_at.is_not(None))
            .where(ReminderRun.dry_run.is_(False)).order_by(ReminderRun.company_id, ReminderRun.id))]


def _each_customer_once(factory: sessionmaker[Session], customers: int) -> None:
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Reminder)) == customers
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == customers
        assert session.scalar(select(func.count(func.distinct(OutboxMessage.customer_id)))) == customers


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_at_the_same_hour_plan_each_company_once(
    fresh_url: str, engines: Callable[[str], Engine], workers: int
) -> None:
    companies = _book(make_sessionmaker(engines(fresh_url)))
    settings = _settings(fresh_url)
    factories_ = [make_sessionmaker(engines(fresh_url)) for _ in range(workers)]

    reports = together(workers, lambda n: worker.run_due_reminders(settings, factories_[n]))

    planned = sorted(report.company_code for each in reports for report in each)
    assert planned == [f"CO{c}" for c in range(COMPANIES)]  # each company planned by one worker only
    assert all(report.queued == CUSTOMERS and report.already_queued == 0 for each in reports for report in each)
    assert _runs(factories_[0]) == [(company_id, DAY, True) for company_id in companies]
    _each_customer_once(factories_[0], COMPANIES * CUSTOMERS)
    with factories_[0]() as session:
        assert session.execute(select(ReminderClaim.claims, ReminderClaim.finished_at.is_not(None))).all() == [
            (1, True)] * COMPANIES
    # Done for the day, for every worker.
    assert [worker.run_due_reminders(settings, factory) for factory in factories_] == [[]] * workers


def test_a_run_left_by_a_dead_worker_is_taken_over_after_the_lease_and_completes(
    fresh_url: str, engines: Callable[[str], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    [company_id] = _book(make_sessionmaker(engines(fresh_url)), companies=1)
    settings = _settings(fresh_url)
    dead, survivor = make_sessionmaker(engines(fresh_url)), make_sessionmaker(engines(fresh_url))
    monkeypatch.setattr(planner, "QUEUE_BATCH", 5)  # several batches from a small book
    progress = iter(range(100))

    def die_after_the_first_batch() -> None:
        if next(progress) == 1:  # 0: the plan is made; 1: the first batch is queued
            raise Died()

    held = claims.claim(dead, company_id, DAY, timedelta(seconds=settings.reminder_lease_seconds), holder="dead")
    assert held is not None
    with pytest.raises(Died):
        planner.run_company(dead, settings, company_id, DAY, on_progress=die_after_the_first_batch)
    _each_customer_once(dead, 5)

    # Its claim still stands: the other worker skips the run, without planning it.
    clock.set(NOW + timedelta(seconds=599))
    assert worker.due_reminder_runs(survivor) == [(company_id, DAY)]
    assert worker.run_due_reminders(settings, survivor) == []
    assert len(_runs(survivor)) == 1

    clock.set(NOW + timedelta(seconds=600))  # the lease has run out
    [report] = worker.run_due_reminders(settings, survivor)
    assert (report.planned, report.queued, report.already_queued) == (CUSTOMERS - 5, CUSTOMERS - 5, 0)
    _each_customer_once(survivor, CUSTOMERS)
    assert _runs(survivor) == [(company_id, DAY, False), (company_id, DAY, True)]
    with survivor() as session:
        claim = session.execute(select(ReminderClaim.holder, ReminderClaim.claims,
                                       ReminderClaim.finished_at.is_not(None))).one()
    assert claim[1:] == (2, True) and claim[0] != "dead"
    assert worker.run_due_reminders(settings, survivor) == []


def test_a_failed_run_gives_its_claim_back_for_the_next_pass(
    fresh_url: str, engines: Callable[[str], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    [company_id] = _book(make_sessionmaker(engines(fresh_url)), companies=1)
    settings = _settings(fresh_url)
    factory = make_sessionmaker(engines(fresh_url))
    real = planner.plan_company

    def failing(*args: object, **kwargs: object) -> planner.CompanyPlan:
        raise RuntimeError("the plan failed")

    monkeypatch.setattr(planner, "plan_company", failing)
    assert worker.run_due_reminders(settings, factory) == []
    monkeypatch.setattr(planner, "plan_company", real)
    # Retried at once by the next pass (no lease to wait for), as before claims existed.
    [report] = worker.run_due_reminders(settings, factory)
    assert report.queued == CUSTOMERS
