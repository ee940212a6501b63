"""Every route of the ERP API, under /api/v1."""

from __future__ import annotations

from starlette.routing import Route

from api import openapi
from api.routes import PREFIX
from api.routes import routes as operation_routes

routes = [
    Route(PREFIX + "/openapi.json", openapi.openapi_json, name="api_openapi"),
    Route(PREFIX + "/docs", openapi.docs, name="api_docs"),
    *operation_routes(),
]
