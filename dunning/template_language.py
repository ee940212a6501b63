"""The small language of reminder templates, and the limits every rendering runs under.

Scenario texts are written by staff and rendered for every reminder, so a text must not be able
to tie the server up. They are Jinja, cut down to:

- placeholders and their attributes: `{{ customer.name }}`, `{{ invoices }}` (see `dunning.messages`);
- conditions: `{% if savings %}…{% elif … %}…{% else %}…{% endif %}`, with comparisons,
  `and`/`or`/`not` and tests (`is defined`…);
- loops over the lists we give, one level deep: `{% for row in invoices %}…{% endfor %}` (also
  `totals`, `savings`, `late_charges`), with `loop.index`, `loop.first`, `loop.last`;
- a few filters (`ALLOWED_FILTERS`: `upper`, `lower`, `title`, `default`, `length`, `join`, …);
- arithmetic, with strings or lists repeated by `*` up to `MAX_REPEAT` items;
- `{% set name = expression %}`, where the expression uses placeholders and loop variables only,
  never another variable set in the text (so no text can double a string line after line).

Refused when the text is compiled (so on save, naming the line): block assignments, macros,
calls, `range` and the other globals, includes, nested loops and loops over anything else.
Every rendering stops with `TemplateLimit` past `MAX_OUTPUT_CHARS` of output or
`MAX_RENDER_SECONDS` of work.
"""

from __future__ import annotations

import contextvars
import re
import operator
import time
from typing import Any, Iterator

import jinja2
from jinja2 import nodes
from jinja2.filters import FILTERS as DEFAULT_FILTERS
from jinja2.sandbox import SandboxedEnvironment

from kernel import i18n
from kernel.i18n import N_

LOOP_LISTS = frozenset({"invoices", "totals", "savings", "late_charges"})
ALLOWED_FILTERS = frozenset({
    "abs", "capitalize", "count", "d", "default", "e", "escape", "first", "float", "int", "join", "last",
    "length", "lower", "max", "min", "reverse", "round", "sort", "string", "striptags", "sum", "title", "trim",
    "truncate", "upper", "wordcount",
})
MAX_REPEAT = 10_000  # characters (or items) a `*` may build
MAX_POWER = 64
MAX_OUTPUT_CHARS = 2_000_000  # a reminder listing thousands of invoices stays well below
MAX_RENDER_SECONDS = 2.0

# Node types a text may contain; anything else (Assign, Macro, Call, Include, Import, …) is refused.
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Getattr, nodes.Getitem, nodes.Const,
    nodes.If, nodes.For, nodes.Filter, nodes.Test, nodes.Compare, nodes.Operand, nodes.And, nodes.Or, nodes.Not,
    nodes.Neg, nodes.Pos, nodes.CondExpr, nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod,
    nodes.Pow, nodes.Concat, nodes.Tuple, nodes.List, nodes.Dict, nodes.Pair, nodes.Keyword, nodes.Slice,
    nodes.MarkSafeIfAutoescape, nodes.Assign,
)


class TemplateLimit(jinja2.exceptions.SecurityError):
    """A rendering went past a limit of the reminder template language."""


def _structure_problem(tree: nodes.Template) -> tuple[int, str] | None:
    """The first construct outside the language, as (line, what)."""

    assigned = {name.name for assign in tree.find_all(nodes.Assign) for name in assign.target.find_all(nodes.Name)}
    assigned |= {assign.target.name for assign in tree.find_all(nodes.Assign) if isinstance(assign.target, nodes.Name)}

    def visit(node: nodes.Node, in_loop: bool) -> tuple[int, str] | None:
        if not isinstance(node, _ALLOWED_NODES):
            what = {"Assign": "assignments ({% set %})", "AssignBlock": "assignments ({% set %})",
                    "Call": "calls", "Macro": "macros", "CallBlock": "calls", "Include": "includes",
                    "Import": "imports", "FromImport": "imports", "Extends": "extends"}
            return node.lineno, f"{what.get(type(node).__name__, type(node).__name__)} are not allowed"
        if isinstance(node, nodes.Filter) and node.name in DEFAULT_FILTERS and node.name not in ALLOWED_FILTERS:
            return node.lineno, f"the filter '{node.name}' is not allowed (allowed: {', '.join(sorted(ALLOWED_FILTERS))})"
        if isinstance(node, nodes.Assign):
            if not isinstance(node.target, nodes.Name):
                return node.lineno, "{% set %} takes one name"
            uses = {name.name for name in node.node.find_all(nodes.Name)} & assigned
            if uses:
                return node.lineno, f"a {{% set %}} value may not use another variable set in the text ({', '.join(sorted(uses))})"
        if isinstance(node, nodes.For):
            if in_loop:
                return node.lineno, "loops inside loops are not allowed"
            if node.recursive or not isinstance(node.iter, nodes.Name) or node.iter.name not in LOOP_LISTS:
                return node.lineno, f"a loop may only go over {', '.join(sorted(LOOP_LISTS))}"
            for child in (*node.body, *node.else_):
                found = visit(child, True)
                if found:
                    return found
            return visit(node.test, True) if node.test is not None else None
        for child in node.iter_child_nodes():
            found = visit(child, in_loop)
            if found:
                return found
        return None

    return visit(tree, False)


# When the rendering under way must stop; also checked on attribute access and `*`, so that work
# producing no output is timed too.
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("reminder_template_deadline", default=float("inf"))


def _check_time() -> None:
    if time.monotonic() > _deadline.get():
        raise TemplateLimit(f"the text takes more than {MAX_RENDER_SECONDS:g} seconds to render")


class LimitedTemplate(jinja2.Template):
    """Renders chunk by chunk, counting output and time: past a limit, TemplateLimit."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        context = self.new_context(dict(*args, **kwargs))
        reset = _deadline.set(time.monotonic() + MAX_RENDER_SECONDS)
        try:
            return "".join(_limited(self.root_render_func(context)))
        except Exception:
            self.environment.handle_exception()
            raise  # unreachable: handle_exception raises
        finally:
            _deadline.reset(reset)


def _limited(chunks: Iterator[str]) -> Iterator[str]:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise TemplateLimit(f"the text renders to more than {MAX_OUTPUT_CHARS} characters")
        _check_time()
        yield chunk


class ReminderEnvironment(SandboxedEnvironment):
    """The sandbox, with no globals, a short list of filters, capped `*` and `**`, and texts
    checked against the language when they are compiled."""

    template_class = LimitedTemplate
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.clear()  # range, dict, lipsum, cycler, joiner, namespace
        self.filters = {name: function for name, function in self.filters.items() if name in ALLOWED_FILTERS}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        problem = _structure_problem(tree)
        if problem is not None:
            raise jinja2.TemplateSyntaxError(problem[1], problem[0], name, filename)
        return tree

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_time()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_time()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
                raise TemplateLimit(f"powers above {MAX_POWER} are not allowed")
            return operator.pow(left, right)
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, (str, list, tuple)) and isinstance(times, int):
                if len(sequence) * max(times, 0) > MAX_REPEAT:
                    raise TemplateLimit(f"a repetition may build at most {MAX_REPEAT} characters")
        return operator.mul(left, right)


# Jinja explains a template error in English: the usual ones, in the reader's language. Jinja's
# errors carry no codes, only these sentences, so this is the one place that reads them.
JINJA_DETAILS = (
    (re.compile(r"^'([^']+)' is undefined$"), N_("“%(a)s” is not defined")),
    (re.compile(r"^'([^']+?)(?: object)?' (?:object )?has no attribute '([^']+)'$"),
     N_("“%(b)s” does not exist on “%(a)s”")),
    (re.compile(r"^unexpected '([^']+)'$"), N_("unexpected “%(a)s”")),
    (re.compile(r"^unexpected char '([^']+)'.*$"), N_("unexpected “%(a)s”")),
    (re.compile(r"^expected token '([^']+)', got '([^']+)'$"), N_("“%(a)s” expected, found “%(b)s”")),
    (re.compile(r"^[Uu]nexpected end of template.*$"), N_("the text ends before a block is closed")),
    (re.compile(r"^Encountered unknown tag '([^']+)'.*$"), N_("unknown tag “%(a)s”")),
    (re.compile(r"^[Nn]o filter named '([^']+)'.*$"), N_("unknown filter “%(a)s”")),
    (re.compile(r"^access to attribute '([^']+)' of '([^']+)' object is unsafe\.?$"),
     N_("“%(a)s” is unsafe: it may not be used in a message")),
)


def jinja_detail(detail: str, language: str) -> str:
    for pattern, message in JINJA_DETAILS:
        found = pattern.match(detail.strip())
        if found:
            return i18n.gettext(language, message, **dict(zip("ab", found.groups())))
    return detail


class JinjaDetail(str):
    """Jinja's explanation as a value of a UserError: shown in the reader's language."""

    def localized(self, language: str) -> str:
        return jinja_detail(str(self), language)
