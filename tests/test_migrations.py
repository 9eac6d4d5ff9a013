"""Upgrades keep data: databases made by earlier versions (dumped from them, tests/data/) upgrade in place
and the bot sends from them; a database newer than the code is refused with one line."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core import db
from bot.core.bulk import confirm
from bot.core.store import DraftState, JobState, RecipientState
from bot.slack.app import StartupError

from .conftest import run
from .harness import Bot

DATA = Path(__file__).parent / "data"


def load(dump: str, path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript((DATA / dump).read_text())
    conn.close()
    return path


def test_todays_main_upgrades_without_loss_and_the_bot_sends_from_it(provider, tmp_path):
    """Made by commit 29db38b (the last version without migrations): a finished send with its thread, a
    queued one, a bulk job part-way (one accepted, one in flight, three not yet written as rows) and an
    open draft. After the upgrade: the finished send is as it was (and counts as reported), the queued one is sent, the bulk job
    reports its in-flight recipient unknown and sends the three others, the draft can still be confirmed."""
    path = load("db-29db38b.sql", tmp_path / "bot.sqlite3")
    old = sqlite3.connect(path)
    (done_id,) = old.execute("SELECT id FROM jobs WHERE state = 'done'").fetchone()
    (bulk_id,) = old.execute("SELECT id FROM jobs WHERE state = 'running'").fetchone()
    (draft_id,) = old.execute("SELECT id FROM drafts WHERE state = 'open'").fetchone()
    old.close()

    async def go():
        async with Bot(provider, tmp_path, DATABASE_PATH=str(path)) as bot:
            store = bot.runtime.store
            assert await db.current(store.engine) == db.head()
            queued = [j for j in await store.unfinished_jobs() if j.id != bulk_id]
            for job in [*queued, await store.get_job(bulk_id)]:
                await asyncio.wait_for(bot.runtime.worker.wait(job.id), 20)
            done = await store.get_job(done_id)
            reported = await store.read(
                lambda conn: conn.exec_driver_sql(
                    "SELECT reported_at FROM jobs WHERE id = ?", (done_id,)
                ).scalar()
            )
            done_post = await bot.posted(done_id)
            thread = await bot.runtime.slack_state.thread_for("C0SUPPORT", "+85251234567")
            (kept,) = await store.recipients(done_id)
            bulk_rows = await store.recipients(bulk_id)
            draft = await store.get_draft(draft_id)
            job_id, note = await confirm(store, draft_id, dry_run=False)
            await asyncio.wait_for(bot.runtime.worker.wait(job_id), 20)
            from_draft = await store.recipients(job_id)
            return done, reported, done_post, kept, bulk_rows, thread, draft, note, from_draft

    done, reported, done_post, kept, bulk_rows, thread, draft, note, from_draft = run(go())
    assert done.state == JobState.DONE and done_post.thread_ts == done_post.parent_ts == "1700000000.000100"
    assert reported == done.finished_at  # reported when it finished: never reported again
    assert "thread_ts" not in done.meta
    assert (kept.state, kept.message_id, kept.country) == (RecipientState.ACCEPTED, "100000001", "Hong Kong")
    assert thread == "1700000000.000100"
    assert [r.state for r in bulk_rows] == [RecipientState.ACCEPTED, RecipientState.UNKNOWN] + [
        RecipientState.ACCEPTED
    ] * 3
    assert [r.message for r in bulk_rows] == [f"Hi P{i}" for i in range(5)]
    assert (draft.state, draft.count) == (DraftState.OPEN, 3)
    assert note == "created" and [r.state for r in from_draft] == [RecipientState.ACCEPTED] * 3
    sent = [r.params["To"] for r in provider.sent()]
    batches = [json.loads(r.params["To"]) for r in provider.sent("BatchSendMessageToGlobe")]
    assert sent == ["6581234567"]  # the queued single send; the finished one is not sent again
    assert batches == [["6581000002", "6581000003", "6581000004"], ["6581000000", "6581000001", "6581000002"]]


def test_the_first_release_upgrades_too(provider, tmp_path):
    """Made by commit ee75317 (before bulk sends: no est_segments column, no bulk tables)."""
    path = load("db-ee75317.sql", tmp_path / "bot.sqlite3")

    async def go():
        async with Bot(provider, tmp_path, DATABASE_PATH=str(path)) as bot:
            store = bot.runtime.store
            (queued,) = await store.unfinished_jobs()
            await asyncio.wait_for(bot.runtime.worker.wait(queued.id), 20)
            jobs = await store.history("U0AGENT")
            return [(r.message, r.state) for _, r in jobs], await store.segments_today("U0AGENT")

    rows, _ = run(go())
    assert sorted(rows) == [
        ("First release", RecipientState.ACCEPTED),
        ("Queued in the first release", RecipientState.ACCEPTED),
    ]
    assert [r.params["To"] for r in provider.sent()] == ["6581234567"]


def test_a_database_newer_than_the_code_is_refused_with_one_line(provider, tmp_path, database):
    async def go():
        engine = db.create_engine(db.database_url(database, ""))
        await db.upgrade(engine)
        await db.run(
            engine, lambda c: c.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'"), write=True
        )
        await db.dispose(engine)
        with pytest.raises(StartupError) as refused:
            async with Bot(provider, tmp_path, DATABASE_URL=database):
                pass
        return str(refused.value)

    message = run(go())
    assert "9999" in message and "newer than this version" in message and "\n" not in message
    assert message.startswith("DATABASE_URL")


def test_operators_upgrade_and_check_by_command(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_PATH": str(tmp_path / "ops.sqlite3"), "LOG_LEVEL": "WARNING"}

    def bot_db(*args: str) -> str:
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "bot", "db", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    assert bot_db("current") == f"schema unversioned (this version needs {db.head()})"
    assert bot_db("upgrade") == f"schema unversioned → {db.head()}"
    assert bot_db("current") == f"schema {db.head()} (up to date)"
    assert bot_db("upgrade") == f"schema {db.head()}: up to date"


def test_the_head_constant_is_alembics_head():
    """The start-up fast path compares the stored revision with `db.HEAD`: a new migration must bump it."""
    assert db.head() == db.HEAD


def test_the_migrations_build_exactly_the_schema_the_code_uses(tmp_path):
    """Alembic's own comparison of the migrated database with the tables the queries are written
    against (core's and the Slack layer's): a column, index or table in one and not the other fails."""
    import sqlalchemy as sa
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from bot.core.schema import metadata as core
    from bot.slack.state import metadata as slack

    both = sa.MetaData()
    for table in [*core.tables.values(), *slack.tables.values()]:
        table.to_metadata(both)

    async def go():
        engine = db.create_engine(db.database_url("", tmp_path / "m.sqlite3"))
        await db.upgrade(engine)
        diff = await db.run(
            engine,
            lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": False}), both),
        )
        await db.dispose(engine)
        return [
            d
            for d in diff
            if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")
        ]

    assert run(go()) == []


def test_a_start_on_sqlite_loads_neither_sqlalchemys_asyncio_nor_the_orm_nor_alembic(tmp_path):
    """SQLite runs on the synchronous engine, on the store's thread: SQLAlchemy's asyncio package (and
    the ORM it imports) stays out of the process, as does Alembic when the schema is already at head
    (≈ 0.05 s and 6 MiB of every start and of the idle bot; Alembic ≈ 0.12 s), and PostgreSQL's dialect
    (≈ 25 ms), also after an INSERT … ON CONFLICT of the core's and of the Slack layer's."""
    path = tmp_path / "bot.sqlite3"
    script = f"""
import asyncio, sys
from bot.config import Settings
from bot.core.store import JobKind, NewRecipient, Store
from bot.runtime import open_database
from bot.slack.state import SlackState
from bot.sms import parse_number

async def main():
    store = Store(await open_database(Settings(_env_file=None, DATABASE_PATH={str(path)!r})))
    number = parse_number("+65 8123 4567")
    job, _ = await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=[NewRecipient(number, "Hi")])
    assert (await store.get_job(job.id)).total == 1
    assert await store.acquire_lease("sender", "me", 10) is not None
    await SlackState(store).remember_thread("C1", number.e164, "1.0")
    assert await SlackState(store).thread_for("C1", number.e164) == "1.0"
    await store.close()

asyncio.run(main())
loaded = ("sqlalchemy.ext.asyncio", "sqlalchemy.orm", "aiosqlite", "alembic", "sqlalchemy.dialects.postgresql")
print(sorted(m for m in loaded if m in sys.modules))
"""
    root = Path(__file__).parent.parent

    def start() -> str:
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    # a new database: its schema made by Alembic (whose DDL package imports every dialect it knows)
    assert start() == "['alembic', 'sqlalchemy.dialects.postgresql']"
    assert start() == "[]"  # a restart


def test_replicas_upgrading_a_new_postgresql_database_at_once_take_turns(pg_server):
    """Replicas started together on a new database: one makes the schema while the others wait on the
    migration lock, then find it done (without the lock, their transactions block each other for good)."""
    url = db.database_url(pg_server.create_database(), "")

    async def go():
        engines = [db.create_engine(url) for _ in range(3)]
        try:
            # bounded: without the lock this would hang, and it should fail instead
            upgrades = await asyncio.wait_for(asyncio.gather(*(db.upgrade(e) for e in engines)), 30)
            return upgrades, await db.current(engines[0])
        finally:
            for engine in engines:
                await db.dispose(engine)

    upgrades, revision = run(go())
    assert [before for before, _ in upgrades].count(None) == 1  # one made the schema
    assert all(after == db.HEAD for _, after in upgrades) and revision == db.HEAD
