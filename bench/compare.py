"""Two `bench/run.py` JSON documents side by side (e.g. SQLite and PostgreSQL), as a Markdown table.

    .venv/bin/python bench/run.py --output var/bench/sqlite.json
    .venv/bin/python bench/run.py --postgres URL --output var/bench/postgresql.json
    .venv/bin/python bench/compare.py var/bench/sqlite.json var/bench/postgresql.json
    .venv/bin/python bench/compare.py a1.json,a2.json b1.json,b2.json   # runs split with --only

Figures are matched by scenario and metric, several of the same name in one scenario in the order
they come (the dashboard's "CPU p95 of the same" under each of its figures); the last column is
the second value as a percentage of the first (for req/s, higher is better; for ms, lower is). A
figure only one side has is listed with a dash on the other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def column_name(document: dict[str, Any]) -> str:
    settings = document.get("settings", {})
    name = str(settings.get("database") or "?")
    workers = settings.get("uvicorn_workers")
    load = document.get("machine", {}).get("loadavg_at_start")
    parts = [name]
    if workers and workers != 1:
        parts.append(f"{workers} processes")
    if load:
        parts.append(f"load {load[0]}")
    return ", ".join(parts)


def _value(figure: dict[str, Any]) -> str:
    value = figure["value"]
    if value is None or value == -1:
        return "—"
    number = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")
    unit = figure.get("unit") or ""
    verdict = "" if figure.get("met") is None else (" ✓" if figure["met"] else " ✗")
    return f"{number} {unit}".strip() + verdict


Key = tuple[str, str, int]


def keyed(figures: list[dict[str, Any]]) -> list[tuple[Key, dict[str, Any]]]:
    """Each figure with its key: scenario, metric, and which of that scenario's figures of the same
    name it is (the dashboard prints one "CPU p95 of the same" under each of its four figures)."""
    seen: dict[tuple[str, str], int] = {}
    result = []
    for figure in figures:
        name = figure["scenario"], figure["metric"]
        seen[name] = seen.get(name, -1) + 1
        result.append(((name[0], name[1], seen[name]), figure))
    return result


def rows(first: dict[str, Any], second: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(scenario, metric, first value, second value, second as % of first), in the first
    document's order, a figure only the second has placed after the one it follows there.
    Figures of the same name are paired in the order they come."""
    mine = dict(keyed(first.get("figures", [])))
    theirs_keyed = keyed(second.get("figures", []))
    theirs = dict(theirs_keyed)
    order = list(mine)
    previous: Key | None = None
    for key, _figure in theirs_keyed:
        if key not in mine and key not in order:
            order.insert(order.index(previous) + 1 if previous in order else len(order), key)
        previous = key
    result = []
    for k in order:
        figure, other = mine.get(k), theirs.get(k)
        ratio = ""
        if figure is not None and other is not None and figure["value"] not in (None, 0, -1) \
                and other["value"] not in (None, -1) and figure.get("unit") == other.get("unit") \
                and figure.get("unit") != "%":
            ratio = f"{100 * other['value'] / figure['value']:.0f} %"
        target = ((figure or {}).get("target") or (other or {}).get("target") or "").strip("()")
        result.append((k[0], k[1] + (f" (target {target})" if target else ""),
                       _value(figure) if figure else "—", _value(other) if other else "—", ratio))
    return result


def markdown(first: dict[str, Any], second: dict[str, Any]) -> str:
    lines = [f"| scenario | metric | {column_name(first)} | {column_name(second)} | second / first |",
             "| --- | --- | ---: | ---: | ---: |"]
    for row in rows(first, second):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def merged(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one engine (split with --only) as one document: the figures of all (a
    figure measured again by a later run replaces the earlier one, in its place; figures of the
    same name, by position), the settings of the first, the highest load average seen at any start."""
    if len(documents) == 1:
        return documents[0]
    figures: dict[Key, dict[str, Any]] = {}
    for document in documents:
        figures.update(keyed(document.get("figures", [])))
    result = {**documents[0], "figures": list(figures.values())}
    loads = [d.get("machine", {}).get("loadavg_at_start") for d in documents]
    known = [load for load in loads if load]
    if known:
        result["machine"] = {**documents[0].get("machine", {}), "loadavg_at_start": max(known)}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", help="JSON of bench/run.py (e.g. SQLite); several separated by commas")
    parser.add_argument("second", help="JSON of bench/run.py (e.g. PostgreSQL); several separated by commas")
    args = parser.parse_args(argv)
    first, second = (merged([json.loads(Path(p).read_text()) for p in arg.split(",")])
                     for arg in (args.first, args.second))
    print(markdown(first, second))


if __name__ == "__main__":
    main()
