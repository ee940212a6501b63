from __future__ import annotations

import pytest

from ledger.banking import BankDetailsError, format_iban, normalize_bic, normalize_iban


@pytest.mark.parametrize("text,expected", [
    ("FR7630006000011234567890189", "FR7630006000011234567890189"),
    ("fr76 3000 6000 0112 3456 7890 189", "FR7630006000011234567890189"),
    ("DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000", "DE89370400440532013000"),
    ("GB33-BUKB-2020-1555-5555-55", "GB33BUKB20201555555555"),
])
def test_good_ibans_come_back_in_their_electronic_form(text: str, expected: str) -> None:
    assert normalize_iban(text) == expected


@pytest.mark.parametrize("text,message", [
    ("", "Enter an IBAN."),
    ("FR76300060000112345678901", "FR76300060000112345678901 has 25 characters; an IBAN from FR has 27."),
    ("FR7630006000011234567", "has 21 characters; an IBAN from FR has 27."),  # passes mod 97 by length alone
    ("FR7630006000011234567890188", "its check digits do not match"),
    ("XX7630006000011234567890189", "XX is not a country code that uses IBANs"),
    ("FR76 3000 6000 0112 3456 7890 18!", "may only hold letters and digits"),
    ("DE8937040044053201300A", "does not have the layout of an IBAN from DE"),
])
def test_bad_ibans_are_refused_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(BankDetailsError) as raised:
        normalize_iban(text)
    assert message in str(raised.value)


def test_a_french_iban_of_the_wrong_length_with_good_check_digits_is_refused() -> None:
    # The defect: 19 characters whose ISO check digits hold used to pass a bare mod-97 check.
    body = "300060000112345"
    digits = 98 - int("".join(str(int(ch, 36)) for ch in body + "FR00")) % 97
    short = f"FR{digits:02d}{body}"
    assert len(short) == 19 and int("".join(str(int(ch, 36)) for ch in short[4:] + short[:4])) % 97 == 1
    with pytest.raises(BankDetailsError, match="has 19 characters; an IBAN from FR has 27"):
        normalize_iban(short)


def test_bics() -> None:
    assert normalize_bic("agri frpp xxx") == "AGRIFRPPXXX"
    assert normalize_bic("BUKBGB22", iban="GB33BUKB20201555555555") == "BUKBGB22"
    assert normalize_bic("AGRIFRPP", iban="MC5811222000010123456789030") == "AGRIFRPP"  # Monaco banks under FR
    for bad, message in (("AGRI", "is not a BIC"), ("AGRIXQPP", "XQ is not a country code"), ("", "Enter a BIC.")):
        with pytest.raises(BankDetailsError, match=message):
            normalize_bic(bad)
    with pytest.raises(BankDetailsError, match="The BIC's country GB differs from the IBAN's FR"):
        normalize_bic("BUKBGB22", iban="FR7630006000011234567890189")


def test_errors_carry_a_message_id_and_values_for_translation() -> None:
    with pytest.raises(BankDetailsError) as raised:
        normalize_iban("FR7630006000011234567890188")
    assert raised.value.message == "%(value)s is not a valid IBAN: its check digits do not match (a typo?)."
    assert raised.value.values == {"value": "FR7630006000011234567890188"}


def test_format_iban_groups_by_four() -> None:
    assert format_iban("FR7630006000011234567890189") == "FR76 3000 6000 0112 3456 7890 189"
