"""The one webhook intake of every provider: `POST /webhooks/{provider}` (/webhooks/stripe,
/webhooks/gocardless). Verify on the raw body, store each event raw once, answer 2xx fast.

A delivery whose events are all stored already is answered after one indexed read (on SQLite on
the event loop: no thread hop, no wait for the one writer). An event that needs nothing from the
provider's API is stored and applied before the answer, in one transaction of its own; one that
changes nothing, as one read tells (`payments.settlement.triage`), in one statement; one that moves
its payment without settling money, as that read tells too, with Core statements (on PostgreSQL
the duplicate check, that read and that write all on the event loop's own connections, with no
thread hop: `payments.webhooks.intake_on_loop`). One that calls out is applied just after the
answer is sent (a background task of this request): the provider's API is asked first, outside
any transaction, so a slow provider never holds the database writer nor the provider's own
delivery. Either way a failure is kept on the stored event and retried by the worker, which also
picks up an event whose process died.
"""

from __future__ import annotations

import enum
import json
import logging
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from kernel.db import read_connection
from kernel.settings import Settings
from payments.base import PaymentProvider, ProviderEvent, SignatureError, Triage
from payments.registry import webhook_providers
from payments.settlement import triage_event
from payments.webhooks import (
    PreparedHandler, ProviderHandler, apply_new, decode_headers, store_and_apply, store_and_write, store_many,
    intake_on_loop, store_unchanged, stored_already, stored_event, stored_one_on_loop,
)

log = logging.getLogger("encours.webhooks")

Deferred = list[tuple[int, ProviderEvent]]


class _NotTriaged(enum.Enum):
    not_triaged = "not triaged"  # no read has told what the event does yet: `_intake` reads


NOT_TRIAGED = _NotTriaged.not_triaged
# What one read told of a single event (`payments.settlement.triage`; None: the handler's), or not yet.
Told = Triage | None | Literal[_NotTriaged.not_triaged]


async def webhook(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    provider = webhook_providers().get(request.path_params["provider"])
    if provider is None:
        return PlainTextResponse("no such provider", status_code=404)
    if not provider.is_configured(settings):
        return PlainTextResponse(f"{provider.name} is not configured", status_code=404)
    body = await request.body()
    try:
        events = provider.verify(settings, request.headers, body)
    except SignatureError as error:
        log.warning("%s webhook refused: %s", provider.name, error)
        return PlainTextResponse("invalid signature", status_code=provider.bad_signature_status or 400)
    checked = request.app.state.reads_inline
    if checked and _stored_already(request, provider, events):
        # SQLite: a read on the event loop tells a duplicate, with no thread hop and no wait for the writer.
        return _duplicates(len(events))
    loop_reads = getattr(request.app.state, "loop_reads", None)
    told: Told = NOT_TRIAGED
    if loop_reads is not None and len(events) == 1 and not provider.calls_out(events[0]):
        # PostgreSQL: the read and, when it tells enough, the write on the loop's own connections
        # (kernel.loop_reads); a write whose outcome is unknown raises: a 500, the provider sends
        # the event again (payments.webhooks.intake_on_loop).
        # The request's headers as they are: only an event stored reads them (`event_row` keeps a few).
        outcome = await intake_on_loop(loop_reads, provider, events[0], request.headers)
        if outcome == "duplicate":
            return _duplicates(1)
        if outcome is not None:
            return Response(_ONE_PROCESSED, media_type="application/json")
        checked, told = True, None  # told on the loop: nothing its read lets it write, the handler's
    elif loop_reads is not None and len({event.id for event in events}) == 1:
        # PostgreSQL: the same read through the loop's own connections (kernel.loop_reads).
        if await stored_one_on_loop(loop_reads, provider.name, events[0].id):
            return _duplicates(len(events))
        checked = True
    outcomes, deferred = await run_in_threadpool(_intake, request, provider, events, checked, told)
    background = BackgroundTask(_apply_deferred, request.app.state.sessions, provider, settings, deferred) \
        if deferred else None
    return JSONResponse({"received": len(events), "outcomes": outcomes}, background=background)


# The answer to a delivery of one event stored already, as JSONResponse renders it, encoded once.
_ONE_DUPLICATE = json.dumps({"received": 1, "outcomes": ["duplicate"]}, separators=(",", ":")).encode("utf-8")
_ONE_PROCESSED = json.dumps({"received": 1, "outcomes": ["processed"]}, separators=(",", ":")).encode("utf-8")


def _duplicates(count: int) -> Response:
    if count == 1:
        return Response(_ONE_DUPLICATE, media_type="application/json")
    return JSONResponse({"received": count, "outcomes": ["duplicate"] * count})


def _stored_already(request: Request, provider: PaymentProvider, events: list[ProviderEvent]) -> bool:
    with read_connection(request.app.state.read_sessions) as connection:
        return stored_already(connection, provider.name, [event.id for event in events])


def _intake(request: Request, provider: PaymentProvider, events: list[ProviderEvent],
            checked: bool, told: Told = NOT_TRIAGED) -> tuple[list[str], Deferred]:
    sessions = request.app.state.sessions
    settings = request.app.state.settings
    if len(events) == 1 and not provider.calls_out(events[0]):
        event = events[0]
        # One indexed read first, so that a duplicate costs that one round trip (unless the event
        # loop read it already: `checked`).
        if not checked and _stored_already(request, provider, events):
            return ["duplicate"], []

        # One read tells an event that changes nothing (a declined attempt told again, a late
        # status): stored already processed in one statement (payments.webhooks.store_unchanged);
        # or one that moves its payment without settling money (a new decline reason,
        # processing): stored and written with Core statements (payments.webhooks.store_and_write).
        # Unless the event loop's read told already (PostgreSQL).
        if told is NOT_TRIAGED:
            with read_connection(request.app.state.read_sessions) as connection:
                told = triage_event(connection, provider, event)
        if told is not None:
            if told.writes is None:
                done = store_unchanged(sessions, provider.name, event.id, event.type, event.body,
                                       decode_headers(request.headers))
            else:
                done = store_and_write(sessions, provider.name, event.id, event.type, event.body,
                                       decode_headers(request.headers), told.writes)
            if done is not False:  # False: the payment moved since the read; the handler decides
                return ["duplicate" if done is None else "processed"], []

        def apply_one(session: Session) -> str:
            return provider.apply(session, settings, event, None)

        # Stored and applied in one transaction (payments.webhooks.store_and_apply).
        done = store_and_apply(sessions, provider.name, event.id, event.type, event.body,
                               decode_headers(request.headers), apply_one)
        return ["duplicate" if done is None else "processed" if done else "kept for retry"], []
    # All the request's events are kept (or none): the provider resends the whole request otherwise.
    stored = store_many(sessions, provider.name, [(event.id, event.type, event.body) for event in events],
                        decode_headers(request.headers))
    outcomes: list[str] = []
    deferred: Deferred = []
    for event, pk in zip(events, stored):
        if pk is None:
            outcomes.append("duplicate")  # delivered at least once: the stored copy is (being) applied
        elif provider.calls_out(event):
            deferred.append((pk, event))
            outcomes.append("accepted")
        else:
            # Applied from the verified payload: the stored body is that same event, already parsed.
            def apply(session: Session, event: ProviderEvent = event) -> str:
                return provider.apply(session, settings, event, None)

            outcomes.append("processed" if apply_new(sessions, pk, apply) else "kept for retry")
    return outcomes, deferred


def _apply_deferred(sessions: sessionmaker[Session], provider: PaymentProvider, settings: Settings,
                    deferred: Deferred) -> None:
    """After the answer: ask the provider, then apply each event in its own transaction."""
    handler = ProviderHandler(provider, settings)
    for pk, _event in deferred:
        ready = handler.prepare(sessions, stored_event(sessions, pk))

        def apply(session: Session, ready: PreparedHandler = ready) -> str:
            return ready(session, None)

        apply_new(sessions, pk, apply)


class _Endpoint:
    """`webhook` as the route's ASGI app: its Request built, its answer sent. Starlette's wrapper of a
    function endpoint (`request_response`) adds per delivery a closure and a layer that hands an
    exception to the app's handlers, which the webhooks' stack does already one layer up
    (`encours.app`: its ExceptionMiddleware, with the same handlers): 3-7 µs a delivery
    (bench/RESULTS.md, 2026-12-06 hook13)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await webhook(Request(scope, receive, send))
        await response(scope, receive, send)


routes = [
    Route("/webhooks/{provider:str}", _Endpoint(), methods=["POST"], name="payments:webhook"),
]
