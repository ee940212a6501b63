"""One page of a list, as every list of the back-office shows it: its rows, its number, whether
another follows; and, for the lists read by cursor (the bank queue, the delivery log), the ids
the pager sends to reach the neighbouring pages in one index range whatever their depth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

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


def ids_by_cursor(session: Session, ids_query: Select[Any], id_column: Any, page: int, after: int | None,
                  before: int | None, size: int) -> tuple[list[int], int, bool]:
    """The ids of one page of a list read newest first, its page number and whether another follows:
    `after` (the last id of the page before) or `before` (the first id of the page after) find the
    page from where the reader is, in one index range; a bare `page` counts its way there."""
    page = max(1, page)
    if before is not None:
        found = list(session.scalars(ids_query.where(id_column > before).order_by(id_column).limit(size + 1)))
        if len(found) <= size:  # back at the newest rows: the first page, whatever was asked
            page = 1
        return sorted(found[:size], reverse=True), page, True
    if after is not None:
        ids_query = ids_query.where(id_column < after)
    else:
        ids_query = ids_query.offset((page - 1) * size)
    found = list(session.scalars(ids_query.order_by(id_column.desc()).limit(size + 1)))
    return found[:size], page, len(found) > size
