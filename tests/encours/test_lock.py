"""The lock files pin what pyproject.toml asks for: a dependency added without `make lock` fails here.

`make venv` (so CI and `make test`) installs `requirements/dev.txt` with hashes, `make demo`
`requirements/demo.txt`, and
`deploy/Dockerfile` and the wheel test install `requirements/prod.txt`. A lock that no longer
satisfies pyproject.toml would install something else than what the project declares.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)


def _pins(lock: str) -> dict[str, Version]:
    text = (REPO / "requirements" / lock).read_text(encoding="utf-8")
    return {canonicalize_name(name): Version(version) for name, version in PIN.findall(text)}


def _declared(*, extras: bool | str) -> list[Requirement]:
    """The dependencies, with every extra (True), none (False) or the one named."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for name, group in project.get("optional-dependencies", {}).items():
        if extras is True or extras == name:
            lines.extend(group)
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(("lock", "extras"), [("dev.txt", True), ("prod.txt", False), ("demo.txt", "demo")])
def test_every_declared_dependency_is_pinned_within_its_range(lock: str, extras: bool | str) -> None:
    pins = _pins(lock)
    problems = []
    for requirement in _declared(extras=extras):
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not in requirements/{lock}")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name}=={pinned} in requirements/{lock} is outside {requirement.specifier}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_the_production_lock_carries_no_test_tools() -> None:
    production = _pins("prod.txt")
    assert "psycopg" in production and "psycopg-binary" in production  # the PostgreSQL driver comes with it
    for tool in ("pytest", "hypothesis", "playwright", "localstripe", "schemathesis", "ruff", "mypy"):
        assert tool not in production, f"{tool} would be installed in production"


def test_every_pin_carries_a_hash() -> None:
    for lock in ("dev.txt", "demo.txt", "prod.txt"):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", (REPO / "requirements" / lock).read_text(encoding="utf-8"))
        unhashed = [block.split()[0] for block in blocks if "==" in block.split("\n")[0] and "--hash=" not in block]
        assert not unhashed, f"requirements/{lock}: {unhashed}"
