"""The one error shown to a person: a gettext message id and the values that fill it, rendered in
the reader's language at the edge (a page, the command line, the API's problem+json).

A service raises `UserError(N_("The logo is larger than %(size)s KB."), size=512).at(field="logo")`;
the page renders it with the visitor's translations, the CLI and the API in English. Where one
form or file has several problems, `UserErrors` carries them all, each with its field or line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from babel.numbers import format_decimal

from kernel import i18n
from kernel.i18n import N_

# Between the problems of one line or form (French puts a space before the semicolon).
SEPARATOR = N_("; ")


@runtime_checkable
class Localized(Protocol):
    """A value that shows itself in a language (an amount, a count, a language code)."""

    def localized(self, language: str) -> str: ...


class Count(int):
    """A number of things, shown with the language's digit grouping (50 000 / 50,000)."""

    def localized(self, language: str) -> str:
        return format_decimal(int(self), locale=i18n.FORMAT_LOCALES[i18n.normalize(language)])


class Translated(str):
    """A value that is itself a message id, translated with the message (a field or part name)."""

    def localized(self, language: str) -> str:
        return i18n.gettext(language, str(self))


class Language(str):
    """A language code in a message, shown by its name in itself ("français", "English")."""

    def localized(self, language: str) -> str:
        return i18n.language_name(str(self))


class UserError(ValueError):
    """What is wrong, for a person: `message_id` (an English msgid with %(name)s placeholders),
    the `values` that fill it, and optionally the form `field` or file `line` it concerns (set
    with `at`, so that any name, "line" or "field" too, can be a value of the message).

    `str(error)` is the English sentence (the command line's and the logs'); `render(language)`
    is the sentence a page shows. Nothing is pre-formatted: values are filled in after
    translation, each shown in the reader's language when it knows how (`Localized`), a nested
    UserError (or a tuple of them) rendered too."""

    field: str | None = None
    line: int | None = None

    def __init__(self, message_id: str, /, **values: Any) -> None:
        self.message_id = message_id
        self.values = values
        super().__init__(message_id)

    @property
    def message(self) -> str:
        return self.message_id

    def render(self, language: str) -> str:
        shown = {name: _shown(value, language) for name, value in self.values.items()}
        # Not i18n.gettext(language, ..., **values): a value may itself be named "language".
        text = i18n.translations(language).gettext(self.message_id)
        return text % shown if shown else text

    def __str__(self) -> str:
        return self.render("en")

    def __repr__(self) -> str:
        where = f", field={self.field!r}" if self.field else f", line={self.line!r}" if self.line else ""
        values = "".join(f", {name}={value!r}" for name, value in self.values.items())
        return f"UserError({self.message_id!r}{where}{values})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserError):
            return NotImplemented
        return (self.message_id, self.values, self.field, self.line) == (
            other.message_id, other.values, other.field, other.line)

    def __hash__(self) -> int:
        return hash((self.message_id, self.field, self.line))

    def at(self, *, field: str | None = None, line: int | None = None) -> UserError:
        """The same problem (of the same class), said of this form field or file line."""
        located = type(self).__new__(type(self))
        located.__dict__.update(self.__dict__)
        located.args = self.args
        located.field = field if field is not None else self.field
        located.line = line if line is not None else self.line
        return located


class UserErrors(ValueError):
    """Several problems found at once (a form, a file); nothing was applied. Each says its field
    or line, so a page can show it beside its input and an API list it."""

    def __init__(self, errors: Iterable[UserError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(error) for error in self.errors))

    def __iter__(self) -> Iterator[UserError]:
        return iter(self.errors)

    def __len__(self) -> int:
        return len(self.errors)

    def __str__(self) -> str:
        return self.render("en")

    def render(self, language: str) -> str:
        return joined(self.errors, language)

    def by_line(self, language: str) -> list[tuple[int | None, str]]:
        """Each file line's problems in the reader's language, joined, in line order (a problem
        of the whole file, with no line, first)."""
        found: dict[int | None, list[UserError]] = {}
        for error in self.errors:
            found.setdefault(error.line, []).append(error)
        order = sorted(found, key=lambda line: -1 if line is None else line)
        return [(line, joined(found[line], language)) for line in order]

    def by_field(self, language: str) -> dict[str, list[str]]:
        """Each field's problems in the reader's language ("" for a problem of no one field)."""
        found: dict[str, list[str]] = {}
        for error in self.errors:
            found.setdefault(error.field or "", []).append(error.render(language))
        return found

    @classmethod
    def of(cls, error: UserError | UserErrors) -> UserErrors:
        return error if isinstance(error, UserErrors) else cls([error])


def joined(errors: Iterable[UserError], language: str) -> str:
    return i18n.gettext(language, SEPARATOR).join(error.render(language) for error in errors)


def _shown(value: Any, language: str) -> Any:
    if isinstance(value, UserError):
        return value.render(language)
    if isinstance(value, tuple) and all(isinstance(item, UserError) for item in value):
        return joined(value, language)
    if isinstance(value, Localized):
        return value.localized(language)
    return value


def render_all(errors: Sequence[UserError], language: str) -> list[str]:
    return [error.render(language) for error in errors]
