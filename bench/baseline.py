"""The baseline of the statement-page bench: a bare Starlette + Jinja2 route, no database,
rendering an HTML table whose page is as large as the real statement page.

    BENCH_PAGE_BYTES=95000 uvicorn --factory bench.baseline:create_app
"""

from __future__ import annotations

import os

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

TEMPLATE = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body><main><h1>{{ title }}</h1>
<table><thead><tr><th>Facture</th><th>Date</th><th>Échéance</th><th>Montant</th><th>Reste dû</th><th>Retard</th></tr></thead>
<tbody>
{% for row in rows %}<tr class="{{ row.css }}"><td><a href="/portal/invoices/{{ row.id }}">{{ row.number }}</a></td>
<td>{{ row.issued }}</td><td>{{ row.due }}</td><td class="num">{{ row.total }}</td><td class="num">{{ row.open }}</td>
<td>{{ row.late }} jours</td></tr>
{% endfor %}</tbody></table>
{{ padding }}
</main></body></html>
"""


def _rows(count: int) -> list[dict[str, object]]:
    return [
        {"id": n, "number": f"F-1-{n:08d}", "issued": "12 oct. 2026", "due": "26 nov. 2026",
         "total": f"{n * 37 % 20000:,} 000,00 €".replace(",", " "), "open": "1 234,56 €", "late": n % 90,
         "css": "overdue" if n % 3 else ""}
        for n in range(count)
    ]


def create_app() -> Starlette:
    target = int(os.environ.get("BENCH_PAGE_BYTES", "100000"))
    template = jinja2.Environment(autoescape=True).from_string(TEMPLATE)
    # as many rows as make the page reach the target size; the remainder as a comment
    one_row = len(template.render(title="Relevé", rows=_rows(2), padding="").encode()) - len(
        template.render(title="Relevé", rows=_rows(1), padding="").encode()
    )
    empty = len(template.render(title="Relevé", rows=[], padding="").encode())
    count = max(0, (target - empty) // max(one_row, 1))
    rows = _rows(count)
    size = len(template.render(title="Relevé", rows=rows, padding="").encode())
    padding = Markup(f"<!-- {'x' * max(0, target - size - 9)} -->") if target - size > 9 else ""

    def page(request: Request) -> Response:
        # rendered on every request, like the real page
        return HTMLResponse(template.render(title="Relevé de compte", rows=rows, padding=padding))

    return Starlette(routes=[Route("/statement", page)])
