from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field, field_validator

from kernel.forms import Form, parse, whole_number
from kernel.i18n import N_
from kernel.user_error import UserError, UserErrors


class Step(Form):
    title: str = Field(min_length=1, max_length=20)
    days: Annotated[int, whole_number(0, 90)]
    tone: str

    @field_validator("tone")
    @classmethod
    def _tone(cls, value: str) -> str:
        if value not in ("courteous", "firm"):
            raise UserError(N_("unknown tone %(tone)s"), tone=repr(value))
        return value


def test_a_good_form_is_a_typed_object() -> None:
    step = parse(Step, {"title": " First ", "days": "15", "tone": "firm", "csrf_token": "x"})
    assert (step.title, step.days, step.tone) == ("First", 15, "firm")


def test_every_bad_field_is_named_with_a_translatable_message() -> None:
    with pytest.raises(UserErrors) as raised:
        parse(Step, {"title": "x" * 21, "days": "soon", "tone": "rude"})
    errors = list(raised.value)
    assert [(e.field, str(e)) for e in errors] == [
        ("title", "Enter at most 20 characters."),
        ("days", "Enter a whole number from 0 to 90."),
        ("tone", "unknown tone 'rude'"),
    ]
    assert errors[0].render("fr") == "Saisissez au plus 20 caractères."
    assert errors[1].render("fr") == "Saisissez un nombre entier de 0 à 90."


def test_a_missing_field_is_named() -> None:
    with pytest.raises(UserErrors) as raised:
        parse(Step, {"title": "First", "tone": "firm"})
    [missing] = raised.value
    assert (missing.field, missing.render("fr")) == ("days", "Ce champ est obligatoire.")
