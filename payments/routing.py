"""Every route of the payments package: the providers' webhook endpoints."""

from __future__ import annotations

from payments import webhook_routes

routes = [*webhook_routes.routes]
