"""Every route of the back-office, under /admin."""

from __future__ import annotations

from admin import (audit, bank, book, company_settings, customers, dashboard, disputes, exports, imports, scenarios,
                   users)
from admin import routes as sign_in

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
    *book.routes,
    *bank.routes,
    *exports.routes,
]
