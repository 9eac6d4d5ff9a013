"""The database: an async SQLAlchemy engine for SQLite (the embedded default) or PostgreSQL, and its
schema versions through Alembic (`migrations/`).

`DATABASE_URL` takes a plain libpq URL (`postgresql://user:password@host:port/db`); the bot picks its
async driver (asyncpg). Without it, `DATABASE_PATH` names an SQLite file, as before migrations existed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration's revision. A start whose database is already there reads one row and never
# imports Alembic (≈ 0.12 s and several MiB at every start otherwise); tests/test_migrations.py checks
# that this is Alembic's head.
HEAD = "0008"
# PostgreSQL: replicas starting together run migrations one at a time (a transaction-scoped lock).
_MIGRATION_LOCK = 0x5350_5301  # arbitrary, fixed


class DatabaseError(Exception):
    """The database cannot be used as it is; the message is one line for the operator."""


def database_url(url: str, path: str | Path) -> str:
    """SQLAlchemy's URL for a libpq `postgresql://…` URL, an `sqlite:///…` URL, or else an SQLite path."""
    if not url:
        return f"sqlite+aiosqlite:///{Path(path)}"
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("must be a URL such as postgresql://user:password@host:5432/db")
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return f"sqlite+aiosqlite://{rest}"
    raise ValueError(f"“{scheme}://” is not supported: use postgresql://… (or leave it empty for SQLite)")


def describe(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return sa.make_url(url).render_as_string(hide_password=True)


# Statement parameters hold phone numbers and message text: engines are made with hide_parameters (an
# error's text then shows the SQL without them), and the drivers that log each statement with its
# parameters at DEBUG are kept quiet whatever LOG_LEVEL says.
_STATEMENT_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "asyncpg")


def create_engine(url: str) -> AsyncEngine:
    for name in _STATEMENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if db and db != ":memory:":
            try:
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"DATABASE_PATH: cannot create the folder of {db} ({exc.strerror})."
                ) from None
        # One connection: SQLite has one writer at a time anyway, and a single connection never meets
        # "database is locked" between two of our own transactions.
        engine = create_async_engine(url, pool_size=1, max_overflow=0, hide_parameters=True)
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True)


def create_sync_sqlite_engine(url: sa.URL) -> sa.Engine:
    """The synchronous twin of an SQLite engine, for a store that runs each call whole on one thread
    (see `Store`): one connection, the same pragmas."""
    engine = sa.create_engine(url.set(drivername="sqlite"), pool_size=1, max_overflow=0, hide_parameters=True)
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


WAL_AUTOCHECKPOINT_PAGES = 16_384  # 64 MiB of 4 KiB pages; the worker checkpoints between jobs instead


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cur = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


async def dispose_after_failure(engine: AsyncEngine) -> None:
    """Dispose of an engine whose connection failed, and let aiosqlite's threads finish while the event
    loop still runs: aiosqlite stops a connection that failed to open by queueing work for its thread
    without waiting for it, and if the loop has closed when the thread reports back, the thread prints
    a traceback ("Event loop is closed") as the process exits."""
    await engine.dispose()
    if engine.dialect.name == "sqlite":
        await asyncio.to_thread(_join_sqlite_threads, 2.0)


def _join_sqlite_threads(timeout: float) -> None:
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)") and thread is not threading.current_thread():
            thread.join(timeout)


# ---------------------------------------------------------------------- schema versions
def _config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config  # lazily: only when the schema must change or be checked

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """Alembic's head, read from the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _current(connection: sa.Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


async def current(engine: AsyncEngine) -> str | None:
    """The database's schema revision (None: a new database, or one made before migrations)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def upgrade(engine: AsyncEngine) -> tuple[str | None, str]:
    """Bring the schema to this code's head, in one transaction. Returns (before, after). Refuses a
    database that is newer than the code."""
    async with engine.begin() as conn:
        await _lock(conn)
        before = await conn.run_sync(_current)
        if before == HEAD:
            return before, HEAD
        _check_known(before)
        await conn.run_sync(_upgrade_to_head)
    return before, HEAD


def _upgrade_to_head(connection: sa.Connection) -> None:
    from alembic import command

    command.upgrade(_config(connection), "head")


async def check(engine: AsyncEngine) -> None:
    """Refuse a database whose schema is not this code's head (newer, or not yet upgraded)."""
    rev = await current(engine)
    if rev == HEAD:
        return
    _check_known(rev)  # newer than this code: its own message
    raise DatabaseError(
        f"the database is at schema revision {rev or 'none'}, this version needs {HEAD}: "
        "run `python -m bot db upgrade` (or start with DATABASE_AUTO_UPGRADE=true)."
    )


def _check_known(rev: str | None) -> None:
    if rev is None:
        return
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    if not any(r.revision == rev for r in script.walk_revisions()):
        raise DatabaseError(
            f"the database is at schema revision {rev}, newer than this version of the bot knows "
            f"(up to {HEAD}): run the newer version, or restore a backup made before the upgrade."
        )


async def _lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
