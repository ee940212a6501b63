"""A throwaway PostgreSQL server for one test session (one per pytest-xdist worker).

It uses Debian's binaries (`/usr/lib/postgresql/<version>/bin`, package `postgresql`), keeps
everything in a temporary directory, listens on 127.0.0.1 only, on a free port, with trust
authentication, and is stopped and deleted at the end. Nothing is started as a system
service. initdb refuses to run as root: as root, the server runs as the `postgres` system
user through `runuser`.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
START_TIMEOUT = 30  # seconds
CONFIG = """
# --- encours test server ---
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 50
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
"""


class PostgresNotInstalled(RuntimeError):
    pass


class PostgresError(RuntimeError):
    pass


def find_bindir(root: Path | None = None) -> Path:
    """The bin directory of the highest PostgreSQL version installed."""
    root = root or PG_ROOT
    candidates = []
    for bindir in root.glob("*/bin"):
        version = bindir.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            candidates.append((tuple(int(part) for part in version.split(".")), bindir))
    if not candidates:
        raise PostgresNotInstalled(
            f"PostgreSQL is not installed (no initdb/pg_ctl under {root}/*/bin); "
            "`make test` installs it (Debian package `postgresql`)"
        )
    return max(candidates)[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _traversable_by_others(path: Path) -> bool:
    """Whether every directory from / down to `path` lets other users through."""
    for directory in [path, *path.parents]:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return False
    return True


class PostgresServer:
    """`PostgresServer().start()` gives a running server; `stop()` removes every trace."""

    def __init__(self, bindir: Path | None = None, extra_config: dict[str, str] | None = None) -> None:
        self.bindir = bindir or find_bindir()
        # Settings over CONFIG's, e.g. {"synchronous_commit": "on"} for a server a test crashes.
        self.extra_config = extra_config or {}
        self.as_root = os.geteuid() == 0
        self.port: int | None = None
        self.base: Path | None = None
        self._running = False

    # -- paths --------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None
        return self.base / "run"

    @property
    def log_file(self) -> Path:
        assert self.base is not None
        return self.base / "postgresql.log"

    def url(self, database: str = "encours_test") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # -- life cycle -----------------------------------------------------------------

    def start(self, database: str = "encours_test") -> str:
        """Create a cluster, start it, create `database`; returns its SQLAlchemy URL."""
        self._make_base()
        try:
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                      "--encoding=UTF8", "--no-locale", "--no-sync")
            self._start_on_a_free_port()
            self.create_database(database)
        except BaseException:
            self.stop()
            raise
        return self.url(database)

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database on this server, empty or a copy of `template` (which nobody may be
        connected to); returns its SQLAlchemy URL."""
        import psycopg

        for unsafe in (name, template or "template0"):
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", unsafe):
                raise ValueError(f"unsafe database name {unsafe!r}")
        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def stop(self) -> None:
        if self._running:
            self._running = False
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop")
            except PostgresError:
                pass  # already gone; the directory goes anyway
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def restart(self, mode: str = "immediate") -> None:
        """Stop the server (`immediate`: as a crash does, every connection cut) and start it
        again on the same port and data."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", str(START_TIMEOUT), "start")
        self._wait_until_ready()

    # -- internals ------------------------------------------------------------------

    def _make_base(self) -> None:
        parent = Path(tempfile.gettempdir())
        if self.as_root and not _traversable_by_others(parent):
            parent = Path("/tmp")  # the postgres user must reach the data directory
        self.base = Path(tempfile.mkdtemp(prefix="encours-pg-", dir=parent))
        atexit.register(self.stop)  # in case the session is torn down abruptly
        self.base.chmod(0o755)
        self.socket_dir.mkdir(mode=0o755)
        if self.as_root:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresNotInstalled(
                    "running as root, but there is no `postgres` system user to run PostgreSQL as; "
                    "`make test` installs the Debian package `postgresql`, which creates it"
                ) from None
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            os.chown(self.socket_dir, owner.pw_uid, owner.pw_gid)

    def _start_on_a_free_port(self) -> None:
        # Another process may take the port between our probe and the server's bind: retry.
        config_path = self.data_dir / "postgresql.conf"
        original = config_path.read_text()
        last_error: PostgresError | None = None
        for _attempt in range(5):
            self.port = _free_port()
            extra = "".join(f"{name} = {value}\n" for name, value in self.extra_config.items())
            config_path.write_text(original + CONFIG.format(port=self.port, socket_dir=self.socket_dir) + extra)
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                          "-t", str(START_TIMEOUT), "start")
            except PostgresError as error:
                last_error = error
                continue
            self._running = True
            self._wait_until_ready()
            return
        raise PostgresError(f"PostgreSQL did not start: {last_error}")

    def _wait_until_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                                     connect_timeout=5):
                    return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise PostgresError(f"PostgreSQL on port {self.port} is not ready after "
                                        f"{START_TIMEOUT} s: {error}\n{self._log_tail()}") from None
                time.sleep(0.2)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        result = subprocess.run(command, cwd=self.base, env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=START_TIMEOUT + 30)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise PostgresError(f"{' '.join(command)} failed ({result.returncode}): {output}\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
