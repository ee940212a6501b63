"""Jinja2 rendering: one template per page, `{% block %}`s served alone to htmx."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from kernel import i18n
from kernel.security import LazyCSRFToken

ROOT = Path(__file__).resolve().parent.parent
# Each package keeps its templates in its own `templates/` folder, names prefixed by a folder of
# their own (`portal/statement.html`, `admin/...`, `email/...`), as Django's app directories do:
# the kernel finds them without importing any domain package.
TEMPLATE_DIRS = sorted(path for path in ROOT.glob("*/templates") if path.is_dir())


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in TEMPLATE_DIRS]),
        autoescape=jinja2.select_autoescape(["html", "xml"]),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]  # added by the i18n extension; real catalogs come per render
    env.globals["languages"] = i18n.LANGUAGES
    env.globals["language_name"] = i18n.language_name
    return env


def language_context(language: str) -> dict[str, Any]:
    """gettext and formatters bound to one language; the context overrides the env's globals."""
    language = i18n.normalize(language)
    translations = i18n.translations(language)

    def gettext(message: str, **values: Any) -> str:
        # Jinja's newstyle gettext always formats, so a literal % is written %% in templates.
        return translations.gettext(message) % values

    def ngettext(singular: str, plural: str, n: int, **values: Any) -> str:
        text = translations.ngettext(singular, plural, n)
        values.setdefault("num", n)
        return text % values

    status_labels = functools.cache(_status_labels)  # translated once per render, not per row
    return {
        "lang": language,
        "gettext": gettext,
        "_": gettext,
        "ngettext": ngettext,
        "money": lambda m: i18n.format_money(m, language),
        "day": lambda d, style="medium": i18n.format_day(d, language, style),
        "day_month": lambda d: i18n.day_month(d, language),
        "currency_name": lambda code: i18n.currency_name(code, language),
        "status_label": lambda status: status_labels(gettext).get(status, status),
    }


def status_label(status: str, gettext: Any) -> str:
    return _status_labels(gettext).get(status, status)


def _status_labels(gettext: Any) -> dict[str, str]:
    return {
        "open": gettext("Open"),
        "partially_paid": gettext("Partially paid"),
        "paid": gettext("Paid"),
        "disputed": gettext("Disputed"),
        "void": gettext("Cancelled"),
    }


class Templates:
    def __init__(self) -> None:
        self.env = make_environment()

    def render_string(self, name: str, context: dict[str, Any], language: str, block: str | None = None) -> str:
        template = self.env.get_template(name)
        full = {**context, **language_context(language)}
        if block is None:
            return template.render(full)
        return "".join(template.blocks[block](template.new_context(full)))

    def response(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        language: str,
        status_code: int = 200,
        block: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        """The page, or only `block` when htmx asks for it."""
        fragment = block if block and request.headers.get("HX-Request") == "true" else None
        full = {"request": request, "csrf_token": LazyCSRFToken(request), **context}
        html = self.render_string(name, full, language, block=fragment)
        response = HTMLResponse(html, status_code=status_code, headers=headers)
        response.headers.append("Vary", "HX-Request")
        response.headers.setdefault("Cache-Control", "no-store")
        return response
