from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from kernel.user_error import UserError, UserErrors
from ledger.companies import CompanySettings, create_company, settings_state, update_settings
from ledger.disputes import DEFAULT_REASONS, active_reasons


def test_create_company_checks_bank_details_and_keeps_their_electronic_form(session: Session) -> None:
    company = create_company(session, code="BANKED", name="Banked SAS", currency="EUR",
                             iban="fr76 3000 6000 0112 3456 7890 189", bic="agrifrpp")
    assert (company.iban, company.bic) == ("FR7630006000011234567890189", "AGRIFRPP")
    with pytest.raises(UserError, match="has 19 characters; an IBAN from FR has 27"):
        create_company(session, code="SHORT", name="Short SAS", currency="EUR", iban="FR39300060000112345")
    with pytest.raises(UserError, match="The BIC's country GB differs from the IBAN's FR"):
        create_company(session, code="MIXED", name="Mixed SAS", currency="EUR",
                       iban="FR7630006000011234567890189", bic="BUKBGB22")


def test_every_company_starts_with_the_default_dispute_reasons(session: Session) -> None:
    company = create_company(session, code="NEW", name="New SAS", currency="GBP", country="GB",
                             timezone="Europe/London")
    assert [(r.code, r.label_fr, r.label_en) for r in active_reasons(session, company.id)] == list(DEFAULT_REASONS)


def _settings_form(**changes: str) -> dict[str, str]:
    form = {"name": "North SAS", "brand_color": "#1d4f91", "reminder_hour": "8", "promise_horizon_days": "30",
            "promise_grace_days": "3", "link_lifetime_days": "30", "base_currency": "EUR", "timezone": "Europe/Paris",
            "country": "FR", "method_card": "1", "method_bank_transfer": "1"}
    form.update(changes)
    return form


def test_settings_with_two_bad_fields_report_both_and_apply_nothing(session: Session) -> None:
    company = create_company(session, code="NORTH", name="North SAS", currency="EUR")
    before = settings_state(company)
    with pytest.raises(UserErrors) as raised:
        CompanySettings.from_form(_settings_form(name="Renamed", brand_color="blue", link_lifetime_days="0"))
    assert [(e.field, e.render("en")) for e in raised.value] == [
        ("brand_color", "blue is not a colour like #1d4f91."),
        ("link_lifetime_days", "Enter a whole number from 1 to 365."),
    ]
    assert [e.render("fr") for e in raised.value] == [
        "blue n’est pas une couleur comme #1d4f91.", "Saisissez un nombre entier de 1 à 365."]
    assert settings_state(company) == before


def test_settings_are_applied_from_the_typed_object(session: Session) -> None:
    company = create_company(session, code="NORTH", name="North SAS", currency="EUR")
    settings = CompanySettings.from_form(_settings_form(
        brand_color="#AABBCC", iban="fr76 3000 6000 0112 3456 7890 189", default_discount_percent="2,5",
        default_discount_days="10"))
    changed = update_settings(session, company, settings, actor="root@x.test")
    assert (company.brand_color, company.iban, company.default_discount_bps, company.default_discount_days) == (
        "#aabbcc", "FR7630006000011234567890189", 250, 10)
    assert sorted(company.disabled_methods) == ["direct_debit", "instant_transfer"]
    assert {"brand_color", "iban", "default_discount_bps", "disabled_methods"} <= set(changed)


def test_a_discount_needs_both_its_percentage_and_its_days() -> None:
    with pytest.raises(UserErrors) as raised:
        CompanySettings.from_form(_settings_form(default_discount_percent="2"))
    assert [e.field for e in raised.value] == ["default_discount_days"]
