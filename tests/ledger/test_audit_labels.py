"""Every action code the code base writes to the audit trail has a label, in French too.

The codes are found by reading the source (as tests/encours/test_i18n.py extracts messages):
`audit.record(action=...)`, `AuditEvent(action=...)`, bulk-inserted rows (`{"action": ...,
"actor_type": ...}`) and the little wrappers that pass their `action` parameter on. A code built
with an f-string must have its values enumerated below, from the domain's own tables.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import get_args

from kernel import i18n
from ledger import audit
from ledger.csv_import import ImportKind
from payments.gocardless import MANDATE_RANK
from payments.settlement import RANK

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kernel", "encours", "portal", "links", "ledger", "mail", "dunning", "admin", "payments")

# f-string codes (the template with {} for each value) -> every value the code can take.
DYNAMIC: dict[str, Iterable[str]] = {
    "{}.opened": ("dispute", "question"),  # Dispute.kind (its CHECK constraint)
    "dispute.{}": ("accepted", "rejected"),  # ledger.disputes._close
    "promise.{}": ("kept", "broken"),  # ledger.disputes.settle_promises
    "import.{}": get_args(ImportKind),
    "payment.{}": RANK,
    "mandate.{}": MANDATE_RANK,
}


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        prefix = func.value.id + "." if isinstance(func.value, ast.Name) else ""
        return prefix + func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _writes(call: ast.Call) -> bool:
    return _callee(call) == "AuditEvent"


def _wrappers(tree: ast.Module) -> dict[str, int | None]:
    """Functions handing their own parameter on as the action (`audit.record` itself among them):
    name -> the parameter's position (None: keyword only)."""
    found: dict[str, int | None] = {}
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        params = [a.arg for a in function.args.posonlyargs + function.args.args]
        keyword_only = {a.arg for a in function.args.kwonlyargs}
        for node in ast.walk(function):
            if isinstance(node, ast.Call):
                action = _keyword(node, "action")
                if not isinstance(action, ast.Name) or not (_writes(node) or _callee(node) == "audit.record"):
                    continue
                if action.id in params:
                    found[function.name] = params.index(action.id)
                elif action.id in keyword_only:
                    found[function.name] = None
    return found


def _codes(expr: ast.expr, where: str, problems: list[str]) -> list[str]:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr.value]
    if isinstance(expr, ast.IfExp):
        return _codes(expr.body, where, problems) + _codes(expr.orelse, where, problems)
    if isinstance(expr, ast.JoinedStr):
        template = "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in expr.values)
        if template not in DYNAMIC or template.count("{}") != 1:
            problems.append(f"{where}: enumerate the values of {template!r} in DYNAMIC")
            return []
        return [template.format(value) for value in DYNAMIC[template]]
    problems.append(f"{where}: an action code this test cannot read ({ast.unparse(expr)})")
    return []


def used_codes() -> tuple[dict[str, str], list[str]]:
    """Every code written anywhere -> one place writing it; and what could not be read."""
    trees = [(path, tree, _wrappers(tree)) for path, tree in _sources()]
    # A wrapper called as `module.name` may live in any module; a bare name is the module's own.
    public = {name: position for _, _, wrappers in trees for name, position in wrappers.items()}
    codes: dict[str, str] = {}
    problems: list[str] = []
    for path, tree, wrappers in trees:
        inside_wrapper: set[int] = set()
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and function.name in wrappers:
                inside_wrapper |= {id(n) for n in ast.walk(function)}
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            expr: ast.expr | None = None
            callee = _callee(node) if isinstance(node, ast.Call) else ""
            known = public if "." in callee else wrappers
            name = callee.rsplit(".", 1)[-1]
            if isinstance(node, ast.Call) and name in known:
                position = known[name]
                expr = node.args[position] if position is not None and position < len(node.args) \
                    else _keyword(node, "action")
            elif isinstance(node, ast.Call) and _writes(node):
                expr = _keyword(node, "action")
            elif isinstance(node, ast.Dict):
                keys = {k.value: v for k, v in zip(node.keys, node.values)
                        if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                if "action" in keys and "actor_type" in keys:
                    expr = keys["action"]
            if isinstance(expr, ast.Name) and id(node) in inside_wrapper:
                continue  # the wrapper's parameter: its callers are read instead
            if expr is not None:
                for code in _codes(expr, where, problems):
                    codes.setdefault(code, where)
    return codes, problems


def test_the_scan_finds_the_codes_written_every_way() -> None:
    codes, problems = used_codes()
    assert problems == []
    # one of each way of writing: audit.record, a wrapper, an f-string, a bulk-inserted row
    assert {"link.renewal_requested", "user.password_reset", "checkout.mandate_set_up", "payment.charged_back",
            "question.opened", "mandate.active", "reminder.queued", "import.invoices"} <= set(codes)


def test_every_code_in_the_code_base_has_a_label() -> None:
    codes, _ = used_codes()
    missing = sorted(f"{code} ({where})" for code, where in codes.items() if code not in audit.ACTION_LABELS)
    assert missing == [], f"add these audit actions to ledger.audit.ACTION_LABELS: {missing}"


def test_labels_read_in_french_and_english_and_an_unknown_code_reads_as_itself() -> None:
    assert audit.action_label("en", "payment.succeeded") == "Payment received"
    assert audit.action_label("fr", "payment.succeeded") == "Paiement reçu"
    assert audit.action_label("fr", "something.new") == "something.new"
    assert audit.action_label("fr", None) == ""
    french = i18n.translations("fr")
    untranslated = sorted(code for code, label in audit.ACTION_LABELS.items() if french.gettext(label) == label)
    assert untranslated == []
