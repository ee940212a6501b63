"""The one error type of reconciliation services: a translatable message id and its values."""

from __future__ import annotations

from typing import Any


class ReconciliationError(ValueError):
    """Bad input or a state that forbids the action; nothing was changed.

    `message` is a gettext id (English) with `%(name)s` placeholders filled from `values`;
    `str(error)` is the English sentence, for the CLI and logs."""

    def __init__(self, message: str, values: dict[str, Any] | None = None) -> None:
        self.message = message
        self.values = values or {}
        super().__init__(message % self.values if self.values else message)
