"""The HTTP side of /api/v1: bearer keys, rate limit, body limit, idempotent writes, problem+json.

Each operation is declared once (`OPERATIONS`): its route, its request and response models, its
query parameters; the OpenAPI document (api.openapi) is generated from the same declarations."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kernel.clock import clock
from kernel.db import unit_of_work
from kernel.user_error import UserError, UserErrors
from ledger.api_keys import authenticate
from kernel.storage import StorageUnavailable
from ledger.models import ApiIdempotency, ApiKey, Company
from ledger.storage import FileStorage, ObjectMissing
from links.throttle import record_failure
from reconciliation.parsers import MAX_FILE_BYTES
from api import schemas, service
from api.service import ApiError

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
MAX_BODY_BYTES = 5 * 1024 * 1024  # a bulk of 1,000 invoices is ~300 kB
RATE_WINDOW_SECONDS = 60
STATEMENT_TYPES = ("application/octet-stream", "application/xml", "text/xml", "text/plain", "text/csv")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "string", "integer", "date", "date-time", "enum"
    description: str
    values: tuple[str, ...] = ()


@dataclass
class Call:
    path: dict[str, str]
    query: dict[str, Any]
    body: BaseModel | None
    raw: bytes = b""  # the file itself, for an operation that takes one (`Operation.file_types`)
    settings: Any = None
    storage: FileStorage | None = None
    # Storage objects the operation stopped referencing: deleted once its transaction committed.
    removed: list[str] = field(default_factory=list)
    # Storage objects the operation stored: deleted unless its transaction committed (a lost race).
    saved: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    run: Callable[[Any, ApiKey, Call], tuple[int, Any]]
    response: type[BaseModel]
    body: type[BaseModel] | None = None
    write: bool = False
    query: tuple[Param, ...] = ()
    statuses: tuple[int, ...] = (200,)
    errors: tuple[int, ...] = field(default=(401, 429))
    file_types: tuple[str, ...] = ()  # media types of a raw file body, instead of a JSON `body`
    max_body: int = MAX_BODY_BYTES
    max_body_setting: str | None = None  # a Settings attribute that holds max_body instead
    pdf_response: bool = False  # run returns (status, (storage key, number)): the stored PDF is sent


_PAGING = (Param("limit", "integer", f"Items per page, 1 to {service.MAX_LIMIT} (default {service.DEFAULT_LIMIT})"),
           Param("cursor", "string", "next_cursor of the previous page"))


def _limit(call: Call) -> int:
    return int(call.query.get("limit") or service.DEFAULT_LIMIT)


def _storage(call: Call) -> FileStorage:
    assert call.storage is not None
    return call.storage


def _created(pair: tuple[bool, BaseModel]) -> tuple[int, BaseModel]:
    return (201 if pair[0] else 200), pair[1]


OPERATIONS: list[Operation] = [
    Operation("GET", "/customers", "listCustomers", "List customers with their contacts", "customers",
              lambda s, k, c: (200, service.list_customers(s, k, c.query.get("cursor"), _limit(c))),
              schemas.CustomerPage, query=_PAGING, errors=(401, 422, 429)),
    Operation("GET", "/customers/{ref}", "getCustomer", "Read a customer by the ERP's reference", "customers",
              lambda s, k, c: (200, service.get_customer(s, k, c.path["ref"])), schemas.CustomerOut,
              errors=(401, 404, 429)),
    Operation("PUT", "/customers/{ref}", "putCustomer", "Create or update a customer by the ERP's reference",
              "customers", lambda s, k, c: _created(service.put_customer(s, k, c.path["ref"], c.body)),  # type: ignore[arg-type]
              schemas.CustomerOut, body=schemas.CustomerIn, write=True, statuses=(200, 201),
              errors=(401, 403, 413, 422, 429)),
    Operation("POST", "/customers:bulk", "bulkCustomers", "Create or update up to 1,000 customers, all or nothing",
              "customers", lambda s, k, c: (200, service.bulk_customers(s, k, c.body)),  # type: ignore[arg-type]
              schemas.BulkReport, body=schemas.CustomersBulkIn, write=True, errors=(401, 403, 413, 422, 429)),
    Operation("GET", "/invoices", "listInvoices", "List invoices and credit notes", "invoices",
              lambda s, k, c: (200, service.list_invoices(s, k, service.InvoiceFilters(
                  c.query.get("status"), c.query.get("customer"), c.query.get("due_from"), c.query.get("due_to"),
                  c.query.get("updated_since")), c.query.get("cursor"), _limit(c))),
              schemas.InvoicePage, query=(
                  Param("status", "enum", "Only this status", ("open", "partially_paid", "paid", "disputed", "void")),
                  Param("customer", "string", "Only this customer's (its reference)"),
                  Param("due_from", "date", "Due on or after this date"),
                  Param("due_to", "date", "Due on or before this date"),
                  Param("updated_since", "date-time", "Changed at or after this moment"), *_PAGING),
              errors=(401, 422, 429)),
    Operation("GET", "/invoices/{number}", "getInvoice", "Read an invoice or credit note by number", "invoices",
              lambda s, k, c: (200, service.get_invoice(s, k, c.path["number"])), schemas.InvoiceOut,
              errors=(401, 404, 429)),
    Operation("PUT", "/invoices/{number}", "putInvoice", "Create or update an invoice or credit note by number",
              "invoices", lambda s, k, c: _created(service.put_invoice(s, k, c.path["number"], c.body)),  # type: ignore[arg-type]
              schemas.InvoiceOut, body=schemas.InvoiceIn, write=True, statuses=(200, 201),
              errors=(401, 403, 413, 422, 429)),
    Operation("POST", "/invoices/{number}/void", "voidInvoice", "Cancel an invoice nothing has settled yet",
              "invoices", lambda s, k, c: (200, service.void_invoice(s, k, c.path["number"])), schemas.InvoiceOut,
              write=True, errors=(401, 403, 404, 409, 429)),
    Operation("PUT", "/invoices/{number}/pdf", "putInvoicePdf",
              "Send the original PDF of an invoice: the portal serves it instead of its summary PDF", "invoices",
              lambda s, k, c: _created(service.put_invoice_pdf(s, k, c.path["number"], _storage(c), c.raw,
                                                               c.removed, c.saved)),
              schemas.InvoicePdfOut, file_types=("application/pdf",), max_body_setting="api_pdf_max_bytes",
              write=True, statuses=(200, 201),
              errors=(401, 403, 404, 413, 415, 422, 429)),
    Operation("GET", "/invoices/{number}/pdf", "getInvoicePdf", "Read the original PDF of an invoice", "invoices",
              lambda s, k, c: (200, service.invoice_pdf_key(s, k, c.path["number"])), schemas.InvoicePdfOut,
              pdf_response=True, errors=(401, 404, 429)),
    Operation("DELETE", "/invoices/{number}/pdf", "deleteInvoicePdf",
              "Remove the original PDF of an invoice: the portal serves its summary PDF again", "invoices",
              lambda s, k, c: (200, service.delete_invoice_pdf(s, k, c.path["number"], c.removed)),
              schemas.InvoiceOut, write=True, errors=(401, 403, 404, 429)),
    Operation("POST", "/invoices:bulk", "bulkInvoices", "Create or update up to 1,000 invoices, all or nothing",
              "invoices", lambda s, k, c: (200, service.bulk_invoices(s, k, c.body)),  # type: ignore[arg-type]
              schemas.BulkReport, body=schemas.InvoicesBulkIn, write=True, errors=(401, 403, 413, 422, 429)),
    Operation("GET", "/payments", "listPayments", "Payments Encours collected or matched, with their allocations",
              "payments", lambda s, k, c: (200, service.list_payments(s, k, c.query.get("since"),
                                                                      c.query.get("cursor"), _limit(c))),
              schemas.PaymentPage, query=(Param("since", "date-time", "Changed at or after this moment"), *_PAGING),
              errors=(401, 422, 429)),
    Operation("POST", "/payments", "recordPayment",
              "Record a payment received outside Encours (cheque, transfer, LCR, cash, set-off)", "payments",
              lambda s, k, c: (201, service.record_payment(s, k, c.body)),  # type: ignore[arg-type]
              schemas.PaymentOut, body=schemas.PaymentIn, write=True, statuses=(201,),
              errors=(401, 403, 413, 422, 429)),
    Operation("POST", "/payments/{id}/cancel", "cancelPayment",
              "Cancel a payment recorded by hand: what it settled reopens", "payments",
              lambda s, k, c: (200, service.cancel_payment(s, k, c.path["id"])), schemas.PaymentOut,
              write=True, errors=(401, 403, 404, 409, 429)),
    Operation("POST", "/bank-statements", "importBankStatement",
              "Load a bank statement file (camt.052/053/054, MT940, CSV) as `encours import bank` does",
              "bank statements",
              lambda s, k, c: (200, service.import_bank_statement(s, k, c.raw, c.query.get("filename"),
                                                                  c.settings)),
              schemas.BankImportReport, write=True, errors=(401, 403, 413, 415, 422, 429),
              query=(Param("filename", "string", "The file's name, shown in the summary and the messages"),),
              file_types=STATEMENT_TYPES, max_body=MAX_FILE_BYTES),
    Operation("GET", "/events", "listEvents", "What happened, oldest first after the cursor", "events",
              lambda s, k, c: (200, service.list_events(s, k, c.query.get("after"), _limit(c))),
              schemas.EventPage, query=(Param("after", "string", "next_cursor of the previous page"),
                                        Param("limit", "integer", "Items per page")),
              errors=(401, 422, 429)),
    Operation("PUT", "/open-items", "putOpenItems",
              "The complete list of open items: missing invoices are settled outside Encours", "open items",
              lambda s, k, c: (200, service.put_open_items(s, k, c.body)),  # type: ignore[arg-type]
              schemas.OpenItemsReport, body=schemas.OpenItemsIn, write=True, errors=(401, 403, 413, 422, 429)),
]


# --- responses -----------------------------------------------------------------------


def problem(status: int, title: str, detail: str, errors: list[tuple[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    body = schemas.Problem(type="about:blank" if not errors else f"/api/v1/docs#problem-{status}", title=title,
                           status=status, detail=detail,
                           errors=[schemas.FieldError(field=f, message=m) for f, m in (errors or [])])
    return Response(body.model_dump_json(), status, media_type="application/problem+json", headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_errors(error: ValidationError) -> list[tuple[str, str]]:
    found = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        found.append((_field(tuple(item["loc"])), message))
    return found


# --- the request pipeline ------------------------------------------------------------


def _query(op: Operation, request: Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    errors = []
    allowed = {p.name: p for p in op.query}
    for name in request.query_params:
        if name not in allowed:
            errors.append((name, "unknown query parameter"))
    for name, param in allowed.items():
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            continue
        try:
            if param.kind == "integer":
                number = int(raw) if raw.isascii() and raw.isdigit() else 0
                if not 1 <= number <= service.MAX_LIMIT:
                    raise ValueError(f"a whole number from 1 to {service.MAX_LIMIT}")
                values[name] = number
            elif param.kind == "date":
                values[name] = date.fromisoformat(raw)
            elif param.kind == "date-time":
                moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
                if moment.tzinfo is None:
                    raise ValueError("a date-time with its offset, e.g. 2026-12-01T00:00:00Z")
                values[name] = moment
            elif param.kind == "enum":
                if raw not in param.values:
                    raise ValueError("one of " + ", ".join(param.values))
                values[name] = raw
            else:
                values[name] = raw[:200]
        except ValueError as error:
            errors.append((name, f"expected {error}" if "one of" in str(error) or "whole" in str(error)
                           else f"{raw!r} is not a {param.kind} ({error})"))
    if errors:
        raise ApiError(422, "Invalid query", "the query parameters are not valid", errors)
    return values


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def _check_key(state: Any, key_text: str | None) -> tuple[int, int]:
    """(key id, company id) of a live key that is within its rate; raises ApiError otherwise."""
    if key_text is None:
        raise ApiError(401, "Unauthorized", "send the API key as 'Authorization: Bearer enc_live_…'")
    with unit_of_work(state.sessions) as session:
        key = authenticate(session, key_text)
        if key is None:
            raise ApiError(401, "Unauthorized", "this API key is unknown or revoked")
        count = record_failure(session, f"api:{key.id}", RATE_WINDOW_SECONDS)
        limit = state.settings.api_requests_per_minute
        key_id, company_id = key.id, key.company_id
    if count > limit:
        raise ApiError(429, "Too Many Requests", f"more than {limit} requests in a minute with this key")
    return key_id, company_id


def _retry_after(state: Any, key_id: int) -> str:
    from ledger.models import Throttle

    with unit_of_work(state.read_sessions) as session:
        start = session.scalar(select(Throttle.window_start).where(Throttle.key == f"api:{key_id}"))
    if start is None:
        return "1"
    left = start + timedelta(seconds=RATE_WINDOW_SECONDS) - clock.now()
    return str(max(1, int(left.total_seconds()) + 1))


def _handle(state: Any, op: Operation, key_text: str | None, call: Call, raw: bytes,
            idempotency_key: str | None) -> Response:
    try:
        key_id, _ = _check_key(state, key_text)
    except ApiError as error:
        headers = None
        if error.status == 429 and key_text:
            with unit_of_work(state.read_sessions) as session:
                key = authenticate(session, key_text)
                key_id = key.id if key else 0
                session.rollback()
            headers = {"Retry-After": _retry_after(state, key_id)}
        return problem(error.status, error.title, error.detail, error.errors, headers)
    request_hash = hashlib.sha256(f"{op.operation_id} {json.dumps(call.path, sort_keys=True)} ".encode() + raw
                                  ).hexdigest()
    try:
        return _answer(state, op, key_id, call, idempotency_key, request_hash)
    finally:
        # What the operation stored for a transaction that did not commit is referenced by nothing.
        _forget(call.storage, call.saved)


def _answer(state: Any, op: Operation, key_id: int, call: Call, idempotency_key: str | None,
            request_hash: str) -> Response:
    try:
        with unit_of_work(state.sessions) as session:
            key = session.get(ApiKey, key_id)
            assert key is not None
            key.company = session.get(Company, key.company_id)  # type: ignore[assignment]
            if op.write and key.read_only:
                raise ApiError(403, "Forbidden", f"the key {key.name!r} is read-only")
            if op.write and idempotency_key:
                stored = session.scalar(select(ApiIdempotency).where(ApiIdempotency.api_key_id == key.id,
                                                                     ApiIdempotency.key == idempotency_key))
                if stored is not None:
                    if stored.request_hash != request_hash:
                        raise ApiError(422, "Idempotency-Key reused",
                                       "this Idempotency-Key was sent with another request",
                                       [("Idempotency-Key", "already used for a different request")])
                    return Response(stored.body, stored.status_code, media_type="application/json",
                                    headers={"Idempotent-Replayed": "true"})
            status, result = op.run(session, key, call)
            if op.pdf_response:
                storage_key, number = result
                body = ""
            else:
                body = result.model_dump_json()
            if op.write and idempotency_key:
                session.add(ApiIdempotency(api_key_id=key.id, key=idempotency_key, request_hash=request_hash,
                                           status_code=status, body=body, created_at=clock.now()))
                session.flush()
        call.saved.clear()  # committed: rows point to them now
    except ApiError as error:
        return problem(error.status, error.title, error.detail, error.errors)
    except (UserError, UserErrors) as refused:
        # A service's refusal, each problem under the field it names (in English, as the API speaks).
        return problem(422, "Invalid request", f"{refused}; nothing was written",
                       [(e.field or "body", e.render("en")) for e in UserErrors.of(refused)])
    except IntegrityError:
        # Another request with the same Idempotency-Key (or number) committed first: the client retries.
        return problem(409, "Conflict", "a concurrent request changed the same records; send it again")
    _forget(call.storage, call.removed)
    if op.pdf_response:
        assert call.storage is not None
        try:
            content = call.storage.read(storage_key)
        except ObjectMissing:
            return problem(404, "Not Found", f"the original PDF of invoice {number} is missing from the storage")
        return Response(content, status, media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="{safe_filename(number)}.pdf"'})
    return Response(body, status, media_type="application/json")


def _forget(storage: FileStorage | None, keys: list[str]) -> None:
    for key in keys:
        assert storage is not None
        try:
            storage.delete(key)
        except StorageUnavailable:
            logger.warning("could not delete the stored object %s; it is no longer referenced", key)


def safe_filename(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80] or "document"


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "Content Too Large", f"the body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "Content Too Large", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _endpoint(op: Operation) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            limit = getattr(request.app.state.settings, op.max_body_setting) if op.max_body_setting else op.max_body
            raw = await _read_body(request, limit) if op.body is not None or op.file_types else b""
            query = _query(op, request)
            body = None
            if op.file_types:
                media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
                if media_type not in op.file_types:
                    raise ApiError(415, "Unsupported Media Type", "send the file itself as the body, as one of "
                                   + ", ".join(op.file_types))
            if op.body is not None:
                if "json" not in request.headers.get("content-type", ""):
                    raise ApiError(415, "Unsupported Media Type", "send the body as application/json")
                try:
                    body = op.body.model_validate_json(raw)
                except ValidationError as error:
                    raise ApiError(422, "Invalid body", "the body does not match the schema",
                                   validation_errors(error)) from None
            idempotency_key = request.headers.get("idempotency-key")
            if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
                raise ApiError(422, "Invalid header", "Idempotency-Key has 1 to 200 characters",
                               [("Idempotency-Key", "1 to 200 characters")])
        except ApiError as error:
            return problem(error.status, error.title, error.detail, error.errors)
        call = Call(dict(request.path_params), query, body, raw, request.app.state.settings,
                    FileStorage(request.app.state.storage))
        return await run_in_threadpool(_handle, request.app.state, op, _bearer(request), call, raw, idempotency_key)

    return endpoint


def _starlette_path(path: str) -> str:
    return path.replace("{ref}", "{ref:str}").replace("{number}", "{number:str}").replace("{id}", "{id:str}")


def routes() -> list[Route]:
    """One route per path of OPERATIONS, relative to PREFIX (api.routing mounts them there)."""
    by_path: dict[str, list[Operation]] = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, []).append(op)
    found = []
    for path, ops in by_path.items():
        handlers = {op.method: _endpoint(op) for op in ops}

        async def dispatch(request: Request, handlers: dict[str, Any] = handlers) -> Response:
            handler = handlers.get(request.method)
            if handler is None:
                return problem(405, "Method Not Allowed", f"{request.method} is not allowed here",
                               headers={"Allow": ", ".join(sorted(handlers))})
            response: Response = await handler(request)
            return response

        found.append(Route(_starlette_path(path), dispatch, methods=[*handlers, "PATCH", "DELETE", "POST",
                                                                                "PUT", "GET"]))
    return found


def not_found(request: Request) -> Response:
    return problem(404, "Not Found", f"no API operation at {request.url.path}")


def json_response(data: dict[str, Any]) -> Response:
    return JSONResponse(data)
