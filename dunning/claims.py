"""Claims on a company's daily reminder run, so that several workers plan it once.

When a company's reminder hour comes, every worker finds its run due. The first to insert the
(company, day) row of `reminder_claims` plans it; the others find the row and skip the run at
once, instead of planning and rendering it all again only to have the reminders' unique key keep
their copies out. One statement decides, on both engines: `INSERT … ON CONFLICT DO UPDATE … WHERE`
— PostgreSQL makes a concurrent insert of the same key wait for the first one's commit, SQLite
has one writer at a time.

A claim lasts `lease` without news; the planner renews it after each batch it queues. A worker
that died while planning leaves an unfinished claim whose lease runs out (by `kernel.clock`): the
next worker to find the run due takes it over and plans it, and the reminders the dead one already
queued are not queued again (the reminders' unique key). A finished claim is never taken over.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import ColumnElement, delete, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from kernel.clock import clock
from kernel.db import unit_of_work
from ledger.models import ReminderClaim

CLAIMS = ReminderClaim.__table__


@dataclass(frozen=True)
class Claim:
    company_id: int
    run_date: date
    token: str
    lease: timedelta


def this_process() -> str:
    """Who holds a claim, for people reading the table."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def claim(session_factory: sessionmaker[Session], company_id: int, run_date: date, lease: timedelta,
          holder: str | None = None) -> Claim | None:
    """The run of `company_id` on `run_date` for us to plan, or None when another worker holds it
    (or finished it)."""
    now = clock.now()
    token = uuid.uuid4().hex
    with unit_of_work(session_factory) as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        insert = postgresql_insert if postgres else sqlite_insert
        statement = insert(CLAIMS).values(
            company_id=company_id, run_date=run_date, token=token, holder=holder or this_process(),
            claimed_at=now, lease_until=now + lease, claims=1,
        )
        taken = session.execute(
            statement.on_conflict_do_update(
                index_elements=[CLAIMS.c.company_id, CLAIMS.c.run_date],
                set_={"token": statement.excluded.token, "holder": statement.excluded.holder,
                      "claimed_at": statement.excluded.claimed_at, "lease_until": statement.excluded.lease_until,
                      "claims": CLAIMS.c.claims + 1},
                # Only a claim that nobody finished and whose holder stopped renewing it.
                where=CLAIMS.c.finished_at.is_(None) & (CLAIMS.c.lease_until <= now),
            ).returning(CLAIMS.c.token)
        ).scalar_one_or_none()
    return Claim(company_id, run_date, token, lease) if taken == token else None


def renew(session_factory: sessionmaker[Session], held: Claim) -> bool:
    """Extend the lease; False when the claim was taken over meanwhile (our lease had run out)."""
    now = clock.now()
    with unit_of_work(session_factory) as session:
        result = session.execute(
            update(CLAIMS).where(*_ours(held), CLAIMS.c.finished_at.is_(None)).values(lease_until=now + held.lease))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def finish(session_factory: sessionmaker[Session], held: Claim) -> None:
    """The run is done: nobody takes it over, whatever the clock says."""
    with unit_of_work(session_factory) as session:
        session.execute(update(CLAIMS).where(*_ours(held)).values(finished_at=clock.now()))


def release(session_factory: sessionmaker[Session], held: Claim) -> None:
    """Give the run back at once (it failed, or the company's reminders are off): the next worker
    to find it due claims it."""
    with unit_of_work(session_factory) as session:
        session.execute(delete(CLAIMS).where(*_ours(held)))


def _ours(held: Claim) -> tuple[ColumnElement[bool], ...]:
    return (CLAIMS.c.company_id == held.company_id, CLAIMS.c.run_date == held.run_date,
            CLAIMS.c.token == held.token)
