"""The OpenAPI 3.1 document, generated from the operations and their pydantic models, and a
readable reference page rendered on the server (no CDN script: the CSP forbids it)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from api import schemas
from api.routes import OPERATIONS, PREFIX, Operation, Param

_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string", "maxLength": 200},
    "integer": {"type": "integer", "minimum": 1, "maximum": 500},
    "date": {"type": "string", "format": "date"},
    "date-time": {"type": "string", "format": "date-time"},
}
_PDF: dict[str, Any] = {"type": "string", "contentMediaType": "application/pdf"}
_TITLES = {400: "Bad request", 401: "Missing, unknown or revoked key", 403: "Read-only key",
           404: "Not found (or another company's)", 409: "Conflict", 413: "Body too large",
           415: "Body of another media type", 422: "Invalid request: errors name each field", 429: "Rate limited"}


def _param_schema(param: Param) -> dict[str, Any]:
    if param.kind == "enum":
        return {"type": "string", "enum": list(param.values)}
    return dict(_PARAM_SCHEMAS[param.kind])


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _collect(components: dict[str, Any], model: type[BaseModel], mode: str) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault(model.__name__, schema)


def _path_params(op: Operation) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in op.path.split("/") if part.startswith("{")]
    return [{"name": name, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": 999_999_999_999} if name == "id" else
             {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[^/\s](.*[^/\s])?$"}}
            for name in names]


def document() -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    _collect(components, schemas.Problem, "serialization")
    for op in OPERATIONS:
        if not op.pdf_response:
            _collect(components, op.response, "serialization")
        if op.body is not None:
            _collect(components, op.body, "validation")
        parameters = _path_params(op) + [
            {"name": p.name, "in": "query", "required": False, "description": p.description, "schema": _param_schema(p)}
            for p in op.query]
        if op.write:
            parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                               "description": "Replays the first response to the same request; refused with "
                                              "another request", "schema": {"type": "string", "minLength": 1,
                                                                           "maxLength": 200}})
        content = ({"application/pdf": {"schema": _PDF}} if op.pdf_response
                   else {"application/json": {"schema": _ref(op.response)}})
        responses: dict[str, Any] = {
            str(status): {"description": "Created" if status == 201 else "OK", "content": content}
            for status in op.statuses}
        errors = set(op.errors) | ({413, 415, 422} if op.body is not None or op.file_types else set()) | (
            {422} if op.query else set()) | ({404} if "{" in op.path else set()) | ({409, 422} if op.write else set())
        for status in sorted(errors):
            responses[str(status)] = {"description": _TITLES[status],
                                      "content": {"application/problem+json": {"schema": _ref(schemas.Problem)}}}
        operation: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
                                     "parameters": parameters, "responses": responses}
        if op.body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": _ref(op.body)}}}
        elif op.file_types:
            operation["requestBody"] = {"required": True, "description": "The file itself",
                                        "content": {media_type: {"schema": {"type": "string", "format": "binary"}}
                                                    for media_type in op.file_types}}
        paths.setdefault(PREFIX + op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Encours ERP API", "version": "1",
                 "description": "Customers, invoices, payments, events and open items of the key's company. "
                                "Amounts are decimal strings in the currency's precision."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "An API key: enc_live_…"}}},
    }


def openapi_json(request: Request) -> Response:
    return Response(json.dumps(document(), indent=1), media_type="application/json")


def docs(request: Request) -> Response:
    templates = request.app.state.templates
    spec = document()
    operations = [(path, method.upper(), op,
                   op["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
                   if "application/json" in op.get("requestBody", {}).get("content", {}) else None)
                  for path, ops in spec["paths"].items() for method, op in ops.items()]
    html = templates.render_string("api/docs.html", {
        "operations": operations, "schemas": spec["components"]["schemas"],
        "dumps": lambda value: json.dumps(value, indent=2, ensure_ascii=False)}, "en")
    return HTMLResponse(html)
