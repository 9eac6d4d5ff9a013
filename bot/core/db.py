"""The database: SQLite (the embedded default) or PostgreSQL through SQLAlchemy Core, and its schema
versions through Alembic (`migrations/`).

`DATABASE_URL` takes a plain libpq URL (`postgresql://user:password@host:port/db`); the bot picks its
async driver (asyncpg). Without it, `DATABASE_PATH` names an SQLite file, as before migrations existed.

An engine is SQLAlchemy's synchronous one for SQLite (the store runs each call whole on a thread of its
own, see `bot.core.store.Store`; `run` below hands a call to a worker thread) and its asyncio one for
PostgreSQL. SQLite never imports SQLAlchemy's asyncio package, which brings the ORM with it: ≈ 0.05 s
and 6 MiB of every start and of the idle process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

    Engine = sa.Engine | AsyncEngine

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration's revision. A start whose database is already there reads one row and never
# imports Alembic (≈ 0.12 s and several MiB at every start otherwise); tests/test_migrations.py checks
# that this is Alembic's head.
HEAD = "0010"
# PostgreSQL: replicas starting together run migrations one at a time (a transaction-scoped lock).
_MIGRATION_LOCK = 0x5350_5301  # arbitrary, fixed


class DatabaseError(Exception):
    """The database cannot be used as it is; the message is one line for the operator."""


def database_url(url: str, path: str | Path) -> str:
    """SQLAlchemy's URL for a libpq `postgresql://…` URL, an `sqlite:///…` URL, or else an SQLite path."""
    if not url:
        return f"sqlite:///{Path(path)}"
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("must be a URL such as postgresql://user:password@host:5432/db")
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    if scheme in ("sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"):
        return f"sqlite://{rest}"
    raise ValueError(f"“{scheme}://” is not supported: use postgresql://… (or leave it empty for SQLite)")


def describe(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return sa.make_url(url).render_as_string(hide_password=True)


# Statement parameters hold phone numbers and message text: engines are made with hide_parameters (an
# error's text then shows the SQL without them), and the drivers that log each statement with its
# parameters at DEBUG are kept quiet whatever LOG_LEVEL says.
_STATEMENT_LOGGERS = ("sqlalchemy.engine", "asyncpg")


def create_engine(url: str) -> Engine:
    for name in _STATEMENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if not db or db == ":memory:":  # also: each thread would see a database of its own
            raise DatabaseError(
                "DATABASE_PATH: an in-memory database would lose every job and opt-out at each restart: "
                "give the path of a file."
            )
        try:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(
                f"DATABASE_PATH: cannot create the folder of {db} ({exc.strerror})."
            ) from None
        # One connection: SQLite has one writer at a time anyway, and a single connection never meets
        # "database is locked" between two of our own transactions. (A file database's connection may
        # move between threads: SQLAlchemy opens it with check_same_thread=False.)
        engine = sa.create_engine(
            parsed.set(drivername="sqlite"), pool_size=1, max_overflow=0, hide_parameters=True
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    from sqlalchemy.ext.asyncio import create_async_engine  # PostgreSQL only (see the module's text)

    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True)


# PostgreSQL's error classes that mean "not now" rather than "not this": connection exceptions (08…),
# the server shutting down or starting up (57P01-57P03), and no connection slot left (53300).
_UNREACHABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


class DatabaseUnreachable(Exception):
    """The database could not be reached, or the connection was lost (a restart, a failover, a network
    cut): the same call may succeed once it is back. Raised by the store (`Store.write`, `Store.read`)
    in place of the driver's error, which it chains."""


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` is the store saying the database is out of reach (`DatabaseUnreachable`)."""
    return isinstance(exc, DatabaseUnreachable)


def cut_off(exc: BaseException) -> bool:
    """Whether a driver's error says the database could not be reached or the connection was lost,
    rather than that a statement was wrong. A refused or timed-out connect comes from asyncpg as a bare
    `OSError`. SQLite's errors never are: its file is local."""
    if isinstance(exc, OSError | TimeoutError):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_UNREACHABLE_STATES)


def reason(exc: BaseException) -> str:
    """A database failure in a few words for the log (a traceback of a lost connection says no more)."""
    if isinstance(exc, DatabaseUnreachable):
        return str(exc)
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


class Outage:
    """For a loop that uses the database at every turn: one warning when it first cannot be reached and
    one line when it answers again, rather than a traceback at every turn meanwhile."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.since: float | None = None

    def failed(self, exc: BaseException) -> bool:
        """Whether `exc` was the database being out of reach (then said once); else the caller logs it."""
        if not unreachable(exc):
            return False
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s: the database cannot be reached (%s); trying again", self.what, reason(exc))
        return True

    def ok(self) -> None:
        if self.since is not None:
            took = time.monotonic() - self.since
            self.log.info("%s: the database answers again, after %.1f s", self.what, took)
            self.since = None


async def run(engine: Engine, fn: Callable[[sa.Connection], T], *, write: bool = False) -> T:
    """`fn(conn)` over a plain connection, in a transaction committed when it returns if `write`. SQLite:
    on a worker thread (for start-up, commands and tests; the store has a thread of its own)."""
    if isinstance(engine, sa.Engine):

        def whole() -> T:
            with engine.begin() if write else engine.connect() as conn:
                return fn(conn)

        return await asyncio.to_thread(whole)
    async with engine.begin() if write else engine.connect() as conn:
        return await conn.run_sync(fn)


async def dispose(engine: Engine) -> None:
    """Close the engine's connections (SQLite: on a worker thread; closing a file may wait on the disk)."""
    if isinstance(engine, sa.Engine):
        await asyncio.to_thread(engine.dispose)
    else:
        await engine.dispose()


WAL_AUTOCHECKPOINT_PAGES = 16_384  # 64 MiB of 4 KiB pages; the worker checkpoints between jobs instead


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cur = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


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


async def current(engine: Engine) -> str | None:
    """The database's schema revision (None: a new database, or one made before migrations)."""
    return await run(engine, _current)


async def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to this code's head, in one transaction. Returns (before, after). Refuses a
    database that is newer than the code."""
    return await run(engine, _upgrade, write=True)


def _upgrade(connection: sa.Connection) -> tuple[str | None, str]:
    if connection.dialect.name == "postgresql":  # the others wait here, then find it done
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    before = _current(connection)
    if before == HEAD:
        return before, HEAD
    _check_known(before)
    _upgrade_to_head(connection)
    return before, HEAD


def _upgrade_to_head(connection: sa.Connection) -> None:
    from alembic import command

    command.upgrade(_config(connection), "head")


async def check(engine: Engine) -> None:
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
