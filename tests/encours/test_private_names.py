"""No module imports another module's private names (issue 13): a name that starts with `_` is the
business of its own module; one that another module needs is part of an interface and gets a
public name. import-linter checks packages, not names, so this test reads the imports itself."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _packages() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"] if p != "migrations*"]


def test_no_module_imports_a_private_name_of_another() -> None:
    packages = _packages()
    found = []
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                        and node.module.split(".")[0] in packages:
                    private = [alias.name for alias in node.names
                               if alias.name.startswith("_") and not alias.name.startswith("__")]
                    if private:
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {', '.join(private)} "
                                     f"from {node.module}")
    assert not found, "private names imported across modules:\n" + "\n".join(found)
