"""Reminder scenarios: the default one every company starts with, and checks on save.

A scenario is an ordered list of steps (offset in days from the due date, negative before
it). The texts are Jinja templates rendered in a sandbox; the placeholders they may use are
listed in `dunning.messages` (PLACEHOLDERS).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dunning.messages import TemplateProblem, validate_step
from ledger.models import Company, Scenario, ScenarioStep

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

DEFAULT_STEPS: tuple[StepDefaults, ...] = (
    StepDefaults(
        offset_days=-5,
        tone="courteous",
        whole_balance=False,
        subject_fr="{{ company.name }} : échéance prochaine de vos factures",
        body_fr="""Bonjour,

Pour faciliter votre organisation, voici les factures de {{ company.name }} qui arrivent bientôt à échéance :

{{ invoices }}

Total : {{ totals }}

""" + _BROKEN + _SAVINGS_FR + """
Vous pouvez consulter votre compte et régler en ligne ici : {{ link }}

Si le règlement est déjà parti, merci et ne tenez pas compte de ce message.

Cordialement,
{{ company.name }}""",
        subject_en="{{ company.name }}: invoices falling due soon",
        body_en="""Hello,

To help you plan, here are the invoices from {{ company.name }} falling due soon:

{{ invoices }}

Total: {{ totals }}

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
        subject_fr="{{ company.name }} : rappel de factures échues",
        body_fr="""Bonjour,

Sauf erreur de notre part, les factures suivantes n'ont pas encore été réglées :

{{ invoices }}

Total : {{ totals }}

""" + _BROKEN + _SAVINGS_FR + """
Vous pouvez les régler en ligne, ou nous signaler un litige, ici : {{ link }}

Si vous avez déjà effectué le règlement, merci de ne pas tenir compte de ce message.

Cordialement,
{{ company.name }}""",
        subject_en="{{ company.name }}: reminder of overdue invoices",
        body_en="""Hello,

Unless we are mistaken, the following invoices have not been paid yet:

{{ invoices }}

Total: {{ totals }}

""" + _BROKEN + _SAVINGS_EN + """
You can pay them online, or tell us about a problem, here: {{ link }}

If you have already paid, please ignore this message.

Kind regards,
{{ company.name }}""",
    ),
    StepDefaults(
        offset_days=15,
        tone="firm",
        whole_balance=False,
        subject_fr="{{ company.name }} : deuxième relance, factures impayées",
        body_fr="""Bonjour,

Malgré notre précédent rappel, les factures suivantes restent impayées :

{{ invoices }}

Total dû : {{ totals }}

""" + _BROKEN + """Nous vous remercions de procéder à leur règlement sans délai, en ligne : {{ link }}

Si un point bloque le paiement, signalez-le depuis ce même lien : nous le traiterons rapidement.

Cordialement,
{{ company.name }}""",
        subject_en="{{ company.name }}: second reminder, unpaid invoices",
        body_en="""Hello,

Despite our previous reminder, the following invoices remain unpaid:

{{ invoices }}

Total due: {{ totals }}

""" + _BROKEN + """Please settle them without delay, online: {{ link }}

If something is holding up payment, tell us through the same link and we will deal with it quickly.

Kind regards,
{{ company.name }}""",
    ),
    StepDefaults(
        offset_days=30,
        tone="formal",
        whole_balance=True,
        subject_fr="Mise en demeure de payer — {{ company.name }}",
        body_fr="""Madame, Monsieur,

Malgré nos relances, votre compte présente les factures échues et impayées suivantes :

{{ invoices }}

Total dû : {{ totals }}

""" + _BROKEN + """Nous vous mettons en demeure de régler cette somme sous huit jours à compter de la réception du présent courrier.
{% if late_charges %}

Conformément à l'article L441-10 du Code de commerce, ce retard rend exigibles de plein droit des pénalités de retard au taux annuel de {{ late_charges.rate }} ainsi qu'une indemnité forfaitaire pour frais de recouvrement de {{ late_charges.indemnity }} par facture, soit à ce jour :

{{ late_charges }}
{% endif %}

Règlement en ligne : {{ link }}

À défaut de règlement dans ce délai, nous engagerons les procédures de recouvrement prévues par la loi.

{{ company.name }}""",
        subject_en="Formal notice to pay — {{ company.name }}",
        body_en="""Dear Sir or Madam,

Despite our reminders, your account shows the following overdue and unpaid invoices:

{{ invoices }}

Total due: {{ totals }}

""" + _BROKEN + """We hereby give you formal notice to pay this sum within eight days of receiving this letter.
{% if late_charges %}

Under article L441-10 of the French Commercial Code, late payment makes due, by operation of law, late-payment interest at the annual rate of {{ late_charges.rate }} and a fixed recovery indemnity of {{ late_charges.indemnity }} per invoice, that is, as of today:

{{ late_charges }}
{% endif %}

Pay online: {{ link }}

Failing payment within this period, we will take the recovery action the law provides.

{{ company.name }}""",
    ),
)


class ScenarioError(ValueError):
    """A scenario or step cannot be saved; the message says why."""


def validate_step_fields(step: ScenarioStep | StepDefaults) -> None:
    """Both languages' subject and body, and the tone; raises TemplateProblem or ScenarioError."""
    if step.tone not in TONES:
        raise ScenarioError(f"unknown tone {step.tone!r} (known: {', '.join(TONES)})")
    problems: list[str] = []
    for language in ("fr", "en"):
        try:
            validate_step(getattr(step, f"subject_{language}"), getattr(step, f"body_{language}"),
                          field_prefix=f"{language} ")
        except TemplateProblem as problem:
            problems.extend(problem.problems)
    if problems:
        raise TemplateProblem(problems)


def save_step(session: Session, scenario: Scenario, **fields: object) -> ScenarioStep:
    """Add a step after checking its texts: a broken template is refused here, never at send time."""
    step = ScenarioStep(**fields)
    validate_step_fields(step)
    if any(existing.offset_days == step.offset_days for existing in scenario.steps):
        raise ScenarioError(f"the scenario already has a step at D{step.offset_days:+d}")
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
            channel="email", subject_fr=defaults.subject_fr, body_fr=defaults.body_fr,
            subject_en=defaults.subject_en, body_en=defaults.body_en,
        ))
    session.flush()
    return scenario
