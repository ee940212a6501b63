"""bench/capacity.py: the plan is arithmetic on CAPACITY.md's table of inputs, written back between markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import capacity


def test_the_documents_inputs_give_a_plan() -> None:
    inputs = capacity.read_inputs(capacity.DOC.read_text())
    assert inputs["customers"] == 5_000_000 and inputs["invoices"] == 100_000_000
    text = capacity.plan(inputs)
    for section in ("### Peak reminder day", "### Nightly plan", "### Dashboard and back office", "### Database"):
        assert section in text


def test_an_input_changes_the_plan_it_feeds(tmp_path: Path) -> None:
    doc = tmp_path / "CAPACITY.md"
    original = capacity.DOC.read_text()
    doc.write_text(original)
    capacity.main(["--doc", str(doc), "--write"])
    written = doc.read_text()
    assert capacity.plan(capacity.read_inputs(original)) in written
    capacity.main(["--doc", str(doc), "--write"])  # again: replaced, not appended
    assert doc.read_text() == written

    doc.write_text(written.replace("| `customers` | 5,000,000 |", "| `customers` | 10,000,000 |"))
    capacity.main(["--doc", str(doc), "--write"])
    assert "10,000,000 reminders" in doc.read_text()


def test_a_value_that_is_not_a_number_is_named(tmp_path: Path) -> None:
    doc = tmp_path / "CAPACITY.md"
    doc.write_text(capacity.DOC.read_text().replace("| `companies` | 100 |", "| `companies` | many |"))
    with pytest.raises(SystemExit, match="companies"):
        capacity.main(["--doc", str(doc)])
