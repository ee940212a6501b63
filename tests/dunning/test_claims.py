"""Claims on a company's daily reminder run: one holder at a time, on both engines, with committed
data and real concurrent connections; a lease that runs out is taken over, a finished claim never."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from dunning import claims
from kernel.clock import clock
from kernel.db import make_sessionmaker
from ledger.models import ReminderClaim
from tests import factories
from tests.databases import together

DAY = date(2026, 11, 25)
LEASE = timedelta(minutes=15)
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def company_id(fresh_url: str, engines: Callable[[str], Engine]) -> int:
    with make_sessionmaker(engines(fresh_url))() as session:
        company = factories.company(session, code="CLAIMED")
        session.commit()
        return company.id


def _row(factory: sessionmaker[Session], company_id: int) -> Any:
    with factory() as session:
        return session.execute(select(ReminderClaim.holder, ReminderClaim.claims, ReminderClaim.finished_at)
                               .where(ReminderClaim.company_id == company_id)).one()


def test_of_workers_claiming_at_once_exactly_one_holds_the_run(
    fresh_url: str, engines: Callable[[str], Engine], company_id: int
) -> None:
    factories_ = [make_sessionmaker(engines(fresh_url)) for _ in range(4)]  # one engine, one connection per worker

    taken = together(4, lambda n: claims.claim(factories_[n], company_id, DAY, LEASE, holder=f"worker {n}"))

    winners = [n for n, held in enumerate(taken) if held is not None]
    assert len(winners) == 1
    assert _row(factories_[0], company_id) == (f"worker {winners[0]}", 1, None)
    # Another day of the same company is another run.
    assert claims.claim(factories_[0], company_id, DAY + timedelta(days=1), LEASE) is not None


def test_a_claim_whose_lease_ran_out_is_taken_over_once_and_the_old_holder_knows(
    fresh_url: str, engines: Callable[[str], Engine], company_id: int
) -> None:
    factory = make_sessionmaker(engines(fresh_url))
    dead = claims.claim(factory, company_id, DAY, LEASE, holder="dead worker")
    assert dead is not None
    clock.set(NOW + LEASE - timedelta(seconds=1))
    assert claims.claim(factory, company_id, DAY, LEASE, holder="early") is None  # still leased
    clock.set(NOW + LEASE)
    others = [make_sessionmaker(engines(fresh_url)) for _ in range(3)]
    taken = together(3, lambda n: claims.claim(others[n], company_id, DAY, LEASE, holder=f"worker {n}"))
    [heir] = [held for held in taken if held is not None]
    holder, count, finished = _row(factory, company_id)
    assert holder.startswith("worker ") and count == 2 and finished is None
    # The late one cannot renew nor finish what is no longer its claim; the heir can.
    assert claims.renew(factory, dead) is False
    claims.finish(factory, dead)
    assert _row(factory, company_id)[2] is None
    assert claims.renew(factory, heir) is True
    claims.finish(factory, heir)
    assert _row(factory, company_id)[2] is not None


def test_a_renewed_claim_is_not_taken_over(fresh_url: str, engines: Callable[[str], Engine], company_id: int) -> None:
    factory = make_sessionmaker(engines(fresh_url))
    held = claims.claim(factory, company_id, DAY, LEASE)
    assert held is not None
    clock.set(NOW + LEASE - timedelta(minutes=1))
    assert claims.renew(factory, held) is True
    clock.set(NOW + LEASE + timedelta(minutes=1))
    assert claims.claim(factory, company_id, DAY, LEASE) is None
    clock.set(NOW + 2 * LEASE)
    assert claims.claim(factory, company_id, DAY, LEASE) is not None


def test_a_finished_claim_is_never_taken_over_and_a_released_one_at_once(
    fresh_url: str, engines: Callable[[str], Engine], company_id: int
) -> None:
    factory = make_sessionmaker(engines(fresh_url))
    held = claims.claim(factory, company_id, DAY, LEASE)
    assert held is not None
    claims.finish(factory, held)
    clock.set(NOW + 10 * LEASE)
    assert claims.claim(factory, company_id, DAY, LEASE) is None

    other_day = DAY + timedelta(days=1)
    given_back = claims.claim(factory, company_id, other_day, LEASE)
    assert given_back is not None
    claims.release(factory, given_back)
    again = claims.claim(factory, company_id, other_day, LEASE)
    assert again is not None and again.token != given_back.token
