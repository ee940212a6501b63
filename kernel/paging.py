"""One page of a list, as every list of the back-office shows it: its rows, its number, whether
another follows; and, for the lists read by cursor (the bank queue, the delivery log), the ids
the pager sends to reach the neighbouring pages in one index range whatever their depth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Row = TypeVar("Row")


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: list[Row]
    page: int
    has_next: bool
    first_id: int | None = None  # the cursor of the previous page (`before`)
    last_id: int | None = None  # the cursor of the next page (`after`)

    @classmethod
    def by_cursor(cls, rows: list[Row], page: int, has_next: bool, id_of: Callable[[Row], int]) -> Page[Row]:
        """A page whose neighbours are found from its first and last rows' ids."""
        return cls(rows, page, has_next, id_of(rows[0]) if rows else None, id_of(rows[-1]) if rows else None)

    @property
    def has_previous(self) -> bool:
        return self.page > 1
