"""Default scenarios and the checks a step's texts pass on save."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dunning.messages import validate_step
from dunning.scenarios import DEFAULT_STEPS, ensure_default_scenario, save_step, validate_step_fields
from kernel.user_error import UserError, UserErrors
from ledger.models import Scenario
from tests import factories


def test_default_scenario_has_the_four_standard_steps_in_both_languages(session: Session) -> None:
    company = factories.company(session)
    scenario = ensure_default_scenario(session, company)
    assert scenario.segment is None and scenario.active
    assert [(s.offset_days, s.tone, s.whole_balance) for s in scenario.steps] == [
        (-5, "courteous", False), (3, "courteous", False), (15, "firm", False), (30, "formal", True)
    ]
    formal = scenario.steps[-1]
    assert "Mise en demeure" in formal.subject_fr and "Formal notice" in formal.subject_en
    assert "{{ late_charges.law }}" in formal.body_fr and "{{ late_charges.law }}" in formal.body_en
    assert [s.may_skip for s in scenario.steps] == [True, False, True, False]
    for step in scenario.steps:
        listed = "{{ upcoming }}" if step.offset_days < 0 else "{{ overdue }}"
        assert listed in step.body_fr and listed in step.body_en and "{{ link }}" in step.body_en


def test_ensure_default_scenario_is_idempotent(session: Session) -> None:
    company = factories.company(session)
    first = ensure_default_scenario(session, company)
    assert ensure_default_scenario(session, company) is first
    assert session.scalar(select(func.count()).select_from(Scenario).where(Scenario.company_id == company.id)) == 1


def test_every_default_text_passes_validation() -> None:
    for step in DEFAULT_STEPS:
        validate_step_fields(step)


def test_a_syntax_error_is_refused_with_its_line() -> None:
    with pytest.raises(UserErrors) as refused:
        validate_step("Relance", "Bonjour,\n\n{% if invoices %}\n{{ invoices }}\n")
    [problem] = refused.value
    assert (problem.field, problem.line) == ("body", 4)
    assert str(problem).startswith("body, line 4: syntax error (")
    assert str(problem) == "body, line 4: syntax error (the text ends before a block is closed)."
    assert "endif" in problem.values["detail"]  # Jinja's own words, kept beside ours
    assert problem.render("fr").startswith("message, ligne 4 : erreur de syntaxe (")


def test_an_unknown_placeholder_is_refused_with_its_line_and_name() -> None:
    with pytest.raises(UserErrors) as refused:
        validate_step("Relance {{ company.name }}", "Bonjour {{ client.name }},\n\nTotal : {{ total }}")
    assert [str(problem) for problem in refused.value] == [
        "body, line 1: unknown placeholder “client” (known: broken_promise, company, contact, customer, invoices, "
        "late_charges, link, overdue, reminded_before, savings, today, totals, upcoming).",
        "body, line 3: unknown placeholder “total” (known: broken_promise, company, contact, customer, invoices, "
        "late_charges, link, overdue, reminded_before, savings, today, totals, upcoming).",
    ]
    assert [problem.line for problem in refused.value] == [1, 3]


def test_an_unknown_attribute_is_refused_too() -> None:
    with pytest.raises(UserErrors) as refused:
        validate_step("{{ customer.nmae }}", "ok", language="fr")
    assert [str(problem) for problem in refused.value] == [
        "français subject, line 1: unknown placeholder “customer.nmae” (known: customer.name, customer.ref)."
    ]
    assert [problem.render("fr") for problem in refused.value] == [
        "objet (français), ligne 1 : variable inconnue « customer.nmae » (connues : customer.name, customer.ref)."
    ]
    assert [problem.field for problem in refused.value] == ["subject_fr"]


def test_an_unknown_filter_is_a_syntax_error() -> None:
    with pytest.raises(UserErrors, match=r"body, line 2: syntax error \(unknown filter “shout”\)"):
        validate_step("Relance", "Bonjour\n{{ customer.name | shout }}")


def test_the_sandbox_refuses_reaching_into_python() -> None:
    with pytest.raises(UserErrors, match="body: cannot be rendered .*(unsafe|not safely|undefined)"):
        validate_step("Relance", "{{ customer.name.__class__.__mro__ }}")


def test_loops_and_variables_set_in_the_template_are_allowed() -> None:
    validate_step("{{ customer.name }}", "{% set n = invoices | length %}{{ n }}\n"
                  "{% for row in invoices %}{{ row.number }} {{ row.open }} {{ row.days_late }}\n{% endfor %}")


def test_save_step_refuses_a_broken_text_and_a_duplicate_offset(session: Session) -> None:
    company = factories.company(session)
    scenario = ensure_default_scenario(session, company)
    good = {"offset_days": 45, "tone": "formal", "subject_fr": "Dernier avis", "body_fr": "{{ invoices }}",
            "subject_en": "Last notice", "body_en": "{{ invoices }}"}
    with pytest.raises(UserErrors, match="English body, line 1: unknown placeholder “invoice”"):
        save_step(session, scenario, **{**good, "body_en": "{{ invoice }}"})
    with pytest.raises(UserError, match="unknown tone"):
        save_step(session, scenario, **{**good, "tone": "angry"})
    with pytest.raises(UserError, match="already has a step at D\\+30"):
        save_step(session, scenario, **{**good, "offset_days": 30})
    step = save_step(session, scenario, **good)
    assert step.id is not None and [s.offset_days for s in scenario.steps][-1] == 45


def test_every_rendering_stops_at_the_output_limit() -> None:
    from dunning import template_language
    from dunning.messages import TEXT_ENV

    # Within the language, yet large: a table repeated per invoice, on a customer with many.
    template = TEXT_ENV.from_string("{% for row in invoices %}{{ invoices }}{% endfor %}")
    rows = [{"number": str(n)} for n in range(3000)]

    class Table(list):  # type: ignore[type-arg]
        def __str__(self) -> str:
            return "x" * 1000

    with pytest.raises(template_language.TemplateLimit, match="more than"):
        template.render(invoices=Table(rows))


def test_work_that_prints_nothing_is_timed_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from dunning import template_language
    from dunning.messages import TEXT_ENV

    monkeypatch.setattr(template_language, "MAX_RENDER_SECONDS", 0.0)  # already past the deadline
    template = TEXT_ENV.from_string("{% for row in invoices %}{% if row.number %}{% endif %}{% endfor %}")
    with pytest.raises(template_language.TemplateLimit, match="seconds"):
        template.render(invoices=[{"number": "1"}])
