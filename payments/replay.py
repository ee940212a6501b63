"""Staff replay of a stored provider event, from the webhooks log.

An unprocessed (failed) event goes through `webhooks.process_event`, exactly as the worker's
retry would: applied in its own transaction, marked processed on success, its error kept
otherwise. A processed event is run through its handler again in a transaction of its own
and left marked processed whatever happens: the handlers are idempotent, so this changes no
money and shows staff that it does not; a failure is reported, never recorded on the event.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Mapping

from sqlalchemy.orm import Session, sessionmaker

from kernel.db import unit_of_work
from ledger import audit
from ledger.models import WebhookEvent
from payments.base import NotOurs
from payments.webhooks import NOT_OURS, Handler, prepared, process_event


@dataclass(frozen=True)
class ReplayOutcome:
    outcome: str  # "processed", "failed", "reprocessed", "not_ours", "no_handler"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("processed", "reprocessed", "not_ours")


def replay(session_factory: sessionmaker[Session], event_pk: int, handlers: Mapping[str, Handler],
           actor: str) -> ReplayOutcome:
    with unit_of_work(session_factory) as session:
        event = session.get(WebhookEvent, event_pk)
        if event is None:
            raise LookupError(f"no webhook event {event_pk}")
        provider, was_processed = event.provider, event.processed_at is not None
    handler = handlers.get(provider)
    if handler is None:
        result = ReplayOutcome("no_handler", f"no handler is registered for {provider}")
    elif not was_processed:
        ok = process_event(session_factory, event_pk, handler)
        with unit_of_work(session_factory) as session:
            after = session.get_one(WebhookEvent, event_pk)
            error, unmatched = after.error, after.outcome == NOT_OURS
        result = ReplayOutcome("not_ours" if unmatched else "processed" if ok else "failed", None if ok else error)
    else:
        result = _rerun(session_factory, event_pk, handler)
    with unit_of_work(session_factory) as session:
        audit.record(session, actor_type="user", actor=actor, action="webhook.replayed", entity_type="webhook_event",
                     entity_id=event_pk, after={"outcome": result.outcome, "error": (result.error or "")[-500:] or None})
    return result


def _rerun(session_factory: sessionmaker[Session], event_pk: int, handler: Handler) -> ReplayOutcome:
    handler = prepared(session_factory, event_pk, handler)  # the provider is asked before the transaction
    with unit_of_work(session_factory) as session:
        event = session.get_one(WebhookEvent, event_pk, with_for_update=True)
        try:
            with session.begin_nested():
                handler(session, event)
        except NotOurs as why:
            return ReplayOutcome("not_ours", str(why))
        except Exception as error:  # noqa: BLE001 - reported to staff, the event stays as it was
            return ReplayOutcome("failed", "".join(traceback.format_exception(error))[-4000:])
    return ReplayOutcome("reprocessed")
