"""The matching rules, on plain values: no database."""

from __future__ import annotations

from datetime import date

from payments import rf
from reconciliation.matching import (
    Book,
    CheckoutFacts,
    CustomerFacts,
    EntryFacts,
    Evidence,
    OpenInvoice,
    match_entry,
    name_similarity,
)

ACME, OTHER = 1, 2
DAY = date(2026, 11, 20)


def _invoice(id: int, customer: int, number: str, open_minor: int, company: int = ACME, due: date = date(2026, 11, 1),
             discount_bps: int | None = None, until: date | None = None) -> OpenInvoice:
    return OpenInvoice(id, company, customer, number, "EUR", due, open_minor, open_minor, discount_bps, until)


def _book(**extra: object) -> Book:
    invoices = [
        _invoice(1, 10, "F-2026-0468", 120_00),
        _invoice(2, 10, "F-2026-0469", 80_00, due=date(2026, 11, 5)),
        _invoice(3, 11, "F-2026-0470", 175_00),
        _invoice(4, 11, "F-2026-0471", 1000_00, discount_bps=200, until=date(2026, 11, 30)),
        _invoice(5, 20, "F-2026-0472", 333_00, company=OTHER),
        _invoice(6, 12, "F-2026-0473", 80_00),
    ]
    customers = [CustomerFacts(10, ACME, "Boulangeries Martin SARL"), CustomerFacts(11, ACME, "Garage Petit SAS"),
                 CustomerFacts(12, ACME, "Transports Lefèvre"), CustomerFacts(20, OTHER, "Autre Client")]
    return Book.of(invoices, customers, **extra)  # type: ignore[arg-type]


def _entry(amount: int, text: str | None = None, **fields: object) -> EntryFacts:
    values: dict[str, object] = {"key": 1, "company_id": ACME, "amount_minor": amount, "currency": "EUR",
                                 "value_date": DAY, "remittance_text": text}
    values.update(fields)
    return EntryFacts(**values)  # type: ignore[arg-type]


def test_an_rf_reference_typed_with_spaces_and_lower_case_finds_its_checkout_and_is_applied() -> None:
    reference = rf.make_reference(42)
    book = _book(checkouts=[CheckoutFacts(42, ACME, 10, reference, "EUR", 200_00, "open", (1, 2))])
    typed = " ".join(rf.pretty(reference).lower().split())
    outcome = match_entry(_entry(200_00, f"virement {typed} merci"), book)
    proposal = outcome.proposal
    assert proposal is not None and proposal.evidence is Evidence.rf_reference and proposal.auto
    assert proposal.checkout_id == 42
    assert [(line.invoice_id, line.amount_minor) for line in proposal.lines] == [(1, 120_00), (2, 80_00)]


def test_an_rf_reference_with_another_amount_waits_for_staff() -> None:
    reference = rf.make_reference(42)
    book = _book(checkouts=[CheckoutFacts(42, ACME, 10, reference, "EUR", 200_00, "open", (1, 2))])
    proposal = match_entry(_entry(150_00, structured_reference=reference), book).proposal
    assert proposal is not None and not proposal.auto and proposal.checkout_id == 42
    assert sum(line.amount_minor for line in proposal.lines) == 150_00


def test_the_rf_reference_of_another_company_is_never_matched_and_says_so() -> None:
    reference = rf.make_reference(43)
    book = _book(foreign_references=[reference])
    outcome = match_entry(_entry(333_00, structured_reference=reference), book)
    assert outcome.proposal is None or outcome.proposal.checkout_id is None
    assert any("another company" in warning for warning in outcome.warnings)
    assert all(line.invoice_id != 5 for line in (outcome.proposal.lines if outcome.proposal else ()))


def test_invoice_numbers_with_other_separators_and_prefixes_and_the_exact_amount_are_applied() -> None:
    outcome = match_entry(_entry(200_00, "Reglement FACT 2026/0468 et f20260469"), _book())
    proposal = outcome.proposal
    assert proposal is not None and proposal.evidence is Evidence.invoice_number and proposal.auto
    assert {line.invoice_id: line.amount_minor for line in proposal.lines} == {1: 120_00, 2: 80_00}


def test_invoice_numbers_with_another_amount_are_only_suggested_and_the_rest_is_credit() -> None:
    proposal = match_entry(_entry(130_00, "Facture F-2026-0468"), _book()).proposal
    assert proposal is not None and not proposal.auto
    assert [(line.invoice_id, line.amount_minor) for line in proposal.lines] == [(1, 120_00), (None, 10_00)]
    assert proposal.lines[-1].customer_id == 10


def test_the_company_setting_can_keep_invoice_numbers_for_staff() -> None:
    proposal = match_entry(_entry(120_00, "F-2026-0468"), _book(), auto_level="reference").proposal
    assert proposal is not None and not proposal.auto


def test_an_invoice_of_another_company_named_in_the_text_is_not_matched() -> None:
    outcome = match_entry(_entry(333_00, "F-2026-0472"), _book())
    assert outcome.proposal is None


def test_the_discount_counts_only_within_its_period() -> None:
    net = 1000_00 - 20_00
    within = match_entry(_entry(net, "F-2026-0471"), _book()).proposal
    assert within is not None and within.auto
    assert [(line.amount_minor, line.discount_minor) for line in within.lines] == [(net, 20_00)]
    late = match_entry(_entry(net, "F-2026-0471", value_date=date(2026, 12, 1)), _book()).proposal
    assert late is not None and not late.auto
    assert [(line.amount_minor, line.discount_minor) for line in late.lines] == [(net, 0)]


def test_a_known_payer_iban_and_a_sum_of_its_open_invoices() -> None:
    book = _book(payer_ibans=[(ACME, "FR1420041010050500013M02606", 10)])
    proposal = match_entry(_entry(200_00, "paiement", payer_iban="FR1420041010050500013M02606"), book).proposal
    assert proposal is not None and proposal.evidence is Evidence.payer_iban and not proposal.auto
    assert {line.invoice_id for line in proposal.lines} == {1, 2}


def test_a_payer_name_close_to_a_customer_and_one_of_its_invoices() -> None:
    proposal = match_entry(_entry(175_00, None, payer_name="GARAGE PETIT"), _book()).proposal
    assert proposal is not None and proposal.evidence is Evidence.payer_name
    assert [(line.invoice_id, line.amount_minor) for line in proposal.lines] == [(3, 175_00)]


def test_an_amount_only_one_invoice_has_is_suggested_and_an_ambiguous_one_is_not() -> None:
    proposal = match_entry(_entry(120_00, "virement"), _book()).proposal
    assert proposal is not None and proposal.evidence is Evidence.amount and not proposal.auto
    assert match_entry(_entry(80_00, "virement"), _book()).proposal is None  # F-0469 and F-0473


def test_settling_a_book_hides_what_is_paid_from_the_next_entry() -> None:
    book = _book()
    book.settle(1, 120_00)
    assert match_entry(_entry(120_00, "virement"), book).proposal is None


def test_name_similarity_ignores_legal_forms_case_and_accents() -> None:
    assert name_similarity("TRANSPORTS LEFEVRE SA", "Transports Lefèvre") == 1.0
    assert name_similarity("Garage Petit", "Boulangeries Martin") < 0.5
