from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from ledger.companies import CompanyError, create_company
from ledger.disputes import DEFAULT_REASONS, active_reasons


def test_create_company_checks_bank_details_and_keeps_their_electronic_form(session: Session) -> None:
    company = create_company(session, code="BANKED", name="Banked SAS", currency="EUR",
                             iban="fr76 3000 6000 0112 3456 7890 189", bic="agrifrpp")
    assert (company.iban, company.bic) == ("FR7630006000011234567890189", "AGRIFRPP")
    with pytest.raises(CompanyError, match="has 19 characters; an IBAN from FR has 27"):
        create_company(session, code="SHORT", name="Short SAS", currency="EUR", iban="FR39300060000112345")
    with pytest.raises(CompanyError, match="The BIC's country GB differs from the IBAN's FR"):
        create_company(session, code="MIXED", name="Mixed SAS", currency="EUR",
                       iban="FR7630006000011234567890189", bic="BUKBGB22")


def test_every_company_starts_with_the_default_dispute_reasons(session: Session) -> None:
    company = create_company(session, code="NEW", name="New SAS", currency="GBP", country="GB",
                             timezone="Europe/London")
    assert [(r.code, r.label_fr, r.label_en) for r in active_reasons(session, company.id)] == list(DEFAULT_REASONS)
