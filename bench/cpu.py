"""CPU time of processes from /proc, for the benchmarks' "CPU per operation" figures.

`tree_cpu_seconds(pid)` counts a process, its live descendants and the children it has already
reaped (`cutime`/`cstime`), so a PostgreSQL server measured between two instants keeps the CPU of
backends that ended in between. `PostgresMeter` finds a local server's postmaster from its data
directory's `postmaster.pid` and the backends of one database from `pg_stat_activity`.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    """Clock ticks from /proc/<pid>/stat: own user and system time, and that of reaped children."""

    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def own(self) -> int:
        return self.utime + self.stime

    @property
    def reaped(self) -> int:
        return self.cutime + self.cstime


def parse_stat(text: str) -> Stat:
    """Fields 14-17 of /proc/<pid>/stat (proc(5)); the command name (field 2) may hold spaces
    and parentheses, so the fields are counted from its last ')'."""
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14
    return Stat(int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14]))


def read_stat(pid: int, proc: Path = PROC) -> Stat | None:
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, IndexError, ValueError):
        return None  # gone


def children(pid: int, proc: Path = PROC) -> list[int]:
    """Live children of a process, from every one of its threads' `children` lists."""
    found: list[int] = []
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, ValueError):
            pass
    return found


def cpu_seconds(pids: list[int], proc: Path = PROC) -> float:
    """User + system CPU of these processes (all their threads), without their children."""
    return sum(stat.own for pid in pids if (stat := read_stat(pid, proc)) is not None) / TICKS


def tree_cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """A process and all its descendants, the exited ones it reaped included."""
    ticks = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        stat = read_stat(current, proc)
        if stat is None:
            continue
        ticks += stat.own + stat.reaped
        pending.extend(children(current, proc))
    return ticks / TICKS


def children_cpu_seconds() -> float:
    """CPU of this process's children that have ended and been waited for (wrk, the load generator)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def calibration_ms(rounds: int = 3, clock: Callable[[], float] = time.process_time) -> float:
    """CPU milliseconds of one fixed piece of pure Python (the best of `rounds`): this VM's CPU second
    is not a constant, the same page cost 11.8 ms of app CPU in one run and 16.3-17.0 ms in others
    (RESULTS.md, 2026-12-06 probe12); a figure read beside this one can be told from the machine's
    speed of the moment."""
    best = float("inf")
    for _ in range(rounds):
        started = clock()
        for _ in range(5_000):
            sum(range(1_000))
        best = min(best, clock() - started)
    return round(1000 * best, 2)


def own_cpu_seconds() -> float:
    """CPU of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_until_idle(read: Callable[[], float], window: float = 0.25, busy_share: float = 0.1,
                    timeout: float = 30.0, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> tuple[float, bool]:
    """Wait until the processes `read` measures (CPU seconds, e.g. `lambda: cpu_seconds(pids)`) spend
    less than `busy_share` of a core over one `window`: a server still working through the requests
    a closed loop left queued when it stopped. Returns (seconds waited, whether it went idle before
    `timeout`)."""
    began = clock()
    before = read()
    while True:
        sleep(window)
        after = read()
        if after - before < busy_share * window:
            return clock() - began, True
        if clock() - began >= timeout:
            return clock() - began, False
        before = after


@dataclass(frozen=True)
class MachineTimes:
    """Seconds of all CPUs from /proc/stat's first line: busy (user, nice, system, irq, softirq),
    stolen by the hypervisor (steal), and idle (idle, iowait)."""

    busy: float
    steal: float
    idle: float


def parse_machine(text: str) -> MachineTimes:
    """The `cpu` line of /proc/stat (proc(5)); guest time is counted in user time already."""
    fields = [int(x) for x in text.split("\n", 1)[0].split()[1:]]
    fields += [0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return MachineTimes((user + nice + system + irq + softirq) / TICKS, steal / TICKS, (idle + iowait) / TICKS)


def machine_times(proc: Path = PROC) -> MachineTimes:
    return parse_machine((proc / "stat").read_text())


def machine_spent(before: MachineTimes, after: MachineTimes, seconds: float, ours: float) -> dict[str, float]:
    """What the whole machine did over `seconds` of wall time, in cores: busy, busy outside the
    `ours` CPU seconds that were measured (the app, PostgreSQL, the load generator, the harness:
    anyone else's work, the kernel's writeback and softirqs), and stolen by the hypervisor. A run whose `others` or `steal`
    stands out measured a machine that was not its own."""
    if seconds <= 0:
        return {}
    busy = after.busy - before.busy
    return {"machine_busy_cores": round(busy / seconds, 2),
            "machine_others_busy_cores": round(max(0.0, busy - ours) / seconds, 2),
            "machine_steal_cores": round((after.steal - before.steal) / seconds, 3)}


def per_request_ms(seconds: float, requests: int | None) -> float | None:
    return round(1000 * seconds / requests, 3) if requests else None


def delta_by_pid(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings of a set of processes: those that appeared in between
    count from zero (a new backend), those gone by the second reading are not seen."""
    return sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in after.items())


def postmaster_pid(data_directory: str | Path, proc: Path = PROC) -> int | None:
    """The postmaster's pid from `postmaster.pid` (its first line) when this machine can see it."""
    try:
        pid = int((Path(data_directory) / "postmaster.pid").read_text().split("\n", 1)[0])
        command = (proc / str(pid) / "cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"postgres" in command else None


class PostgresMeter:
    """CPU of a PostgreSQL server on this machine, three ways:

    - `server`: the whole server (postmaster, backends, WAL writer, checkpointer, autovacuum, and
      the backends that ended meanwhile, through the postmaster's reaped-children time). Exact on
      a server of one's own; it counts the backend started for each new connection, which an app
      whose pool opens and closes overflow connections under load pays for.
    - `ours`: that, less the CPU of the backends of *other* databases seen at either reading
      (someone else's work on a shared server; what they ran in connections that ended in
      between cannot be told apart and stays in) and less the background processes (WAL
      writer, checkpointer, background writer, launchers: shared by every database's writes).
    - `background`: those background processes alone; ours too on a server of one's own.
    - `backends`: the backends of the book's database seen at either reading; misses connections
      that opened and closed in between, so a lower bound.

    Its own connection goes to the `postgres` database (counted as another database's), so it
    never holds the book open (a book used as a TEMPLATE must have no connection)."""

    def __init__(self, url: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.database = parsed.database or ""
        self.connection = psycopg.connect(host=parsed.host or "127.0.0.1", port=parsed.port or 5432,
                                          user=parsed.username, password=parsed.password, dbname="postgres",
                                          autocommit=True, connect_timeout=10)
        directory = self.connection.execute("SHOW data_directory").fetchone()
        self.postmaster = postmaster_pid(directory[0]) if directory else None

    @property
    def available(self) -> bool:
        return self.postmaster is not None

    def backends(self, database: str | None = None) -> tuple[list[int], list[int], list[int]]:
        """Backends connected to this database, those connected to any other, and the
        server's background processes (no database)."""
        ours: list[int] = []
        others: list[int] = []
        background: list[int] = []
        for pid, name in self.connection.execute("SELECT pid, datname FROM pg_stat_activity").fetchall():
            group = background if name is None else ours if name == (database or self.database) else others
            group.append(int(pid))
        return ours, others, background

    def reading(self, database: str | None = None) -> dict[str, Any]:
        if self.postmaster is None:
            return {}
        groups = self.backends(database)
        ours, others, background = ({pid: stat.own / TICKS for pid in group if (stat := read_stat(pid)) is not None}
                                    for group in groups)
        sessions = self.connection.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                                           (database or self.database,)).fetchone()
        return {"server": tree_cpu_seconds(self.postmaster), "backends": ours, "others": others,
                "background": background, "sessions": int(sessions[0]) if sessions else 0}

    @staticmethod
    def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        """Seconds of CPU between two readings (see the class): `server`, `ours`, `background`,
        `backends`; and `sessions`, the connections opened to the database in between (each
        starts a backend: a pool that closes its overflow pays for that)."""
        if not before or not after:
            return {}
        server = max(0.0, after["server"] - before["server"])
        others = delta_by_pid(before["others"], after["others"])
        background = delta_by_pid(before["background"], after["background"])
        return {"server": server, "ours": max(0.0, server - others - background), "background": background,
                "backends": delta_by_pid(before["backends"], after["backends"]),
                "sessions": after.get("sessions", 0) - before.get("sessions", 0)}

    def close(self) -> None:
        self.connection.close()
