"""Every route of the back-office, relative to PREFIX (the application mounts them there)."""

from __future__ import annotations

from starlette.routing import Route

from admin import (api_keys, audit, bank, book, company_settings, contacts, customers, dashboard, disputes,
                   erp_webhooks, exports, imports, my_day, personal_data, reports, scenarios, users)
from admin import routes as sign_in

PREFIX = "/admin"

# "/admin" itself, beside the mount (a Mount answers only below its path).
home = Route(PREFIX, dashboard.home, methods=["GET"], name="admin:home")

routes = [
    *sign_in.routes,
    *disputes.routes,
    *dashboard.routes,
    *users.routes,
    *company_settings.routes,
    *imports.routes,
    *audit.routes,
    *scenarios.routes,
    *customers.routes,
    *personal_data.routes,
    *erp_webhooks.routes,  # before book's /admin/webhooks/{event_id}
    *api_keys.routes,
    *contacts.routes,
    *my_day.routes,
    *reports.routes,
    *book.routes,
    *bank.routes,
    *exports.routes,
]
