"""bench/run.py: the harness's pure parts."""

from __future__ import annotations

import httpx

from bench import run


def test_the_statement_load_sends_the_cookie_the_first_page_set() -> None:
    # As a browser does: the first page's Set-Cookie (its CSRF token added) replaces the link's cookie.
    first = httpx.Response(200, headers={"set-cookie": "encours_session=new.sig; path=/; httponly; samesite=lax"})
    assert run.kept_cookie(first, "encours_session=old.sig") == "encours_session=new.sig"
    unchanged = httpx.Response(200)
    assert run.kept_cookie(unchanged, "encours_session=new.sig") == "encours_session=new.sig"
