"""bench/compare.py: two runs' figures side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import compare


def _document(database: str, load: float, figures: list[tuple[str, str, float, str, str, bool | None]]) -> dict:
    return {"settings": {"database": database, "uvicorn_workers": 1}, "machine": {"loadavg_at_start": [load, 1, 1]},
            "figures": [{"scenario": s, "metric": m, "value": v, "unit": u, "target": t, "met": met, "detail": {}}
                        for s, m, v, u, t, met in figures]}


SQLITE = _document("sqlite", 0.5, [
    ("magic_link", "exchange", 3371.0, "req/s", "≥ 2,000 req/s", True),
    ("magic_link", "CPU per first open: app", 0.4, "ms", "", None),
    ("statement_page", "ratio to baseline", 110.0, "%", "≥ 40 %", True),
    ("outbox", "only here", 5.0, "msg/s", "", None),
])
POSTGRES = _document("postgresql", 0.7, [
    ("magic_link", "exchange", 1160.0, "req/s", "≥ 2,000 req/s", False),
    ("magic_link", "CPU per first open: app", 1.08, "ms", "", None),
    ("magic_link", "CPU per first open: PostgreSQL", 0.5, "ms", "", None),
    ("statement_page", "ratio to baseline", 80.0, "%", "≥ 40 %", True),
])


def test_rows_match_figures_and_give_the_second_as_a_share_of_the_first() -> None:
    rows = compare.rows(SQLITE, POSTGRES)
    assert rows == [
        ("magic_link", "exchange (target ≥ 2,000 req/s)", "3,371 req/s ✓", "1,160 req/s ✗", "34 %"),
        ("magic_link", "CPU per first open: app", "0.4 ms", "1.08 ms", "270 %"),
        ("magic_link", "CPU per first open: PostgreSQL", "—", "0.5 ms", ""),  # where the second has it
        ("statement_page", "ratio to baseline (target ≥ 40 %)", "110 % ✓", "80 % ✓", ""),  # no ratio of ratios
        ("outbox", "only here", "5 msg/s", "—", ""),
    ]


def test_markdown_and_merged_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = compare.markdown(SQLITE, POSTGRES)
    assert table.splitlines()[0] == "| scenario | metric | sqlite, load 0.5 | postgresql, load 0.7 | second / first |"
    assert len(table.splitlines()) == 2 + 5
    first_half = {**SQLITE, "figures": SQLITE["figures"][:2]}
    second_half = {**SQLITE, "machine": {"loadavg_at_start": [2.5, 1, 1]}, "figures": SQLITE["figures"][2:]}
    merged = compare.merged([first_half, second_half])
    assert merged["figures"] == SQLITE["figures"] and merged["machine"]["loadavg_at_start"][0] == 2.5
    # a figure measured again in a later run replaces the earlier one, where it stood
    again = {**SQLITE, "figures": [{**SQLITE["figures"][0], "value": 3000.0}]}
    assert [f["value"] for f in compare.merged([SQLITE, again])["figures"]] == [3000.0, 0.4, 110.0, 5.0]
    twice = compare.merged([POSTGRES, POSTGRES])
    assert len(compare.rows(SQLITE, twice)) == 5
    paths = []
    for name, document in (("a", first_half), ("b", second_half), ("pg", POSTGRES)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(document))
    compare.main([f"{paths[0]},{paths[1]}", str(paths[2])])
    printed = capsys.readouterr().out
    assert "| sqlite, load 2.5 | postgresql, load 0.7 |" in printed
    assert "| magic_link | exchange (target ≥ 2,000 req/s) | 3,371 req/s ✓ | 1,160 req/s ✗ | 34 % |" in printed


def test_figures_of_the_same_name_in_one_scenario_are_each_kept_and_paired_in_order() -> None:
    dashboard = [("dashboard", "build_dashboard", 40.0, "ms", "≤ 100 ms", True),
                 ("dashboard", "  CPU p95 of the same", 30.0, "ms", "(≤ 100 ms)", True),
                 ("dashboard", "GET /admin (p95)", 90.0, "ms", "≤ 100 ms", True),
                 ("dashboard", "  CPU p95 of the same", 60.0, "ms", "(≤ 100 ms)", True)]
    first = _document("sqlite", 0.5, dashboard)
    second = _document("postgresql", 0.7, [(s, m, v * 2, u, t, met) for s, m, v, u, t, met in dashboard])
    assert [(row[1], row[2], row[3]) for row in compare.rows(first, second)] == [
        ("build_dashboard (target ≤ 100 ms)", "40 ms ✓", "80 ms ✓"),
        ("  CPU p95 of the same (target ≤ 100 ms)", "30 ms ✓", "60 ms ✓"),
        ("GET /admin (p95) (target ≤ 100 ms)", "90 ms ✓", "180 ms ✓"),
        ("  CPU p95 of the same (target ≤ 100 ms)", "60 ms ✓", "120 ms ✓"),
    ]
    # Split runs merged: both kept, and a run measured again replaces each in its place.
    assert [f["value"] for f in compare.merged([first, _document("sqlite", 0.5, [])])["figures"]] == [
        40.0, 30.0, 90.0, 60.0]
    assert [f["value"] for f in compare.merged([first, second])["figures"]] == [80.0, 60.0, 180.0, 120.0]
    # A figure the second has once more than the first is listed after the last one it follows.
    extra = _document("postgresql", 0.7, [*dashboard, ("dashboard", "  CPU p95 of the same", 7.0, "ms", "", None)])
    assert compare.rows(first, extra)[-1][1:] == ("  CPU p95 of the same", "—", "7 ms", "")
