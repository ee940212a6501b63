"""Back-office: reminder scenarios (list, edit with a live preview on a real customer) and the
history of reminder runs, with a dry run of any day.

Admins and the managers of a company edit its scenarios; everyone else who sees the company
reads them. `dunning.scenarios` checks and saves (all or nothing, audited); `dunning.planner`
renders previews and plans dry runs; `admin.runs_service` counts what runs sent.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import jinja2
from pydantic import ConfigDict, Field
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from admin import runs_service
from admin.amounts import typed_amount
from mail import retry as mail_retry
from admin.access import (can_act, companies_of, Rejected, Staff, forbidden, moment, scoped, scoped_companies,
                          staff_get, staff_post, staff_zone)
from admin.routes import render, t
from dunning import approval, messages, planner
from dunning.scenarios import (
    TONES,
    ScenarioInput,
    StepInput,
    create_scenario,
    save_scenario,
    step_problems,
)
from kernel import i18n
from kernel.clock import clock
from kernel.security import csp_header, extend_csp
from kernel.i18n import N_
from ledger.models import Company, Customer, Invoice, ReminderRun, Role, Scenario, User
from ledger.money import Money
from kernel.forms import Form, parse
from dunning.template_language import jinja_detail
from kernel.user_error import UserError, UserErrors
from kernel.web import Posted

TONE_LABELS = {"courteous": N_("Courteous"), "firm": N_("Firm"), "formal": N_("Formal")}
PLACEHOLDER_HELP = {
    "customer": N_("the customer: {{ customer.name }}, {{ customer.ref }}"),
    "contact": N_("the contact written to: {{ contact.name }} (may be empty), {{ contact.email }}"),
    "company": N_("your company: {{ company.name }}, {{ company.support_email }}, {{ company.address }}"),
    "invoices": N_("the table of the invoices chased (number, due date, open amount, days overdue)"),
    "totals": N_("the total chased, per currency"),
    "savings": N_("early-payment discounts still on offer; empty when none"),
    "late_charges": N_("France: late-payment interest and the 40 € indemnity per invoice (L441-10); "
                       "{{ late_charges.rate }}, {{ late_charges.indemnity }}"),
    "broken_promise": N_("when the customer broke a promise to pay these invoices, a sentence saying so; "
                         "{{ broken_promise.amount }}, {{ broken_promise.date }}"),
    "link": N_("the customer's personal link to pay (the HTML part also shows a button)"),
    "today": N_("the date of the run"),
}
STATUS_LABELS = {"queued": N_("Waiting"), "sent": N_("Sent"), "failed": N_("Failed"),
                 "held": N_("Waiting for approval"), "cancelled": N_("Discarded")}
STEP_FIELDS = ("subject_fr", "body_fr", "subject_en", "body_en")
MAX_TEXT = 20_000


def skip_reason(why: UserError, language: str) -> str:
    """The planner's reason in the reader's language, as a table cell starts it: capitalized."""
    text = why.render(language)
    return text[:1].upper() + text[1:]


def can_edit(user: User, company_id: int) -> bool:
    """Admins, and managers of the company."""
    if user.role == Role.admin.value:
        return True
    return user.role == Role.manager.value and any(c.id == company_id for c in user.companies)


def _visible_company_ids(session: Session, user: User) -> list[int]:
    return list(session.scalars(scoped_companies(select(Company.id), user)))


def visible_scenario(session: Session, user: User, scenario_id: int) -> Scenario:
    scenario = session.get(Scenario, scenario_id)
    if scenario is None or scenario.company_id not in _visible_company_ids(session, user):
        raise HTTPException(404)
    return scenario


# --- the form, as typed ---------------------------------------------------------------------------


class StepForm(Form):
    """One step's fields as typed (the day as text), to show again exactly what was typed."""

    model_config = ConfigDict(str_strip_whitespace=False)

    id: int | None
    offset: str
    tone: str
    whole_balance: bool
    subject_fr: str
    body_fr: str
    subject_en: str
    body_en: str
    remove: bool = False
    may_skip: bool = False

    @property
    def label(self) -> str:
        try:
            offset = int(self.offset)
        except ValueError:
            return self.offset or "?"
        return f"D{offset:+d}" if offset else "D"


class ScenarioForm(Form):
    """The scenario editor's form, read at the edge (`_form_from_post`); `_parse` makes it service input."""

    name: str = Field(max_length=200)
    segment: str = Field(max_length=64)
    minimums: dict[str, str]
    active: bool
    steps: list[StepForm] = Field(default_factory=list, max_length=30)


def _form_of(scenario: Scenario, currencies: list[str]) -> ScenarioForm:
    minimums = {c: "" for c in currencies}
    for currency, minor in (scenario.minimums or {}).items():
        minimums[currency] = str(Money(int(minor), currency).to_decimal())
    return ScenarioForm(
        name=scenario.name, segment=scenario.segment or "", minimums=minimums, active=scenario.active,
        steps=[StepForm(id=s.id, offset=str(s.offset_days), tone=s.tone, whole_balance=s.whole_balance,
                        may_skip=s.may_skip, subject_fr=s.subject_fr, body_fr=s.body_fr, subject_en=s.subject_en,
                        body_en=s.body_en)
               for s in sorted(scenario.steps, key=lambda s: s.offset_days)],
    )


def _form_from_post(posted: Posted, currencies: list[str]) -> ScenarioForm:
    steps = []
    try:
        count = min(int(posted.text("step_count", 4)), 30)
    except ValueError:
        count = 0
    for n in range(count):
        prefix = f"step-{n}-"
        if not posted.text(prefix + "offset", 10) and not posted.text(prefix + "id", 12) \
                and prefix + "subject_fr" not in posted.form:
            continue
        step_id = posted.text(prefix + "id", 12)
        steps.append({
            "id": step_id if step_id.isdigit() else None,
            "offset": posted.text(prefix + "offset", 10).strip(),
            "tone": posted.text(prefix + "tone", 16),
            "whole_balance": posted.text(prefix + "whole_balance", 2) == "1",
            "may_skip": posted.text(prefix + "may_skip", 2) == "1",
            "remove": posted.text(prefix + "remove", 2) == "1",
            **{name: posted.text(prefix + name, MAX_TEXT).replace("\r\n", "\n") for name in STEP_FIELDS},
        })
    minimums = {c: posted.text(f"minimum-{c}", 30).strip() for c in currencies}
    return parse(ScenarioForm, {"name": posted.text("name", 200).strip(), "segment": posted.text("segment", 64).strip(),
                                "minimums": minimums, "active": posted.text("active", 2) == "1", "steps": steps})


def _blank_step(form: ScenarioForm) -> StepForm:
    last = max((int(s.offset) for s in form.steps if s.offset.lstrip("-").isdigit()), default=0)
    template = form.steps[-1] if form.steps else None
    return StepForm(id=None, offset=str(last + 10), tone="firm", whole_balance=False,
                    subject_fr=template.subject_fr if template else "{{ company.name }}",
                    body_fr=template.body_fr if template else "{{ invoices }}\n\n{{ totals }}\n\n{{ link }}",
                    subject_en=template.subject_en if template else "{{ company.name }}",
                    body_en=template.body_en if template else "{{ invoices }}\n\n{{ totals }}\n\n{{ link }}")


def _parse(form: ScenarioForm) -> tuple[ScenarioInput | None, list[UserError]]:
    """The typed form as service input, or the problems that prevent reading it."""
    problems: list[UserError] = []
    steps = []
    for number, step in enumerate(form.steps, start=1):
        try:
            offset = int(step.offset)
        except ValueError:
            problems.append(UserError(N_("Step %(number)s: the day must be a whole number of days from the due "
                                       "date, for example -5 or 15."), number=number))
            continue
        steps.append(StepInput(id=step.id, offset_days=offset, tone=step.tone, whole_balance=step.whole_balance,
                               subject_fr=step.subject_fr, body_fr=step.body_fr, subject_en=step.subject_en,
                               body_en=step.body_en, remove=step.remove, may_skip=step.may_skip))
    minimums: dict[str, int] = {}
    for currency, text in form.minimums.items():
        if not text:
            continue
        amount = typed_amount(text, currency)
        if amount is None or amount.minor < 0:
            problems.append(UserError(N_("The minimum in %(currency)s must be an amount, for example 50.00."),
                                    currency=currency))
        elif amount.minor > 0:
            minimums[currency] = amount.minor
    if problems:
        return None, problems
    return ScenarioInput(name=form.name, segment=form.segment or None, minimums=minimums, active=form.active,
                         steps=steps), []


# --- pages ----------------------------------------------------------------------------------------


def _currencies(session: Session, company: Company, scenario: Scenario | None = None) -> list[str]:
    used = set(session.scalars(select(Invoice.currency).distinct().where(Invoice.company_id == company.id)))
    used |= set((scenario.minimums or {}) if scenario else {})
    return [company.base_currency] + sorted(used - {company.base_currency})


def _segments(session: Session, company: Company) -> list[str]:
    return sorted(s for s in session.scalars(
        select(Customer.segment).distinct().where(Customer.company_id == company.id)) if s)


def _preview_customers(session: Session, staff: Staff, company: Company) -> list[Customer]:
    return list(session.scalars(
        scoped(select(Customer), staff.user).where(Customer.company_id == company.id)
        .order_by(Customer.name, Customer.id).limit(500)))


def _index(request: Request, session: Session, staff: Staff, error: str | None = None,
           status_code: int = 200) -> Response:
    companies = companies_of(session, staff.user)
    scenarios = {c.id: list(session.scalars(select(Scenario).where(Scenario.company_id == c.id)
                                             .order_by(Scenario.segment.is_not(None), Scenario.segment,
                                                       Scenario.id)))
                 for c in companies}
    return render(request, "admin/scenarios.html", {
        "user": staff.user, "companies": companies, "scenarios": scenarios,
        "editable": {c.id: can_edit(staff.user, c.id) for c in companies},
        "segments": {c.id: _segments(session, c) for c in companies},
        "error": error, "tone_label": lambda tone: t(staff.language, TONE_LABELS.get(tone, tone)),
        "minimums": lambda scenario: [Money(int(minor), currency)
                                      for currency, minor in sorted((scenario.minimums or {}).items())],
    }, staff.language, status_code=status_code)


@staff_get
def index(request: Request, session: Session, staff: Staff) -> Response:
    return _index(request, session, staff)


@staff_post
def create(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    code = posted.text("company", 32)
    company = session.scalar(scoped_companies(select(Company), staff.user).where(Company.code == code))
    if company is None:
        raise HTTPException(404)
    if not can_edit(staff.user, company.id):
        return forbidden(request, staff)
    try:
        scenario = create_scenario(session, company, name=posted.text("name", 120),
                                   segment=posted.text("segment", 64).strip() or None, actor=staff.user.email)
    except UserErrors as invalid:
        raise Rejected(_index(request, session, staff, status_code=400,
                              error=" ".join(p.render(staff.language) for p in invalid)))
    return RedirectResponse(f"/admin/scenarios/{scenario.id}", status_code=303)


@dataclass
class PreviewResult:
    customer: Customer | None = None
    step_label: str = ""
    language: str = "fr"
    to_address: str = ""
    rendered: messages.RenderedMessage | None = None
    problems: list[str] = field(default_factory=list)
    frame_url: str = ""  # the HTML part, served apart with a policy of its own (`preview_frame`)


# The HTML part of a preview is an email: inline styles and images, never a script, never a form.
# It is served apart from the editor (whose policy stays strict) to a sandboxed frame of it.
PREVIEW_FRAME_PATH = "/admin/scenarios/preview-frame"
PREVIEW_FRAME_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; font-src data:; "
                     "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox")
PREVIEW_FRAME_SALT = "scenario-preview-frame"
PREVIEW_FRAME_SECONDS = 3600
TEMPLATE_ERRORS = {
    "syntax": N_("The message has a template error on line %(line)s: %(detail)s"),
    "other": N_("The message could not be rendered: %(detail)s"),
}


def _frames(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(request.app.state.settings.secret_key), salt=PREVIEW_FRAME_SALT)


def _frame_url(request: Request, staff: Staff, html: str) -> str:
    """The rendered HTML rides in the address, signed for this user (compressed): nothing is kept
    on the server for it, whichever process answers the frame's request."""
    return f"{PREVIEW_FRAME_PATH}?t={_frames(request).dumps({'u': staff.user.id, 'h': html})}"


def template_error(error: jinja2.TemplateError, language: str) -> str:
    """A template error in the staff's words (Jinja's own text is English)."""
    if isinstance(error, jinja2.TemplateSyntaxError):
        return t(language, TEMPLATE_ERRORS["syntax"], line=error.lineno,
                 detail=jinja_detail(error.message or "", language))
    return t(language, TEMPLATE_ERRORS["other"], detail=jinja_detail(str(error), language))


@staff_get
def preview_frame(request: Request, session: Session, staff: Staff) -> Response:
    headers = {"Content-Security-Policy": PREVIEW_FRAME_CSP, "X-Frame-Options": "SAMEORIGIN",
               "Cache-Control": "no-store"}
    token = request.query_params.get("t")
    if not token:  # nothing asked: an empty frame
        return HTMLResponse("<!doctype html><title></title>", headers=headers)
    try:
        payload = _frames(request).loads(token, max_age=PREVIEW_FRAME_SECONDS)
    except BadData:
        raise HTTPException(404)
    if not isinstance(payload, dict) or payload.get("u") != staff.user.id or not isinstance(payload.get("h"), str):
        raise HTTPException(404)
    return HTMLResponse(payload["h"], headers=headers)


def _preview(request: Request, session: Session, staff: Staff, company: Company, form: ScenarioForm,
             customer_id: int | None, step_index: int, language: str | None) -> PreviewResult:
    customers = _preview_customers(session, staff, company)
    customer = next((c for c in customers if c.id == customer_id), customers[0] if customers else None)
    result = PreviewResult(customer=customer)
    if customer is None or not form.steps:
        return result
    step_form = form.steps[min(max(step_index, 0), len(form.steps) - 1)]
    result.step_label = step_form.label
    parsed, problems = _parse(ScenarioForm(name=form.name, segment=form.segment, minimums={}, active=form.active,
                                           steps=[step_form]))
    if parsed is not None:
        problems = step_problems(parsed.steps[0])
    if problems or parsed is None:
        result.problems = [p.render(staff.language) for p in problems]
        return result
    contact = customer.primary_contact
    result.language = i18n.normalize(language or (contact.language if contact else customer.language))
    result.to_address = contact.email if contact else ""
    try:
        # A throwaway secret: the preview's link must not open the customer's portal.
        result.rendered = planner.preview(session, parsed.steps[0].texts(), customer, secret=secrets.token_hex(16),
                                          base_url=request.app.state.settings.base_url,
                                          language=result.language)
    except jinja2.TemplateError as error:
        result.problems = [template_error(error, staff.language)]
        return result
    result.frame_url = _frame_url(request, staff, result.rendered.html)
    return result


def _editor(request: Request, session: Session, staff: Staff, scenario: Scenario, form: ScenarioForm, *,
            problems: list[str] | None = None, saved: bool = False, preview: PreviewResult | None = None,
            status_code: int = 200, preview_customer: int | None = None, preview_step: int = 0,
            preview_language: str = "") -> Response:
    company = session.get_one(Company, scenario.company_id)
    return render(request, "admin/scenario.html", {
        "user": staff.user, "scenario": scenario, "company": company, "form": form,
        "editable": can_edit(staff.user, company.id), "problems": problems or [], "saved": saved,
        "tones": TONES, "tone_label": lambda tone: t(staff.language, TONE_LABELS.get(tone, tone)),
        "placeholders": [(name, t(staff.language, PLACEHOLDER_HELP[name])) for name in messages.PLACEHOLDERS
                         if name in PLACEHOLDER_HELP],
        "segments": _segments(session, company), "customers": _preview_customers(session, staff, company),
        "preview": preview, "preview_customer": preview_customer or (preview.customer.id if preview and
                                                                     preview.customer else None),
        "preview_step": preview_step, "preview_language": preview_language,
    }, staff.language, status_code=status_code, headers={
        # The editor frames its own preview (PREVIEW_FRAME_PATH), nothing else.
        "Content-Security-Policy": csp_header(extend_csp(request.app.csp, {"frame-src": ["'self'"]}))})


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() and len(text) < 12 else None


@staff_get
def edit_page(request: Request, session: Session, staff: Staff) -> Response:
    scenario = visible_scenario(session, staff.user, request.path_params["scenario_id"])
    company = session.get_one(Company, scenario.company_id)
    form = _form_of(scenario, _currencies(session, company, scenario))
    params = request.query_params
    customer_id, step = _int(params.get("customer")), _int(params.get("step")) or 0
    language = params.get("language") if params.get("language") in i18n.LANGUAGES else ""
    # Rendering is work a text can make costly: only those who may edit the scenario preview it.
    preview = (_preview(request, session, staff, company, form, customer_id, step, language or None)
               if can_edit(staff.user, company.id) else None)
    return _editor(request, session, staff, scenario, form, saved=params.get("saved") == "1", preview=preview,
                   preview_step=step, preview_language=language or "", preview_customer=customer_id)


@staff_post
def save(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    scenario = visible_scenario(session, staff.user, request.path_params["scenario_id"])
    company = session.get_one(Company, scenario.company_id)
    if not can_edit(staff.user, company.id):
        return forbidden(request, staff)
    form = _form_from_post(posted, _currencies(session, company, scenario))
    customer_id = _int(posted.text("preview_customer", 12))
    step_index = _int(posted.text("preview_step", 4)) or 0
    language = posted.text("preview_language", 2) if posted.text("preview_language", 2) in i18n.LANGUAGES else ""
    if posted.text("action", 16) == "add_step":
        form.steps.append(_blank_step(form))
        step_index = len(form.steps) - 1
        return _editor(request, session, staff, scenario, form, preview_step=step_index,
                       preview=_preview(request, session, staff, company, form, customer_id, step_index,
                                        language or None), preview_language=language)
    parsed, problems = _parse(form)
    if parsed is not None:
        try:
            save_scenario(session, scenario, parsed, actor=staff.user.email)
        except UserErrors as invalid:
            problems = list(invalid)
    if problems or parsed is None:
        raise Rejected(_editor(
            request, session, staff, scenario, form, status_code=400,
            problems=[p.render(staff.language) for p in problems], preview_step=step_index,
            preview=_preview(request, session, staff, company, form, customer_id, step_index, language or None),
            preview_language=language))
    # The preview stays on the customer, step and language staff were looking at.
    query = f"saved=1&step={step_index}" + (f"&customer={customer_id}" if customer_id else "") + (
        f"&language={language}" if language else "")
    return RedirectResponse(f"/admin/scenarios/{scenario.id}?{query}", status_code=303)


@staff_post
def preview_fragment(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    scenario = visible_scenario(session, staff.user, request.path_params["scenario_id"])
    company = session.get_one(Company, scenario.company_id)
    if not can_edit(staff.user, company.id):
        return forbidden(request, staff)
    step_index = _int(posted.text("preview_step", 4)) or 0
    language = posted.text("preview_language", 2) if posted.text("preview_language", 2) in i18n.LANGUAGES else ""
    customer_id = _int(posted.text("preview_customer", 12))
    if request.headers.get("HX-Request") != "true":  # without htmx the whole editor, with the preview
        form = _form_from_post(posted, _currencies(session, company, scenario))
        preview = _preview(request, session, staff, company, form, customer_id, step_index, language or None)
        return _editor(request, session, staff, scenario, form, preview=preview, preview_step=step_index,
                       preview_language=language, preview_customer=customer_id)
    form = _form_from_post(posted, [])
    preview = _preview(request, session, staff, company, form, customer_id, step_index, language or None)
    return request.app.state.templates.response(
        request, "admin/scenario.html",
        {"user": staff.user, "preview": preview, "scenario": scenario, "company": company},
        staff.language, block="preview")


# --- runs ---------------------------------------------------------------------------------------


def _visible_customers(staff: Staff) -> Any:
    return scoped(select(Customer), staff.user)


@staff_get
def runs_page(request: Request, session: Session, staff: Staff) -> Response:
    company_ids = None if staff.user.role == Role.admin.value else _visible_company_ids(session, staff.user)
    companies = companies_of(session, staff.user)
    zone = staff_zone(session, staff.user)
    return render(request, "admin/reminder_runs.html", {
        "user": staff.user, "rows": runs_service.runs(session, company_ids), "companies": companies,
        "today": clock.today(companies[0].timezone) if companies else clock.now().date(),
        "at": lambda row, when: moment(staff.language, row.company.timezone if row.company else zone)(when),
    }, staff.language)


@staff_get
def run_page(request: Request, session: Session, staff: Staff) -> Response:
    run = session.get(ReminderRun, request.path_params["run_id"])
    if run is None or run.company_id not in _visible_company_ids(session, staff.user):
        raise HTTPException(404)
    customers = None if staff.user.role == Role.admin.value else _visible_customers(staff)
    return render(request, "admin/reminder_run.html", {
        "user": staff.user, "row": runs_service.run_row(session, run),
        "lines": runs_service.reminder_lines(session, run, customers),
        "status_label": lambda status: t(staff.language, STATUS_LABELS.get(status or "", "—")) if status else "—",
        "retried": _int(request.query_params.get("retried", "")),
        "can_act": can_act(staff.user),
    }, staff.language)


@staff_post
def run_retry(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    """Send the run's failed messages again: the ones ticked, or all of them (`all=1`)."""
    run = session.get(ReminderRun, request.path_params["run_id"])
    if run is None or run.company_id not in _visible_company_ids(session, staff.user):
        raise HTTPException(404)
    customers = None if staff.user.role == Role.admin.value else _visible_customers(staff)
    failed = [line.reminder.outbox_id for line in runs_service.reminder_lines(session, run, customers)
              if line.status == "failed" and line.reminder.outbox_id is not None]
    if posted.text("all", 2) != "1":
        wanted = {int(value) for value in posted.form.getlist("message") if str(value).isdigit()}
        failed = [message_id for message_id in failed if message_id in wanted]
    report = mail_retry.retry_failed(session, failed, actor=staff.user.email)
    return RedirectResponse(f"/admin/scenarios/runs/{run.id}?retried={report.requeued}", status_code=303)


@staff_get
def dry_run_page(request: Request, session: Session, staff: Staff) -> Response:
    """What a run would send for a company on a day: to whom, which step, why others are skipped.

    Plans only (the `--dry-run` of `encours remind`): nothing is queued or recorded.
    """
    companies = companies_of(session, staff.user)
    code = request.query_params.get("company", "")
    company = next((c for c in companies if c.code == code), None)
    error = None
    raw_date = request.query_params.get("date", "")[:10]
    day = clock.today(company.timezone) if company else clock.now().date()
    if raw_date:
        try:
            day = date.fromisoformat(raw_date)
        except ValueError:
            error = t(staff.language, "Choose a valid date.")
    plan = None
    if company is None and code:
        error = t(staff.language, "Choose a company.")
    if company is not None and error is None:
        plan = planner.plan_company(session, company, day)
        if staff.user.role == Role.collector.value:
            # A collector sees only its own customers' part of the plan.
            mine = set(session.scalars(_visible_customers(staff).with_only_columns(Customer.id)
                                       .where(Customer.company_id == company.id)))
            refs = set(session.scalars(select(Customer.ref).where(Customer.id.in_(mine))))
            plan.messages = [m for m in plan.messages if m.customer_id in mine]
            plan.skipped = [s for s in plan.skipped if s.customer_ref in refs]
            plan.problems = [p for p in plan.problems if p.split(":", 1)[0] in refs]
    return render(request, "admin/reminder_dry_run.html", {
        "user": staff.user, "companies": companies, "company": company, "plan": plan,
        "skip_reason": lambda why: skip_reason(why, staff.language),
        "error": error, "raw_date": raw_date or day.isoformat(),
        "totals": lambda m: [Money(minor, currency) for currency, minor in sorted(m.totals.items())],
    }, staff.language, status_code=400 if error else 200)


# --- the review queue: runs waiting for approval ----------------------------------------------------


def _reviewable_company_ids(session: Session, user: User) -> list[int]:
    """Companies whose held reminders this user may send: admins all, managers their own."""
    return [company_id for company_id in _visible_company_ids(session, user) if can_edit(user, company_id)]


@staff_get
def review_page(request: Request, session: Session, staff: Staff) -> Response:
    """Per customer: the step, invoices, recipients and the message itself, to send or not."""
    company_ids = _reviewable_company_ids(session, staff.user)
    waiting = approval.held(session, company_ids)
    return render(request, "admin/reminder_review.html", {
        "user": staff.user, "waiting": waiting, "done": request.query_params.get("done", ""),
        "count": _int(request.query_params.get("count", "")) or 0, "error": None,
    }, staff.language)


@staff_post
def review_decide(request: Request, session: Session, staff: Staff, posted: Posted) -> Response:
    company_ids = _reviewable_company_ids(session, staff.user)
    action = posted.text("action", 16)
    if not company_ids or action not in ("send", "send_all", "decline"):
        return forbidden(request, staff) if not company_ids else RedirectResponse("/admin/scenarios/review", 303)
    if action == "send_all":
        chosen = approval.held(session, company_ids)
    else:
        ids = [int(value) for value in posted.form.getlist("reminder") if str(value).isdigit()]
        if not ids:
            waiting = approval.held(session, company_ids)
            raise Rejected(render(request, "admin/reminder_review.html", {
                "user": staff.user, "waiting": waiting, "done": "", "count": 0,
                "error": t(staff.language, N_("Tick the reminders to send or to discard first.")),
            }, staff.language, status_code=400))
        chosen = approval.held(session, company_ids, reminder_ids=ids)
    if action == "decline":
        count = approval.decline(session, chosen, actor=staff.user.email)
        return RedirectResponse(f"/admin/scenarios/review?done=declined&count={count}", status_code=303)
    count = approval.approve(session, chosen, actor=staff.user.email)
    return RedirectResponse(f"/admin/scenarios/review?done=sent&count={count}", status_code=303)


routes = [
    Route("/scenarios", index, methods=["GET"], name="admin:scenarios"),
    Route("/scenarios/review", review_page, methods=["GET"], name="admin:reminder_review"),
    Route("/scenarios/preview-frame", preview_frame, methods=["GET"], name="admin:scenario_preview_frame"),
    Route("/scenarios/review", review_decide, methods=["POST"], name="admin:reminder_review_decide"),
    Route("/scenarios/new", create, methods=["POST"], name="admin:scenario_new"),
    Route("/scenarios/runs", runs_page, methods=["GET"], name="admin:reminder_runs"),
    Route("/scenarios/runs/preview", dry_run_page, methods=["GET"], name="admin:reminder_dry_run"),
    Route("/scenarios/runs/{run_id:int}", run_page, methods=["GET"], name="admin:reminder_run"),
    Route("/scenarios/runs/{run_id:int}/retry", run_retry, methods=["POST"], name="admin:reminder_run_retry"),
    Route("/scenarios/{scenario_id:int}", edit_page, methods=["GET"], name="admin:scenario"),
    Route("/scenarios/{scenario_id:int}", save, methods=["POST"], name="admin:scenario_save"),
    Route("/scenarios/{scenario_id:int}/preview", preview_fragment, methods=["POST"],
          name="admin:scenario_preview"),
]
