"""kernel.paging.Page: one page of a list, its cursors taken from its first and last rows."""

from __future__ import annotations

from dataclasses import dataclass

from kernel.paging import Page


@dataclass(frozen=True)
class Line:
    id: int
    text: str


def test_a_cursor_page_takes_its_cursors_from_its_first_and_last_rows() -> None:
    page = Page.by_cursor([Line(9, "newest"), Line(7, "older"), Line(4, "oldest")], 2, True, lambda line: line.id)
    assert (page.first_id, page.last_id, page.has_previous, page.has_next) == (9, 4, True, True)
    assert [line.text for line in page.rows] == ["newest", "older", "oldest"]


def test_an_empty_page_has_no_cursor_and_the_first_page_no_previous() -> None:
    page: Page[Line] = Page.by_cursor([], 1, False, lambda line: line.id)
    assert (page.first_id, page.last_id, page.has_previous, page.has_next) == (None, None, False, False)


def test_a_page_read_by_number_has_no_cursor() -> None:
    page = Page(rows=["a", "b"], page=3, has_next=False)
    assert (page.first_id, page.last_id, page.has_previous) == (None, None, True)
