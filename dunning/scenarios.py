"""Reminder scenarios: the default one every company starts with, and checks on save.

A scenario is an ordered list of steps (offset in days from the due date, negative before
it). The texts are Jinja templates rendered in a sandbox; the placeholders they may use are
listed in `dunning.messages` (PLACEHOLDERS).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dunning import messages
from dunning.messages import PARTS, StepTexts, check_template
from kernel.i18n import N_
from dunning.template_language import JinjaDetail
from kernel.user_error import Language, Translated, UserError, UserErrors
from ledger import audit
from ledger.models import Company, Reminder, Scenario, ScenarioStep

DEFAULT_SCENARIO_NAME = "Standard"
TONES = ("courteous", "firm", "formal")


@dataclass(frozen=True)
class StepDefaults:
    offset_days: int
    tone: str
    whole_balance: bool
    subject_fr: str
    body_fr: str
    subject_en: str
    body_en: str
    may_skip: bool = False


_SAVINGS_FR = """{% if savings %}
Escompte pour paiement anticipé encore disponible :
{{ savings }}

{% endif %}"""
_BROKEN = """{% if broken_promise %}
{{ broken_promise }}

{% endif %}"""
_SAVINGS_EN = """{% if savings %}
Early-payment discounts still available:
{{ savings }}

{% endif %}"""

_UPCOMING_FR = """{% if upcoming %}
Pour information, ces factures arrivent prochainement à échéance :

{{ upcoming }}

{% endif %}"""
_UPCOMING_EN = """{% if upcoming %}
For your information, these invoices fall due soon:

{{ upcoming }}

{% endif %}"""

# Each text says only what is true of the invoices it lists: overdue and not yet due ones in
# their own sections, "despite our reminder" only when one was sent for them.
DEFAULT_STEPS: tuple[StepDefaults, ...] = (
    StepDefaults(
        offset_days=-5,
        tone="courteous",
        whole_balance=False,
        may_skip=True,
        subject_fr="{{ company.name }} : échéance prochaine de vos factures",
        body_fr="""Bonjour,

Pour faciliter votre organisation, voici les factures de {{ company.name }} qui arrivent bientôt à échéance :

{{ upcoming }}

Total : {{ upcoming.total }}

""" + _BROKEN + _SAVINGS_FR + """
Vous pouvez consulter votre compte et régler en ligne ici : {{ link }}

Si le règlement est déjà parti, merci et ne tenez pas compte de ce message.

Cordialement,
{{ company.name }}""",
        subject_en="{{ company.name }}: invoices falling due soon",
        body_en="""Hello,

To help you plan, here are the invoices from {{ company.name }} falling due soon:

{{ upcoming }}

Total: {{ upcoming.total }}

""" + _BROKEN + _SAVINGS_EN + """
You can view your account and pay online here: {{ link }}

If payment is already on its way, thank you, and please ignore this message.

Kind regards,
{{ company.name }}""",
    ),
    StepDefaults(
        offset_days=3,
        tone="courteous",
        whole_balance=False,
        may_skip=False,
        subject_fr="{{ company.name }} : rappel de factures échues",
        body_fr="""Bonjour,

Sauf erreur de notre part, les factures suivantes sont échues et n'ont pas encore été réglées :

{{ overdue }}

Total échu : {{ overdue.total }}

""" + _UPCOMING_FR + _BROKEN + _SAVINGS_FR + """
Vous pouvez les régler en ligne, ou nous signaler un litige, ici : {{ link }}

Si vous avez déjà effectué le règlement, merci de ne pas tenir compte de ce message.

Cordialement,
{{ company.name }}""",
        subject_en="{{ company.name }}: reminder of overdue invoices",
        body_en="""Hello,

Unless we are mistaken, the following invoices are overdue and have not been paid yet:

{{ overdue }}

Total overdue: {{ overdue.total }}

""" + _UPCOMING_EN + _BROKEN + _SAVINGS_EN + """
You can pay them online, or tell us about a problem, here: {{ link }}

If you have already paid, please ignore this message.

Kind regards,
{{ company.name }}""",
    ),
    StepDefaults(
        offset_days=15,
        tone="firm",
        whole_balance=False,
        may_skip=True,
        subject_fr="{{ company.name }} : deuxième relance, factures impayées",
        body_fr="""Bonjour,

{% if reminded_before %}
Malgré notre précédent rappel, les factures suivantes restent impayées :
{% else %}
Les factures suivantes sont échues et restent impayées :
{% endif %}

{{ overdue }}

Total échu : {{ overdue.total }}

""" + _UPCOMING_FR + _BROKEN + """Nous vous remercions de procéder à leur règlement sans délai, en ligne : {{ link }}

Si un point bloque le paiement, signalez-le depuis ce même lien : nous le traiterons rapidement.

Cordialement,
{{ company.name }}""",
        subject_en="{{ company.name }}: second reminder, unpaid invoices",
        body_en="""Hello,

{% if reminded_before %}
Despite our previous reminder, the following invoices remain unpaid:
{% else %}
The following invoices are overdue and remain unpaid:
{% endif %}

{{ overdue }}

Total overdue: {{ overdue.total }}

""" + _UPCOMING_EN + _BROKEN + """Please settle them without delay, online: {{ link }}

If something is holding up payment, tell us through the same link and we will deal with it quickly.

Kind regards,
{{ company.name }}""",
    ),
    StepDefaults(
        offset_days=30,
        tone="formal",
        whole_balance=True,
        may_skip=False,
        subject_fr="Mise en demeure de payer — {{ company.name }}",
        body_fr="""Madame, Monsieur,

{% if reminded_before %}
Malgré nos relances, votre compte présente les factures échues et impayées suivantes :
{% else %}
Votre compte présente les factures échues et impayées suivantes :
{% endif %}

{{ overdue }}

Total dû : {{ overdue.total }}

""" + _BROKEN + """Nous vous mettons en demeure de régler cette somme sous huit jours à compter de la réception du présent courrier.
{% if late_charges %}

{{ late_charges.law }}

{{ late_charges }}
{% endif %}

Règlement en ligne : {{ link }}

À défaut de règlement dans ce délai, nous engagerons les procédures de recouvrement prévues par la loi.

{{ company.name }}""",
        subject_en="Formal notice to pay — {{ company.name }}",
        body_en="""Dear Sir or Madam,

{% if reminded_before %}
Despite our reminders, your account shows the following overdue and unpaid invoices:
{% else %}
Your account shows the following overdue and unpaid invoices:
{% endif %}

{{ overdue }}

Total due: {{ overdue.total }}

""" + _BROKEN + """We hereby give you formal notice to pay this sum within eight days of receiving this letter.
{% if late_charges %}

{{ late_charges.law }}

{{ late_charges }}
{% endif %}

Pay online: {{ link }}

Failing payment within this period, we will take the recovery action the law provides.

{{ company.name }}""",
    ),
)


PART_LABELS = PARTS


def validate_step_fields(step: ScenarioStep | StepDefaults) -> None:
    """Both languages' subject and body, and the tone; raises UserErrors (every template problem,
    at its field and line) or UserError (the tone)."""
    if step.tone not in TONES:
        raise UserError(N_("unknown tone %(tone)s (known: %(known)s)"), tone=repr(step.tone), known=", ".join(TONES))
    problems = [problem for language in ("fr", "en") for part in ("subject", "body")
                for problem in check_template(getattr(step, f"{part}_{language}"), part, language)]
    if problems:
        raise UserErrors(problems)


def save_step(session: Session, scenario: Scenario, **fields: object) -> ScenarioStep:
    """Add a step after checking its texts: a broken template is refused here, never at send time."""
    step = ScenarioStep(**fields)
    validate_step_fields(step)
    if any(existing.offset_days == step.offset_days for existing in scenario.steps):
        raise UserError(N_("the scenario already has a step at %(step)s"), step=f"D{step.offset_days:+d}")
    scenario.steps.append(step)
    session.flush()
    return step


def ensure_default_scenario(session: Session, company: Company) -> Scenario:
    """The company's default scenario (segment None), created with the standard steps if missing."""
    existing = session.scalar(
        select(Scenario).where(Scenario.company_id == company.id, Scenario.segment.is_(None))
        .order_by(Scenario.active.desc(), Scenario.id)
    )
    if existing is not None:
        return existing
    scenario = Scenario(company_id=company.id, name=DEFAULT_SCENARIO_NAME, segment=None, minimums={}, active=True)
    session.add(scenario)
    for defaults in DEFAULT_STEPS:
        scenario.steps.append(ScenarioStep(
            offset_days=defaults.offset_days, tone=defaults.tone, whole_balance=defaults.whole_balance,
            may_skip=defaults.may_skip,
            channel="email", subject_fr=defaults.subject_fr, body_fr=defaults.body_fr,
            subject_en=defaults.subject_en, body_en=defaults.body_en,
        ))
    session.flush()
    return scenario


# --- editing a scenario from the back-office -------------------------------------------------------

MAX_OFFSET_DAYS = 366


def _label(offset_days: int) -> str:
    return f"D{offset_days:+d}" if offset_days else "D"


@dataclass
class StepInput:
    """One step as staff typed it; `id` None for a new step."""

    id: int | None
    offset_days: int
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
        return _label(self.offset_days)

    def texts(self) -> StepTexts:
        return StepTexts(id=self.id, offset_days=self.offset_days, tone=self.tone, whole_balance=self.whole_balance,
                         subject_fr=self.subject_fr, body_fr=self.body_fr, subject_en=self.subject_en,
                         body_en=self.body_en, may_skip=self.may_skip)


@dataclass
class ScenarioInput:
    name: str
    segment: str | None  # None: the company default
    minimums: dict[str, int]
    active: bool
    steps: list[StepInput]


def step_problems(step: StepInput) -> list[UserError]:
    """Every template problem of one step, in both languages, naming field and line."""
    found = []
    for language in ("fr", "en"):
        for field_name in ("subject", "body"):
            source = getattr(step, f"{field_name}_{language}")
            # The language by its name and the part in the reader's language, when shown.
            values: dict[str, object] = {"step": step.label, "language": Language(language),
                                         "field": Translated(PART_LABELS[field_name])}
            issues = messages.template_issues(source)
            for issue in issues:
                if issue.kind == "syntax":
                    found.append(UserError(N_("Step %(step)s, %(language)s %(field)s, line %(line)s: syntax error "
                                              "(%(detail)s)."), **values, line=issue.line,
                                           detail=JinjaDetail(issue.detail)))
                else:
                    found.append(UserError(N_("Step %(step)s, %(language)s %(field)s, line %(line)s: unknown "
                                              "placeholder “%(name)s”."), **values, line=issue.line, name=issue.detail))
            if not issues:
                trouble = messages.render_issue(source)
                if trouble is not None:
                    found.append(UserError(N_("Step %(step)s, %(language)s %(field)s: cannot be rendered "
                                              "(%(detail)s)."), **values, detail=JinjaDetail(trouble)))
    return found


def _segment_taken(session: Session, company_id: int, segment: str | None, scenario_id: int | None) -> bool:
    query = select(Scenario.id).where(Scenario.company_id == company_id, Scenario.active.is_(True))
    query = query.where(Scenario.segment.is_(None) if segment is None else Scenario.segment == segment)
    if scenario_id is not None:
        query = query.where(Scenario.id != scenario_id)
    return session.scalar(query.limit(1)) is not None


def check_scenario(session: Session, scenario: Scenario, data: ScenarioInput) -> list[UserError]:
    """Everything wrong with `data` as the new content of `scenario` (nothing is changed)."""
    problems: list[UserError] = []
    if not data.name.strip():
        problems.append(UserError(N_("The scenario needs a name.")))
    if data.active and _segment_taken(session, scenario.company_id, data.segment, scenario.id):
        if data.segment is None:
            problems.append(UserError(N_("This company already has an active default scenario.")))
        else:
            problems.append(UserError(N_("Another active scenario of this company already applies to segment "
                                       "“%(segment)s”."), segment=data.segment))
    kept = [step for step in data.steps if not step.remove]
    if not kept:
        problems.append(UserError(N_("A scenario needs at least one step.")))
    seen: set[int] = set()
    for step in kept:
        if step.offset_days in seen:
            problems.append(UserError(N_("Two steps are at %(step)s: each step needs its own day."),
                                    step=step.label))
        seen.add(step.offset_days)
        if abs(step.offset_days) > MAX_OFFSET_DAYS:
            problems.append(UserError(N_("Step %(step)s: the day must be within %(max)s days of the due date."),
                                    step=step.label, max=MAX_OFFSET_DAYS))
        if step.tone not in TONES:
            problems.append(UserError(N_("Step %(step)s: unknown tone."), step=step.label))
        problems.extend(step_problems(step))
    existing = {step.id: step for step in scenario.steps}
    for step in data.steps:
        if step.id is not None and step.id not in existing:
            problems.append(UserError(N_("Step %(step)s is not part of this scenario."), step=step.label))
        elif step.id is not None and step.remove and session.scalar(
                select(Reminder.id).where(Reminder.step_id == step.id).limit(1)) is not None:
            problems.append(UserError(N_("Step %(step)s was already sent to customers: it cannot be removed "
                                       "(change its texts or its day instead)."),
                                    step=_label(existing[step.id].offset_days)))
    return problems


def _snapshot(scenario: Scenario) -> dict[str, object]:
    return {
        "name": scenario.name, "segment": scenario.segment, "minimums": dict(scenario.minimums or {}),
        "active": scenario.active,
        "steps": [{"id": s.id, "offset_days": s.offset_days, "tone": s.tone, "whole_balance": s.whole_balance,
                   "may_skip": s.may_skip,
                   "subject_fr": s.subject_fr, "body_fr": s.body_fr, "subject_en": s.subject_en,
                   "body_en": s.body_en} for s in sorted(scenario.steps, key=lambda s: s.offset_days)],
    }


def save_scenario(session: Session, scenario: Scenario, data: ScenarioInput, *, actor: str) -> Scenario:
    """Replace the scenario's settings and steps with `data`, all or nothing, on the audit trail.

    Raises UserErrors (nothing changed) listing every problem found.
    """
    problems = check_scenario(session, scenario, data)
    if problems:
        raise UserErrors(problems)
    before = _snapshot(scenario)
    scenario.name = data.name.strip()[:120]
    scenario.segment = data.segment
    scenario.minimums = dict(data.minimums)
    scenario.active = data.active
    existing = {step.id: step for step in scenario.steps}
    # Offsets are unique per scenario: park the kept steps out of the way first, so that two
    # steps may swap days in one save.
    for step in data.steps:
        if step.id is not None and not step.remove:
            existing[step.id].offset_days = -100_000 - step.id
    for step in data.steps:
        if step.id is not None and step.remove:
            scenario.steps.remove(existing[step.id])
    session.flush()
    for step in data.steps:
        if step.remove:
            continue
        fields = {"offset_days": step.offset_days, "tone": step.tone, "whole_balance": step.whole_balance,
                  "may_skip": step.may_skip,
                  "subject_fr": step.subject_fr, "body_fr": step.body_fr, "subject_en": step.subject_en,
                  "body_en": step.body_en}
        if step.id is None:
            scenario.steps.append(ScenarioStep(channel="email", **fields))
        else:
            for name, value in fields.items():
                setattr(existing[step.id], name, value)
    session.flush()
    session.refresh(scenario)
    audit.record(session, actor_type="user", actor=actor, action="scenario.updated", entity_type="scenario",
                 entity_id=scenario.id, before=before, after=_snapshot(scenario))
    session.flush()
    return scenario


def create_scenario(session: Session, company: Company, *, name: str, segment: str | None, actor: str) -> Scenario:
    """A new scenario for a segment (or the default), starting from the standard steps."""
    problems = []
    if not name.strip():
        problems.append(UserError(N_("The scenario needs a name.")))
    if _segment_taken(session, company.id, segment, None):
        problems.append(UserError(N_("This company already has an active default scenario.")) if segment is None
                        else UserError(N_("Another active scenario of this company already applies to segment "
                                        "“%(segment)s”."), segment=segment))
    if problems:
        raise UserErrors(problems)
    scenario = Scenario(company_id=company.id, name=name.strip()[:120], segment=segment, minimums={}, active=True)
    session.add(scenario)
    for defaults in DEFAULT_STEPS:
        scenario.steps.append(ScenarioStep(
            offset_days=defaults.offset_days, tone=defaults.tone, whole_balance=defaults.whole_balance,
            may_skip=defaults.may_skip,
            channel="email", subject_fr=defaults.subject_fr, body_fr=defaults.body_fr,
            subject_en=defaults.subject_en, body_en=defaults.body_en,
        ))
    session.flush()
    audit.record(session, actor_type="user", actor=actor, action="scenario.created", entity_type="scenario",
                 entity_id=scenario.id, after=_snapshot(scenario))
    return scenario
