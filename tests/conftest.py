from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bot.core import db
from bot.core.store import Store
from bot.sms import SmsSettings, loop
from bot.sms.loop import LoopChoice
from bot.sms.simulator import ProviderProcess

from .pg import PostgresServer

# The loop the tests run on, as the bot would choose it: uvloop where installed. CI runs the suite a second
# time with EVENT_LOOP=asyncio (the bot processes the tests start inherit the variable).
LOOP: LoopChoice = os.environ.get("EVENT_LOOP", "auto")  # type: ignore[assignment]


class Clock:
    """A wall clock for the bot's store and worker in a test: stands still until the test moves it."""

    def __init__(self, at: float) -> None:
        self.now = at

    def __call__(self) -> float:
        return self.now


def run(coro):
    """Run one coroutine on a fresh event loop (the code under test is async; the tests are not)."""
    return loop.run(coro, LOOP)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Settings come only from what a test passes: no developer .env or exported variable leaks in."""
    import os

    for name in list(os.environ):
        if name.startswith(
            ("SMS_", "ALIBABA_CLOUD_", "SLACK_", "ACCESS_", "DATABASE_", "LOG_", "CONTACT_", "BULK_")
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def bot_processes() -> Iterator[None]:
    """For tests that run `python -m bot` processes: none outlives the test, whatever happened."""
    from .processes import kill_leftovers

    yield
    kill_leftovers()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session, started here (see tests/pg.py): never skipped."""
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A database at the schema's head, copied for each test that wants PostgreSQL."""
    url = pg_server.create_database()

    async def upgrade() -> None:
        engine = db.create_engine(db.database_url(url, ""))
        await db.upgrade(engine)
        await db.dispose(engine)

    run(upgrade())
    return url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path) -> str:
    """A DATABASE_URL at the schema's head: an SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bot.sqlite3"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database(request.getfixturevalue("pg_template"))


async def open_store(url: str) -> Store:
    """A store on a DATABASE_URL, upgraded to head (a no-op on a copy of the template)."""
    engine = db.create_engine(db.database_url(url, ""))
    await db.upgrade(engine)
    return Store(engine)


@pytest.fixture(scope="session")
def _provider_process() -> Iterator[ProviderProcess]:
    """The fake provider runs in a process of its own, as a real peer would (no shared GIL)."""
    proc = ProviderProcess()
    yield proc
    proc.close()


@pytest.fixture
def provider(_provider_process: ProviderProcess) -> ProviderProcess:
    _provider_process.defaults = {}
    _provider_process.reset()
    return _provider_process


def settings_for(provider: ProviderProcess, **overrides) -> SmsSettings:
    values = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": provider.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": provider.access_key_secret,
        "SMS_ENDPOINT": provider.url,
        "SMS_READ_TIMEOUT": 2.0,
        "SMS_CONNECT_TIMEOUT": 1.0,
    }
    values.update(overrides)
    return SmsSettings(_env_file=None, **values)


@pytest.fixture
def sms_settings(provider: ProviderProcess) -> SmsSettings:
    return settings_for(provider)
