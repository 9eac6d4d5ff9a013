"""PostgreSQL restarts under the real bot mid-send: nothing lost, nothing sent twice, nothing failed for it.

A server of the test's own (tests/pg.py), so that stopping it touches no other test. The bot runs as
`python -m bot` (tests/processes.py); the job is put straight into the database, as in test_kill.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest

from bot.core.store import JobKind, RecipientState

from .conftest import open_store, run
from .pg import PostgresServer
from .processes import until, wait_done, wait_provider
from .test_kill import bots, numbers, reaping

# A 2,000-a-second send under a database restart, bounded in time: runs alone, after the parallel
# pass (README, "Run the tests").
pytestmark = pytest.mark.serial


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.close()


def test_a_postgresql_restart_mid_outage_fan_out(provider, own_server, tmp_path, bot_processes):
    """2,000 single sends at 2,000/s with 50 ms latency. The server stops (a fast shutdown ends every
    session) once 600 reached the provider, and starts again a second later. The answers that came
    meanwhile are stored when it is back, the send goes on from there, and every number reaches the
    provider exactly once: none failed, none unknown; and it listens for other replicas' new jobs
    again. (A stop longer than the leases: test_worker.py, on a clock of the test's.)"""
    provider.reset(latency=0.05)
    database = own_server.create_database()

    async def go():
        store = await open_store(database)
        job, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=numbers(2000))
        await store.close()
        slack, (bot,) = await bots(database, provider, tmp_path)
        await wait_provider(provider, 600)
        own_server.stop()
        health = await bot.health()
        await asyncio.sleep(1)  # no event to await: the outage lasts as long as the test says
        own_server.start()
        store = await open_store(database)
        await wait_done(store, job.id)
        rows = await store.recipients(job.id)
        await store.close()
        name = database.rsplit("/", 1)[1]

        async def listening() -> bool:  # new jobs of other replicas wake it again, not only its polls
            query = (
                f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' AND query LIKE 'LISTEN %'"
            )
            return (await asyncio.to_thread(own_server.sql, query)).strip() == "1"

        await until(listening, 10, "the bot did not listen for new jobs again")
        await bot.stop()
        await slack.stop()
        return health, rows, bot.lines, slack.called("chat.postMessage")

    health, rows, lines, posts = run(reaping(go()))
    counts, received = provider.snapshot()
    arrived = Counter(r.params["To"] for r in received if r.action == "SendMessageToGlobe")
    states = Counter(r.state.value for r in rows)
    said = [str(line.get("msg")) for line in lines]
    seen = f"states {states}, arrivals {len(arrived)}, most of one number {max(arrived.values())}"
    assert not health["ok"] and not health["database"], health
    assert states == Counter({RecipientState.ACCEPTED.value: 2000}), seen
    assert len(arrived) == 2000 and max(arrived.values()) == 1 and counts["throttled"] == 0, seen
    assert [m for m in said if "the database cannot be reached" in m], said
    assert [m for m in said if "the database answers again" in m], said
    assert [m for m in said if "listening for new jobs again" in m], said
    assert posts == []  # a second's wait is under the worker's notice time: nobody is bothered with it
    assert not [line for line in lines if line.get("level") == "error"], [m for m in said if "ref=" in m]
