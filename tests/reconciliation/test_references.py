import string

from hypothesis import given
from hypothesis import strategies as st
from stdnum import iso11649

from payments import rf
from reconciliation.references import find_invoice_numbers, find_rf_references, normalize_invoice_number


def test_rf_tolerant_of_spaces_and_case():
    assert find_rf_references("rf18 5390 0754 7034") == ["RF18539007547034"]
    assert find_rf_references("Paiement RF18539007547034, facture 12") == ["RF18539007547034"]
    assert find_rf_references("ref:RF18 5390 0754 7034 merci") == ["RF18539007547034"]


def test_a_spaced_rf_reading_on_into_the_next_word_keeps_both_readings():
    # "RF22BVMERCI" checks too (1 chance in 97): both are candidates, the issued one matches.
    assert rf.make("BV") == "RF22BV"
    assert find_rf_references("Virement RF22 BV merci") == ["RF22BVMERCI", "RF22BV"]


def test_rf_check_digits_and_boundaries():
    assert find_rf_references("RF19 5390 0754 7034") == []  # wrong check digits
    assert find_rf_references("XRF18539007547034") == []  # inside another word
    assert find_rf_references("") == [] and find_rf_references(None) == []


bodies = st.text(alphabet=string.ascii_uppercase + string.digits, min_size=1, max_size=21)


@given(bodies, st.data())
def test_generated_rf_found_with_random_spacing_and_case(body, data):
    reference = rf.make(body)
    assert iso11649.is_valid(reference)  # python-stdnum agrees with payments.rf
    chars = []
    for ch in reference:
        chars.append(ch.lower() if data.draw(st.booleans()) else ch)
        if data.draw(st.integers(0, 3)) == 0:
            chars.append(" ")
    text = "Virement " + "".join(chars).strip() + " merci"
    assert reference in find_rf_references(text)


KNOWN = {"F-2026-0468", "F-2026-046", "F-2026-0470"}


def test_invoice_numbers_with_separators_and_prefixes():
    for text in ["F-2026-0468", "F 2026 0468", "FACT2026/0468", "Facture n° F20260468", "f2026-0468."]:
        assert find_invoice_numbers(text, KNOWN) == {"F20260468"}, text


def test_invoice_number_not_found_inside_a_longer_one():
    assert find_invoice_numbers("Facture F-2026-0468", KNOWN) == {"F20260468"}
    assert find_invoice_numbers("Facture F-2026-046 et F-2026-0470", KNOWN) == {"F2026046", "F20260470"}
    assert find_invoice_numbers("commande 120260468", KNOWN) == set()


def test_normalize():
    assert normalize_invoice_number(" f-2026/0468 ") == "F20260468"


@given(st.integers(1, 99999), st.sampled_from(["-", " ", "/", ".", ""]), st.sampled_from(["F", "FACT", "Facture "]))
def test_invoice_found_whatever_the_separator(n, sep, prefix):
    number = f"F-2026-{n:05d}"
    text = f"Paiement {prefix}{sep}2026{sep}{n:05d} merci"
    assert normalize_invoice_number(number) in find_invoice_numbers(text, {number})
