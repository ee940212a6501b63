from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from payments import rf


@pytest.mark.parametrize("reference", ["RF18539007547034", "RF18 5390 0754 7034", "rf18 5390 0754 7034"])
def test_published_example_is_valid(reference: str) -> None:
    assert rf.is_valid(reference)


@pytest.mark.parametrize(
    "reference",
    ["RF19539007547034", "RF18539007547035", "RF18", "XX18539007547034", "RF1853900754703A!",
     "RF18" + "1" * 22, "", "RFAB539007547034"],
)
def test_wrong_references_are_refused(reference: str) -> None:
    assert not rf.is_valid(reference)


def test_check_digits_of_the_published_example() -> None:
    assert rf.make("539007547034") == "RF18539007547034"
    assert rf.pretty("RF18539007547034") == "RF18 5390 0754 7034"


@given(st.integers(min_value=1, max_value=10**12))
def test_every_checkout_reference_is_valid_and_distinct(checkout_id: int) -> None:
    reference = rf.make_reference(checkout_id)
    assert rf.is_valid(reference) and len(reference) <= 25
    assert reference != rf.make_reference(checkout_id + 1)


def test_a_body_too_long_is_refused() -> None:
    with pytest.raises(ValueError):
        rf.make("1" * 22)
