from __future__ import annotations

import pytest

from kernel.i18n import N_
from kernel.user_error import Count, UserError, UserErrors
from ledger.money import Money


def test_one_error_reads_in_french_and_in_english() -> None:
    error = UserError(N_("The logo is larger than %(size)s KB."), size=512).at(field="logo")
    assert error.render("en") == str(error) == "The logo is larger than 512 KB."
    assert error.render("fr") == "Le logo dépasse 512 Ko."
    assert (error.field, error.values) == ("logo", {"size": 512})


def test_values_are_shown_in_the_readers_language_after_translation() -> None:
    error = UserError(N_("%(number)s: %(amount)s exceeds the open %(open)s"), number="F-1",
                      amount=Money(1234_56, "EUR"), open=Money(1000_00, "EUR"))
    assert error.render("fr") == "F-1 : 1\u202f234,56\u00a0€ dépasse le solde ouvert de 1\u202f000,00\u00a0€"
    assert error.render("en") == "F-1: €1,234.56 exceeds the open €1,000.00"
    assert Count(50_000).localized("fr") == "50\u202f000"


def test_a_value_may_be_named_line_or_field() -> None:
    error = UserError(N_("%(pair)s on %(day)s is already on line %(line)s with another rate"),
                      pair="EUR/USD", day="2026-11-01", line="3").at(line=7)
    assert str(error) == "EUR/USD on 2026-11-01 is already on line 3 with another rate"
    assert error.line == 7


def test_a_value_named_language_is_shown_by_its_name() -> None:
    from kernel.user_error import Language, Translated

    error = UserError(N_("Step %(step)s, %(language)s %(field)s: cannot be rendered (%(detail)s)."), step="D+3",
                      language=Language("en"), field=Translated(N_("subject")), detail="x")
    assert error.render("fr") == "Étape D+3, objet (English) : rendu impossible (x)."
    assert str(error) == "Step D+3, English subject: cannot be rendered (x)."


def test_several_errors_keep_their_fields_and_join_in_each_language() -> None:
    errors = UserErrors([
        UserError(N_("%(value)s is not a colour like #1d4f91."), value="blue").at(field="brand_color"),
        UserError(N_("Enter a whole number from %(low)s to %(high)s."), low=1, high=365).at(field="link_lifetime_days"),
    ])
    assert str(errors) == "blue is not a colour like #1d4f91.; Enter a whole number from 1 to 365."
    assert errors.by_field("fr") == {
        "brand_color": ["blue n’est pas une couleur comme #1d4f91."],
        "link_lifetime_days": ["Saisissez un nombre entier de 1 à 365."],
    }


def test_a_files_problems_group_by_line_in_line_order_in_each_language() -> None:
    errors = UserErrors([
        UserError(N_("unknown currency %(value)s"), value="'XYZ'").at(line=7),
        UserError(N_("the file is empty")).at(line=3),
        UserError(N_("unknown currency %(value)s"), value="'ABC'").at(line=7),
        UserError(N_("the file is empty")),
    ])
    assert errors.by_line("en") == [(None, "the file is empty"), (3, "the file is empty"),
                                    (7, "unknown currency 'XYZ'; unknown currency 'ABC'")]
    assert errors.by_line("fr")[2] == (7, "devise inconnue 'XYZ' ; devise inconnue 'ABC'")


def test_it_is_still_a_value_error_for_callers_that_catch_those() -> None:
    with pytest.raises(ValueError, match="amount is empty"):
        Money.parse(" ", "EUR")
