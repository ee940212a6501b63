"""Every route of the debtor's portal: the magic link, the statement, requests, and paying."""

from __future__ import annotations

from portal import disputes, pay, pay_card, pay_gocardless
from portal import routes as statement

routes = [*statement.routes, *pay.routes, *pay_card.routes, *pay_gocardless.routes, *disputes.routes]
