"""bench/cpu.py: CPU time read from /proc, for a process tree (a PostgreSQL server) and per pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cpu


def _stat(pid: int, name: str, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime ...
    return f"{pid} ({name}) S 1 1 1 0 -1 4194560 10 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0 100 0 0\n"


def _process(proc: Path, pid: int, stat: str, children: list[int] = (), threads: int = 1) -> None:  # type: ignore[assignment]
    folder = proc / str(pid)
    folder.mkdir()
    (folder / "stat").write_text(stat)
    (folder / "cmdline").write_bytes(b"/usr/lib/postgresql/15/bin/postgres\0-D\0/data\0")
    for n in range(threads):
        task = folder / "task" / str(pid + n)
        task.mkdir(parents=True)
        # a process's children may be listed under any of its threads
        (task / "children").write_text(" ".join(str(c) for c in children[n::threads]) + (" " if children else ""))


def test_parse_stat_counts_fields_after_the_command_name() -> None:
    stat = cpu.parse_stat(_stat(42, "postgres: user db 127.0.0.1(5) SELECT", 700, 50, 3, 4))
    assert (stat.utime, stat.stime, stat.cutime, stat.cstime) == (700, 50, 3, 4)
    assert stat.own == 750 and stat.reaped == 7


def test_tree_counts_live_descendants_and_reaped_children(tmp_path: Path) -> None:
    t = cpu.TICKS
    _process(tmp_path, 100, _stat(100, "postgres", 1 * t, 1 * t, 5 * t, 1 * t), children=[101, 102, 103], threads=2)
    _process(tmp_path, 101, _stat(101, "postgres: walwriter", 2 * t, 0))
    _process(tmp_path, 102, _stat(102, "postgres: postgres book 127.0.0.1(1) idle", 10 * t, 2 * t),
             children=[104])
    _process(tmp_path, 104, _stat(104, "child", 1 * t, 0))
    # 103 is listed but already gone: ignored
    assert cpu.tree_cpu_seconds(100, tmp_path) == pytest.approx(2 + 6 + 2 + 12 + 1)
    assert sorted(cpu.children(100, tmp_path)) == [101, 102, 103]
    assert cpu.cpu_seconds([101, 102, 103], tmp_path) == pytest.approx(14)
    assert cpu.read_stat(103, tmp_path) is None


def test_postmaster_pid_from_the_data_directory(tmp_path: Path) -> None:
    proc, data = tmp_path / "proc", tmp_path / "data"
    proc.mkdir()
    data.mkdir()
    _process(proc, 5366, _stat(5366, "postgres", 1, 1))
    (data / "postmaster.pid").write_text("5366\n/work/pgbook/data\n1733390000\n55432\n")
    assert cpu.postmaster_pid(data, proc) == 5366
    (data / "postmaster.pid").write_text("999\n")
    assert cpu.postmaster_pid(data, proc) is None  # not running here
    assert cpu.postmaster_pid(tmp_path / "elsewhere", proc) is None


def test_delta_by_pid_counts_new_processes_from_zero() -> None:
    before = {1: 2.0, 2: 5.0, 3: 1.0}
    after = {1: 2.5, 2: 5.0, 4: 0.25}  # 3 ended, 4 appeared
    assert cpu.delta_by_pid(before, after) == pytest.approx(0.75)
    assert cpu.per_request_ms(1.5, 1000) == 1.5
    assert cpu.per_request_ms(1.5, 0) is None


def test_real_proc_sees_a_busy_child_and_its_cpu_once_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sum(range(3_000_000)); sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert child.pid in cpu.children(os.getpid())
        assert cpu.read_stat(child.pid) is not None
        before = cpu.children_cpu_seconds()
    finally:
        child.communicate(b"")
    # the child's CPU moves to this process's reaped children once it is waited for
    assert cpu.children_cpu_seconds() > before


def test_postgres_spent_leaves_out_other_databases() -> None:
    """Between two readings of a shared server: 10 s of server CPU, of which another database's
    backends ran 3 s (one throughout, one that started in between), the WAL writer 0.5 s, ours
    4 s in the backends seen; the rest (connections that ended) stays ours."""
    before = {"server": 100.0, "backends": {10: 1.0}, "others": {20: 50.0, 21: 7.0}, "background": {5: 9.0},
              "sessions": 40}
    after = {"server": 110.0, "backends": {10: 3.0, 11: 2.0}, "others": {20: 52.0, 22: 1.0}, "background": {5: 9.5},
             "sessions": 52}
    spent = cpu.PostgresMeter.spent(before, after)
    assert spent == pytest.approx({"server": 10.0, "ours": 6.5, "background": 0.5, "backends": 4.0, "sessions": 12})
    assert cpu.PostgresMeter.spent({}, after) == {}


def test_wait_until_idle_waits_out_a_busy_process() -> None:
    # A server draining a backlog at a full core for three windows, then at 2 % of one. (Read from a
    # real process under a loaded machine's scheduler, a starved window would look idle: the test
    # would be flaky, not the function.)
    now = [0.0]
    readings = iter([0.0, 0.25, 0.5, 0.75, 0.755, 0.76])

    def sleep(seconds: float) -> None:
        now[0] += seconds

    waited, idle = cpu.wait_until_idle(lambda: next(readings), window=0.25, clock=lambda: now[0], sleep=sleep)
    assert idle and waited == pytest.approx(1.0)  # three busy windows, then the quiet one


def test_wait_until_idle_gives_up_after_the_timeout() -> None:
    now = [0.0]
    readings = iter(float(n) for n in range(1000))  # one CPU second per reading: always busy

    def sleep(seconds: float) -> None:
        now[0] += seconds

    waited, idle = cpu.wait_until_idle(lambda: next(readings), window=0.5, timeout=3, clock=lambda: now[0],
                                       sleep=sleep)
    assert not idle and waited == pytest.approx(3.0)


def test_wait_until_idle_returns_after_one_window_when_already_idle() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    waited, idle = cpu.wait_until_idle(lambda: 5.0, window=0.25, clock=lambda: now[0], sleep=sleep)
    assert idle and waited == pytest.approx(0.25)


def test_parse_machine_reads_the_first_cpu_line() -> None:
    ticks = cpu.TICKS
    # proc(5): cpu user nice system idle iowait irq softirq steal guest guest_nice
    text = f"cpu  {10 * ticks} {2 * ticks} {3 * ticks} {40 * ticks} {5 * ticks} 0 {ticks} {ticks // 2} 0 0\ncpu0 1 2 3\n"
    times = cpu.parse_machine(text)
    assert times == cpu.MachineTimes(busy=16.0, steal=0.5, idle=45.0)
    assert cpu.parse_machine("cpu 1 2 3 4\n").steal == 0  # an old kernel's shorter line
    assert cpu.machine_times().busy > 0


def test_machine_spent_counts_in_cores_what_was_not_measured() -> None:
    before = cpu.MachineTimes(busy=100.0, steal=1.0, idle=50.0)
    after = cpu.MachineTimes(busy=118.0, steal=1.2, idle=52.0)
    # 10 s of wall: 18 s busy, 12 s of it measured (app, PostgreSQL, load generator)
    assert cpu.machine_spent(before, after, 10.0, 12.0) == {
        "machine_busy_cores": 1.8, "machine_others_busy_cores": 0.6, "machine_steal_cores": 0.02}
    assert cpu.machine_spent(before, after, 10.0, 30.0)["machine_others_busy_cores"] == 0  # readings' skew
    assert cpu.machine_spent(before, after, 0.0, 1.0) == {}


def test_calibration_ms_is_the_best_of_its_rounds() -> None:
    readings = iter([0.0, 0.120, 1.0, 1.090, 2.0, 2.100])
    assert cpu.calibration_ms(rounds=3, clock=lambda: next(readings)) == 90.0
    assert cpu.calibration_ms(rounds=1) > 0
