"""Each role's menu shows what it may open, and only that: every link of the menu opens (200),
every page of another role's menu left out of it is refused (403)."""

from __future__ import annotations

import re

import pytest

from tests.admin.staff_book import book, signed_in  # noqa: F401 - fixtures

ROLES = {"admin": "admin@x.test", "manager": "boss@north.test", "collector": "anne@north.test",
         "viewer": "reader@north.test"}


def menu(html: str) -> set[str]:
    nav = re.search(r'<nav aria-label="[^"]*">(.*?)</nav>', html, re.S)
    assert nav
    return set(re.findall(r'<a href="(/admin[^"]*)"', nav.group(1)))


@pytest.fixture
def menus(new_client, book) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    return {role: menu(signed_in(new_client, email).get("/admin").text) for role, email in ROLES.items()}


def test_each_role_opens_every_link_of_its_menu_and_nothing_else(new_client, menus) -> None:  # type: ignore[no-untyped-def]
    every_link = set().union(*menus.values())
    for role, email in ROLES.items():
        client = signed_in(new_client, email)
        for link in sorted(every_link):
            status = client.get(link, follow_redirects=False).status_code
            if link in menus[role]:
                assert status == 200, (role, link, status)
            else:
                assert status == 403, (role, link, status)


def test_a_collector_menu_leaves_out_what_it_may_not_open(menus) -> None:  # type: ignore[no-untyped-def]
    assert {"/admin/webhooks", "/admin/imports", "/admin/settings", "/admin/users"} & menus["collector"] == set()
    assert {"/admin/customers", "/admin/disputes", "/admin/password"} <= menus["collector"]
    assert "/admin/users" in menus["admin"] and "/admin/users" not in menus["manager"]
