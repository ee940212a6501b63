"""Forms read at the edge into typed objects (pydantic v2 models), their problems as `UserErrors`.

A model's validators raise `UserError` for the messages they own; pydantic's own checks
(missing, too long, not a number...) get a translatable message here. Either way each problem
names the form field it concerns, and every problem of the form is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from kernel.i18n import N_
from kernel.user_error import UserError, UserErrors

M = TypeVar("M", bound=BaseModel)


class Form(BaseModel):
    """Base of the forms: unknown fields ignored (a form posts its CSRF token, buttons...),
    text stripped, the object frozen once read."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)


# pydantic's error types → our message ids, filled from the error's context.
_MESSAGES: dict[str, str] = {
    "missing": N_("This field is required."),
    "string_too_short": N_("Enter at least %(min_length)s characters."),
    "string_too_long": N_("Enter at most %(max_length)s characters."),
    "string_type": N_("Enter some text."),
    "int_parsing": N_("Enter a whole number."),
    "int_type": N_("Enter a whole number."),
    "int_from_float": N_("Enter a whole number."),
    "decimal_parsing": N_("Enter a number."),
    "decimal_type": N_("Enter a number."),
    "greater_than": N_("Enter a number above %(gt)s."),
    "greater_than_equal": N_("Enter a number of at least %(ge)s."),
    "less_than": N_("Enter a number below %(lt)s."),
    "less_than_equal": N_("Enter a number of at most %(le)s."),
    "date_from_datetime_parsing": N_("Enter a date like 2026-12-31."),
    "date_parsing": N_("Enter a date like 2026-12-31."),
    "date_type": N_("Enter a date like 2026-12-31."),
    "enum": N_("Choose one of the options."),
    "literal_error": N_("Choose one of the options."),
    "bool_parsing": N_("Choose yes or no."),
}
_UNKNOWN = N_("This value is not valid.")


def whole_number(low: int, high: int, *, optional: bool = False) -> BeforeValidator:
    """A field's check: a whole number from `low` to `high` as a person types it (None passes when
    `optional`: the form did not ask for it; an empty text never does)."""

    def check(value: object) -> int | None:
        if value is None and optional:
            return None
        text = str(value if value is not None else "").strip()
        if not text.isdigit() or not low <= int(text) <= high:
            raise UserError(N_("Enter a whole number from %(low)s to %(high)s."), low=low, high=high)
        return int(text)

    return BeforeValidator(check)


def _field(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location)


def user_errors(error: ValidationError) -> UserErrors:
    """Each problem of a pydantic validation as a UserError naming its field, in the model's order."""
    found: list[UserError] = []
    for detail in error.errors():
        field = _field(tuple(detail.get("loc", ()))) or None
        context = detail.get("ctx") or {}
        raised = context.get("error")
        if isinstance(raised, UserErrors):
            found.extend(e if e.field else e.at(field=field) for e in raised)
        elif isinstance(raised, UserError):
            found.append(raised if raised.field else raised.at(field=field))
        else:
            values = {name: value for name, value in context.items() if isinstance(value, (int, str, float))}
            message = _MESSAGES.get(detail["type"], _UNKNOWN)
            try:
                message % values
            except (KeyError, TypeError, ValueError):
                message, values = _UNKNOWN, {}
            found.append(UserError(message, **values).at(field=field))
    return UserErrors(found)


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """`data` as a `model`, or UserErrors naming every bad field (nothing is half-read)."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as error:
        raise user_errors(error) from None
