"""Back-office: the audit trail, searchable and paged (an htmx fragment per page).

Every signed-in role reads it, scoped as `admin.audit_service` says: a viewer reads its
companies' trail (it reads everything else there too), a collector only its customers'.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin import audit_service
from admin.access import Staff, staff_get, staff_zone
from admin.audit_service import AuditQuery
from kernel import i18n
from kernel.i18n import N_
from ledger import audit
from ledger.models import AuditEvent
from admin.access import moment

ACTOR_TYPES = {"user": N_("Staff"), "contact": N_("Debtor"), "provider": N_("Provider"), "system": N_("System"),
               "api": N_("ERP API key")}


RECORD_TYPES = {
    "api_key": N_("ERP API key"), "bank_entry": N_("Bank entry"), "checkout": N_("Payment started by the debtor"),
    "company": N_("Company"), "contact": N_("Contact"), "customer": N_("Customer"), "dispute": N_("Dispute"),
    "export": N_("Download"), "fx_rate": N_("Exchange rate"), "invoice": N_("Invoice"), "note": N_("Note"),
    "outbox": N_("Email"), "payment": N_("Payment"), "promise": N_("Promise to pay"), "reminder": N_("Reminder"),
    "scenario": N_("Reminder scenario"), "user": N_("Staff account"), "webhook_event": N_("Provider event"),
}


def record_type(language: str, entity_type: str) -> str:
    return i18n.gettext(language, RECORD_TYPES[entity_type]) if entity_type in RECORD_TYPES else entity_type


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip()) if text.strip() else None
    except ValueError:
        return None


# Fields holding {invoice number: amount in minor units}.
AMOUNTS_BY_INVOICE = {"invoices"}


def _readable(value: Any, currency: str | None = None, language: str = "en", key: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if key.endswith("_minor") and isinstance(value, int) and currency:
        return i18n.format_minor(value, currency, language)  # amounts as money, never minor units
    if key in AMOUNTS_BY_INVOICE and isinstance(value, dict) and currency \
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
        return ", ".join(f"{number}: {i18n.format_minor(v, currency, language)}" for number, v in value.items())
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def shown_changes(session: Session, event: AuditEvent, language: str) -> list[tuple[str, str, str]]:
    """(field, before, after) as staff read them: amounts in the event's currency."""
    rows = audit_service.changes(event)
    currency = audit_service.event_currency(session, event) \
        if any(k.endswith("_minor") or k in AMOUNTS_BY_INVOICE for k, _, _ in rows) else None
    return [(key.removesuffix("_minor"), _readable(old, currency, language, key), _readable(new, currency, language, key))
            for key, old, new in rows]


def describe_changes(session: Session, event: AuditEvent, language: str) -> str:
    """The changes on one line, for an export."""
    return "; ".join(f"{key}: {old} → {new}" if event.before is not None else f"{key}: {new}"
                     for key, old, new in shown_changes(session, event, language))


@staff_get
def index(request: Request, session: Session, staff: Staff) -> Response:
    params = request.query_params
    page_text = params.get("page", "1")
    wanted = AuditQuery(
        entity_type=params.get("type", "")[:32], record=params.get("record", "")[:64],
        actor=params.get("actor", "")[:254], action=params.get("action", "")[:64],
        since=_date(params.get("from", "")), until=_date(params.get("to", "")),
        page=int(page_text) if page_text.isdigit() and len(page_text) < 7 else 1,
        zone=staff_zone(session, staff.user),
    )
    bad_dates = [name for name in ("from", "to") if params.get(name, "").strip() and _date(params[name]) is None]
    result = audit_service.search(session, staff.user, wanted)
    kept = {k: v for k, v in {"type": wanted.entity_type, "record": wanted.record, "actor": wanted.actor,
                              "action": wanted.action, "from": params.get("from", ""),
                              "to": params.get("to", "")}.items() if v}
    t = staff.language
    zone = wanted.zone
    return request.app.state.templates.response(request, "admin/audit.html", {
        "user": staff.user, "q": wanted, "params": kept, "result": result,
        "types": audit_service.entity_types(session, staff.user),
        "bad_dates": [i18n.gettext(t, "%(value)s is not a date (YYYY-MM-DD); it was ignored.", value=params[n])
                      for n in bad_dates],
        "page_url": lambda page: "/admin/audit?" + urlencode({**kept, "page": page}),
        "changes": lambda event: shown_changes(session, event, t),
        "record_type": lambda entity_type: record_type(t, entity_type),
        "moment": lambda event: moment(t, result.companies[event.company_id].timezone
                                       if event.company_id in result.companies else zone)(event.created_at),
        "export_query": urlencode(kept),
        "action_label": lambda action: audit.action_label(t, action),
        "known_actions": sorted(audit.ACTION_LABELS),
        "actor_type": lambda kind: i18n.gettext(t, ACTOR_TYPES[kind]) if kind in ACTOR_TYPES else kind,
    }, t, block="results")


routes = [Route("/audit", index, methods=["GET"], name="admin:audit")]
