"""kernel.clock: set by tests in this process, or by a file (ENCOURS_CLOCK_FILE) for the processes
a test starts."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kernel.clock import Clock

ENCOURS = str(Path(sys.executable).with_name("encours"))


def _write(path: Path, text: str) -> None:
    draft = path.with_suffix(".draft")
    draft.write_text(text)
    os.replace(draft, path)


def test_a_followed_file_sets_now_and_moving_it_moves_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    _write(path, "2026-11-25T09:30:00+01:00")
    clock = Clock()
    clock.follow(str(path))
    assert clock.now() == datetime(2026, 11, 25, 8, 30, tzinfo=timezone.utc)
    assert clock.today("Pacific/Kiritimati").isoformat() == "2026-11-25"
    _write(path, "2026-11-25T08:31:00+00:00")
    assert clock.now() == datetime(2026, 11, 25, 8, 31, tzinfo=timezone.utc)
    clock.reset()
    assert abs((clock.now() - datetime.now(timezone.utc)).total_seconds()) < 3600  # the system's again


@pytest.mark.parametrize(("text", "says"), [
    ("2026-11-25T08:30:00", "no aware ISO 8601 moment"),  # naive: whose 08:30?
    ("tomorrow", "no aware ISO 8601 moment"),
    (None, "No such file"),
])
def test_a_bad_clock_file_is_refused_naming_it(tmp_path: Path, text: str | None, says: str) -> None:
    path = tmp_path / "clock"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=says) as refused:
        Clock().follow(str(path))
    assert str(path) in str(refused.value)


def test_the_command_line_says_in_one_line_that_its_clock_file_is_bad(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCOURS_")}
    env.update(ENCOURS_DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}", ENCOURS_CLOCK_FILE=str(tmp_path / "none"))
    result = subprocess.run([ENCOURS, "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"encours: error: ENCOURS_CLOCK_FILE {tmp_path / 'none'}: No such file or directory"]


def test_a_command_takes_its_today_from_the_clock_file_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    _write(path, "2031-02-03T10:00:00+00:00")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCOURS_")}
    env.update(ENCOURS_DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}", ENCOURS_SECRET_KEY="k" * 32,
               ENCOURS_CLOCK_FILE=str(path))

    def encours(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([ENCOURS, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "the clock follows ENCOURS_CLOCK_FILE" in result.stderr
        return result

    encours("db", "upgrade")
    encours("company", "create", "ACME", "--name", "Acme SA", "--currency", "EUR")
    assert encours("remind", "--dry-run").stdout.startswith("ACME 2031-02-03 (dry run)")
