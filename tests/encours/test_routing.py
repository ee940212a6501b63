"""Each package mounts its own routes (`/admin`, `/portal`, `/api/v1`); every documented URL still
answers as it did when the app listed every route by its absolute path."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.testclient import TestClient

from encours.app import create_app
from kernel.routing import Prefix
from kernel.settings import Settings

# Every route as the app listed it before the mounts: (path, methods, name).
DOCUMENTED = [
    ("/healthz", "GET,HEAD", "healthz"),
    ("/readyz", "GET,HEAD", "readyz"),
    ("/metrics", "GET,HEAD", "metrics"),
    ("/brand/{code:str}.css", "GET,HEAD", "brand_css"),
    ("/brand/{code:str}/logo", "GET,HEAD", "brand_logo"),
    ("/webhooks/bounces", "POST", "mail:bounces"),
    ("/webhooks/{provider:str}", "POST", "payments:webhook"),
    ("/p/renew", "POST", "portal:renew"),
    ("/p/{token:str}", "GET,HEAD", "portal:open_link"),
    ("/portal", "GET,HEAD", "portal:statement"),
    ("/portal/statement.pdf", "GET,HEAD", "portal:statement_pdf"),
    ("/portal/invoices/{invoice_id:int}", "GET,HEAD", "portal:invoice"),
    ("/portal/invoices/{invoice_id:int}/pdf", "GET,HEAD", "portal:invoice_pdf"),
    ("/portal/language", "POST", "portal:language"),
    ("/portal/sign-out", "POST", "portal:sign_out"),
    ("/portal/pay", "POST", "payments:pay"),
    ("/portal/pay/summary", "POST", "payments:summary"),
    ("/portal/pay/{checkout_id:int}", "GET,HEAD", "payments:checkout"),
    ("/portal/pay/{checkout_id:int}/cancel", "POST", "payments:cancel"),
    ("/portal/pay/{checkout_id:int}/transfer", "GET,HEAD", "payments:transfer"),
    ("/portal/pay/{checkout_id:int}/transfer.pdf", "GET,HEAD", "payments:transfer_pdf"),
    ("/portal/pay/{checkout_id:int}/card", "GET,HEAD", "payments:stripe_card"),
    ("/portal/pay/{checkout_id:int}/card/return", "GET,HEAD", "payments:stripe_return"),
    ("/portal/pay/{checkout_id:int}/gocardless/return", "GET,HEAD", "payments:gocardless_return"),
    ("/portal/requests", "GET,HEAD", "portal:cases"),
    ("/portal/requests/new", "GET,HEAD", "portal:dispute_form"),
    ("/portal/requests/new", "POST", "portal:dispute_create"),
    ("/portal/requests/{case_id:int}", "GET,HEAD", "portal:case"),
    ("/portal/requests/{case_id:int}/reply", "POST", "portal:case_reply"),
    ("/portal/requests/{case_id:int}/files/{file_id:int}", "GET,HEAD", "portal:case_file"),
    ("/portal/promises/new", "GET,HEAD", "portal:promise_form"),
    ("/portal/promises/new", "POST", "portal:promise_create"),
    ("/portal/payments", "GET,HEAD", "portal:payments"),
    ("/portal/payments/{payment_id:int}", "GET,HEAD", "portal:receipt"),
    ("/portal/payments/{payment_id:int}/receipt.pdf", "GET,HEAD", "portal:receipt_pdf"),
    ("/admin/login", "GET,HEAD,POST", "admin:login"),
    ("/admin/logout", "POST", "admin:logout"),
    ("/admin/password", "GET,HEAD,POST", "admin:password"),
    ("/admin/disputes", "GET,HEAD", "admin:disputes"),
    ("/admin/disputes/{case_id:int}", "GET,HEAD", "admin:dispute"),
    ("/admin/disputes/{case_id:int}/reply", "POST", "admin:dispute_reply"),
    ("/admin/disputes/{case_id:int}/accept", "POST", "admin:dispute_accept"),
    ("/admin/disputes/{case_id:int}/reject", "POST", "admin:dispute_reject"),
    ("/admin/disputes/{case_id:int}/close", "POST", "admin:dispute_close"),
    ("/admin/disputes/{case_id:int}/files/{file_id:int}", "GET,HEAD", "admin:dispute_file"),
    ("/admin/promises", "GET,HEAD", "admin:promises"),
    ("/admin", "GET,HEAD", "admin:home"),
    ("/admin/fx", "GET,HEAD", "admin:fx"),
    ("/admin/fx", "POST", "admin:fx_add"),
    ("/admin/fx/import", "POST", "admin:fx_import"),
    ("/admin/users", "GET,HEAD", "admin:users"),
    ("/admin/users", "POST", "admin:user_create"),
    ("/admin/users/{user_id:int}", "GET,HEAD", "admin:user"),
    ("/admin/users/{user_id:int}", "POST", "admin:user_update"),
    ("/admin/users/{user_id:int}/active", "POST", "admin:user_active"),
    ("/admin/users/{user_id:int}/password", "POST", "admin:user_password"),
    ("/admin/settings", "GET,HEAD", "admin:settings"),
    ("/admin/settings/{code:str}", "GET,HEAD", "admin:company_settings"),
    ("/admin/settings/{code:str}", "POST", "admin:company_settings_save"),
    ("/admin/settings/{code:str}/reasons", "GET,HEAD", "admin:dispute_reasons"),
    ("/admin/settings/{code:str}/reasons", "POST", "admin:dispute_reasons_change"),
    ("/admin/settings/{code:str}/accounts", "POST", "admin:bank_account_add"),
    ("/admin/settings/{code:str}/accounts/{account_id:int}/active", "POST", "admin:bank_account_active"),
    ("/admin/imports", "GET,HEAD", "admin:imports"),
    ("/admin/imports", "POST", "admin:import_upload"),
    ("/admin/audit", "GET,HEAD", "admin:audit"),
    ("/admin/scenarios", "GET,HEAD", "admin:scenarios"),
    ("/admin/scenarios/review", "GET,HEAD", "admin:reminder_review"),
    ("/admin/scenarios/preview-frame", "GET,HEAD", "admin:scenario_preview_frame"),
    ("/admin/scenarios/review", "POST", "admin:reminder_review_decide"),
    ("/admin/scenarios/new", "POST", "admin:scenario_new"),
    ("/admin/scenarios/runs", "GET,HEAD", "admin:reminder_runs"),
    ("/admin/scenarios/runs/preview", "GET,HEAD", "admin:reminder_dry_run"),
    ("/admin/scenarios/runs/{run_id:int}", "GET,HEAD", "admin:reminder_run"),
    ("/admin/scenarios/runs/{run_id:int}/retry", "POST", "admin:reminder_run_retry"),
    ("/admin/scenarios/{scenario_id:int}", "GET,HEAD", "admin:scenario"),
    ("/admin/scenarios/{scenario_id:int}", "POST", "admin:scenario_save"),
    ("/admin/scenarios/{scenario_id:int}/preview", "POST", "admin:scenario_preview"),
    ("/admin/customers", "GET,HEAD", "admin:customers"),
    ("/admin/customers/bulk", "POST", "admin:customers_bulk"),
    ("/admin/customers/views", "POST", "admin:customers_view_save"),
    ("/admin/customers/views/{view_id:int}/delete", "POST", "admin:customers_view_delete"),
    ("/admin/customers/{customer_id:int}/retry", "POST", "admin:customer_retry"),
    ("/admin/customers/{customer_id:int}", "GET,HEAD", "admin:customer"),
    ("/admin/customers/{customer_id:int}/notes", "POST", "admin:customer_note"),
    ("/admin/customers/{customer_id:int}/notes/{note_id:int}/done", "POST", "admin:customer_task_done"),
    ("/admin/customers/{customer_id:int}/collector", "POST", "admin:customer_collector"),
    ("/admin/customers/{customer_id:int}/pause", "POST", "admin:customer_pause"),
    ("/admin/customers/{customer_id:int}/send-link", "POST", "admin:customer_link"),
    ("/admin/customers/{customer_id:int}/revoke-links", "GET,HEAD", "admin:customer_revoke_confirm"),
    ("/admin/customers/{customer_id:int}/revoke-links", "POST", "admin:customer_revoke"),
    ("/admin/customers/{customer_id:int}/remind", "GET,HEAD", "admin:customer_remind_preview"),
    ("/admin/customers/{customer_id:int}/remind", "POST", "admin:customer_remind"),
    ("/admin/customers/{customer_id:int}/view-as-customer", "POST", "admin:customer_view_as"),
    ("/admin/customers/{customer_id:int}/payments", "POST", "admin:customer_payment"),
    ("/admin/customers/{customer_id:int}/personal-data", "GET,HEAD", "admin:personal_data"),
    ("/admin/customers/{customer_id:int}/personal-data.json", "GET,HEAD", "admin:personal_data_json"),
    ("/admin/customers/{customer_id:int}/personal-data/erase", "POST", "admin:personal_data_erase"),
    ("/admin/webhooks/endpoints", "GET,HEAD", "admin:erp_webhooks"),
    ("/admin/webhooks/endpoints", "POST", "admin:erp_webhook_add"),
    ("/admin/webhooks/endpoints/{endpoint_id:int}/remove", "GET,HEAD", "admin:erp_webhook_remove_confirm"),
    ("/admin/webhooks/endpoints/{endpoint_id:int}/remove", "POST", "admin:erp_webhook_remove"),
    ("/admin/webhooks/deliveries/{delivery_id:int}/resend", "POST", "admin:erp_webhook_resend"),
    ("/admin/api-keys", "GET,HEAD", "admin:api_keys"),
    ("/admin/api-keys", "POST", "admin:api_key_create"),
    ("/admin/api-keys/{key_id:int}/revoke", "GET,HEAD", "admin:api_key_revoke_confirm"),
    ("/admin/api-keys/{key_id:int}/revoke", "POST", "admin:api_key_revoke"),
    ("/admin/customers/{customer_id:int}/contacts", "POST", "admin:contact_add"),
    ("/admin/customers/{customer_id:int}/contacts/{contact_id:int}", "POST", "admin:contact_edit"),
    ("/admin/customers/{customer_id:int}/contacts/{contact_id:int}/remove", "GET,HEAD", "admin:contact_remove_confirm"),
    ("/admin/customers/{customer_id:int}/contacts/{contact_id:int}/remove", "POST", "admin:contact_remove"),
    ("/admin/my-day", "GET,HEAD", "admin:my_day"),
    ("/admin/reports", "GET,HEAD", "admin:reports"),
    ("/admin/invoices", "GET,HEAD", "admin:invoices"),
    ("/admin/payments", "GET,HEAD", "admin:payments"),
    ("/admin/payments/{payment_id:int}", "GET,HEAD", "admin:payment"),
    ("/admin/payments/{payment_id:int}/cancel", "POST", "admin:payment_cancel"),
    ("/admin/webhooks", "GET,HEAD", "admin:webhooks"),
    ("/admin/webhooks/{event_id:int}", "GET,HEAD", "admin:webhook"),
    ("/admin/webhooks/{event_id:int}/replay", "POST", "admin:webhook_replay"),
    ("/admin/bank", "GET,HEAD", "admin:bank"),
    ("/admin/bank/import", "POST", "admin:bank_import"),
    ("/admin/bank/entries/{entry_id:int}", "GET,HEAD", "admin:bank_entry"),
    ("/admin/bank/entries/{entry_id:int}/accept", "POST", "admin:bank_accept"),
    ("/admin/bank/entries/{entry_id:int}/match", "POST", "admin:bank_match"),
    ("/admin/bank/entries/{entry_id:int}/ignore", "POST", "admin:bank_ignore"),
    ("/admin/bank/entries/{entry_id:int}/restore", "POST", "admin:bank_restore"),
    ("/admin/bank/matches/{match_id:int}/undo", "POST", "admin:bank_undo"),
    ("/admin/exports/{list}.{format}", "GET,HEAD", "admin:export"),
    ("/api/v1/openapi.json", "GET,HEAD", "api_openapi"),
    ("/api/v1/docs", "GET,HEAD", "api_docs"),
    ("/api/v1/customers", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
    ("/api/v1/customers/{ref:str}", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
    ("/api/v1/customers:bulk", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
    ("/api/v1/invoices", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
    ("/api/v1/invoices/{number:str}", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
    ("/api/v1/invoices/{number:str}/void", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
    ("/api/v1/invoices:bulk", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
    ("/api/v1/payments", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
    ("/api/v1/events", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
    ("/api/v1/open-items", "DELETE,GET,HEAD,PATCH,POST,PUT", "dispatch"),
]


def _concrete(template: str) -> tuple[str, dict[str, Any]]:
    """The template with each parameter filled (ints 7, text "abc"), and the parameters."""
    params: dict[str, Any] = {}

    def fill(match: re.Match[str]) -> str:
        name, kind = match.group(1), match.group(2)
        params[name] = 7 if kind == "int" else "abc"
        return str(params[name])

    return re.sub(r"\{(\w+)(?::(\w+))?\}", fill, template), params


def _resolve(routes: list[BaseRoute], scope: dict[str, Any]) -> Route | None:
    """The route the app's routers pick for this request (walking into mounts), or None."""
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            if isinstance(route, Mount):
                return _resolve(route.routes, {**scope, **child})
            assert isinstance(route, Route)
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial if isinstance(partial, Route) else None


@pytest.fixture(scope="module")
def listed_app() -> Any:
    from kernel.settings import load_settings

    settings = load_settings({"ENCOURS_DATABASE_URL": "sqlite://", "ENCOURS_SECRET_KEY": "k" * 64,
                              "ENCOURS_BASE_URL": "http://testserver"})
    return create_app(settings, sessions=sessionmaker())


def test_the_packages_are_mounted_under_their_prefixes(listed_app: Any) -> None:
    mounted = {route.path for route in listed_app.routes if isinstance(route, Prefix)}
    assert mounted == {"/admin", "/portal", "/api/v1"}
    absolute = [route.path for route in listed_app.routes if isinstance(route, Route)]
    assert not [path for path in absolute if path.startswith(("/admin/", "/portal/", "/api/"))]


@pytest.mark.parametrize("template, methods, name", DOCUMENTED, ids=[f"{m} {p}" for p, m, _ in DOCUMENTED])
def test_every_documented_url_resolves_to_its_route(listed_app: Any, template: str, methods: str, name: str) -> None:
    path, params = _concrete(template)
    for method in methods.split(","):
        route = _resolve(listed_app.routes, {"type": "http", "path": path, "method": method, "root_path": ""})
        assert route is not None and route.name == name, f"{method} {path}"
        assert method in (route.methods or set()), f"{method} {path}"
    if name != "dispatch":  # the API's operations share one endpoint name
        assert listed_app.url_path_for(name, **params) == path


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> TestClient:
    return TestClient(create_app(settings, sessions=session_factory), follow_redirects=False)


@pytest.mark.parametrize("path, status, location", [
    ("/admin", 303, "/admin/login?next=/admin"),
    ("/admin/", 307, "http://testserver/admin"),  # the prefix with a slash is still the page without
    ("/portal/", 307, "http://testserver/portal"),
    ("/admin/customers/", 307, "http://testserver/admin/customers"),
    ("/admin/customers/?q=a", 307, "http://testserver/admin/customers?q=a"),
    ("/portal/requests/", 307, "http://testserver/portal/requests"),
    ("/api/v1/customers/", 307, "http://testserver/api/v1/customers"),
    ("/p/abc/", 307, "http://testserver/p/abc"),
    ("/admin/nope", 404, None),
    ("/admin//customers", 404, None),
    ("/portal/invoices/abc", 404, None),
    ("/api/v1", 404, None),
    ("/api/v1/", 404, None),
    ("/p/", 404, None),
    ("/adminx", 404, None),
    ("/portal/pay", 405, None),  # POST only
    ("/portal/sign-out", 405, None),
    ("/webhooks/stripe", 405, None),
    ("/portal", 401, None),  # no debtor session
    ("/api/v1/customers", 401, None),  # no API key
    ("/admin/webhooks/endpoints", 303, "/admin/login?next=/admin/webhooks/endpoints"),
])
def test_redirects_404s_and_405s_are_as_before(client: TestClient, path: str, status: int,
                                                location: str | None) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers.get("location") == location


def test_a_wrong_method_on_an_api_path_is_still_its_problem_json(client: TestClient) -> None:
    response = client.post("/api/v1/customers")
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert response.headers["content-type"].startswith("application/problem+json")
