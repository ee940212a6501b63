"""Every form of the back-office, in Chromium at 1280 px and 375 px: each label's box sits with its
own field (`for=` → the element with that id), on the same row or directly above it, and no other
field is nearer to it — so nobody types into the field of the label beside it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import DESKTOP, PHONE, LiveDemo
from tests.e2e.test_portal_browser import MakePage

pytestmark = pytest.mark.e2e

# Pages with forms, and how to reach a record page from a list (first link matching the pattern).
PAGES = ["/admin/password", "/admin/customers", "/admin/invoices", "/admin/payments", "/admin/bank",
         "/admin/disputes", "/admin/scenarios", "/admin/scenarios/runs", "/admin/webhooks", "/admin/imports",
         "/admin/fx", "/admin/audit", "/admin/settings", "/admin/users", "/admin"]
RECORDS = [("/admin/customers", r"^/admin/customers/\d+$"), ("/admin/scenarios", r"^/admin/scenarios/\d+$"),
           ("/admin/settings", r"^/admin/settings/[A-Z-]+$"), ("/admin/users", r"^/admin/users/\d+$")]

# For each visible label naming a visible field: where the two boxes are, and which other
# visible field is nearest to the label (its distance from the label's box).
MEASURE = """() => {
  // checkVisibility: also false inside a closed <details>, whose content keeps a stale layout box.
  const shown = el => { const r = el.getBoundingClientRect();
    return el.checkVisibility({visibilityProperty: true}) && r.width > 0 && r.height > 0; };
  const box = el => { const r = el.getBoundingClientRect();
    return {left: r.left + scrollX, right: r.right + scrollX, top: r.top + scrollY, bottom: r.bottom + scrollY}; };
  const gap = (a, b) => Math.hypot(Math.max(0, a.left - b.right, b.left - a.right),
                                   Math.max(0, a.top - b.bottom, b.top - a.bottom));
  const fields = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')].filter(shown);
  return [...document.querySelectorAll('label[for]')].filter(shown).flatMap(label => {
    const field = document.getElementById(label.htmlFor);
    if (!field || !shown(field) || label.contains(field)) return [];
    const l = box(label), f = box(field);
    const nearest = fields.filter(o => o !== field && !label.contains(o))
      .map(o => ({id: o.id || o.name, d: gap(l, box(o))})).sort((a, b) => a.d - b.d)[0] || null;
    return [{label: label.textContent.trim().slice(0, 60), id: field.id, l, f, own: gap(l, f), nearest}];
  });
}"""


def misplaced(measured: list[dict]) -> list[str]:  # type: ignore[type-arg]
    problems = []
    for m in measured:
        label, field = m["l"], m["f"]
        overlap_x = min(label["right"], field["right"]) - max(label["left"], field["left"])
        overlap_y = min(label["bottom"], field["bottom"]) - max(label["top"], field["top"])
        smaller = min(label["bottom"] - label["top"], field["bottom"] - field["top"])
        same_row = overlap_y >= smaller / 2 and m["own"] <= 48
        above = label["bottom"] <= field["top"] + 1 and field["top"] - label["bottom"] <= 12 and overlap_x > 0
        nearer = m["nearest"] is not None and m["nearest"]["d"] + 0.5 < m["own"]
        if not (same_row or above) or nearer:
            problems.append(f"“{m['label']}” (#{m['id']}): own field {m['own']:.0f}px away"
                            + (f", #{m['nearest']['id']} nearer ({m['nearest']['d']:.0f}px)" if nearer else ""))
    return problems


def sign_in(page: Page, demo: LiveDemo) -> None:
    password = demo.staff("labels-admin@durand.example", "admin")
    page.goto(f"{demo.base_url}/admin/login")
    page.get_by_label("Email").fill("labels-admin@durand.example")
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{demo.base_url}/admin")


def test_each_label_stands_with_its_own_field(make_page: MakePage, live_demo: LiveDemo) -> None:
    page = make_page(viewport=DESKTOP, locale="en-GB")
    sign_in(page, live_demo)
    paths = list(PAGES)
    for listing, pattern in RECORDS:
        page.goto(f"{live_demo.base_url}{listing}")
        hrefs = page.eval_on_selector_all("main a[href]", "links => links.map(a => a.getAttribute('href'))")
        found = next((h for h in hrefs if re.match(pattern, h)), None)
        assert found, f"no record page linked from {listing}"
        paths.append(found)
    problems, checked = [], 0
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        for path in paths:
            page.goto(f"{live_demo.base_url}{path}")
            measured = page.evaluate(MEASURE)
            checked += len(measured)
            problems += [f"{viewport['width']}px {path}: {p}" for p in misplaced(measured)]
            if page.locator("main details:not([open])").count():  # forms folded away (a contact's edit form)
                page.evaluate("() => document.querySelectorAll('main details').forEach(d => { d.open = true; })")
                opened = page.evaluate(MEASURE)
                checked += len(opened)
                problems += [f"{viewport['width']}px {path} (details open): {p}" for p in misplaced(opened)]
    assert checked > 100  # the test looked at the forms, not at empty pages
    assert not problems, "\n".join(problems)
