"""Every route of the ERP API, relative to PREFIX (/api/v1), where the application mounts them."""

from __future__ import annotations

from starlette.routing import Route

from api import openapi
from api.routes import PREFIX
from api.routes import routes as operation_routes

__all__ = ["PREFIX", "routes"]

routes = [
    Route("/openapi.json", openapi.openapi_json, name="api_openapi"),
    Route("/docs", openapi.docs, name="api_docs"),
    *operation_routes(),
]
