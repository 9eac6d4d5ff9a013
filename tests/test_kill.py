"""SIGKILL the real bot mid-send, start it again: nothing sent twice, unknown only for what may have left.

The bot runs as `python -m bot` processes (tests/processes.py) on SQLite and on PostgreSQL; the jobs are
put straight into the database, where the sending process finds them as it finds other replicas' jobs.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bot.core.store import JobKind, NewRecipient, RecipientState, Store
from bot.sms.phone import parse_number
from bot.sms.simulator import Fault, numbers_accepted

from .conftest import open_store, run
from .fake_slack import FakeSlack
from .processes import BotProcess, reap, until, wait_done, wait_provider

# Counts the requests on the wire at a kill, which grow with the machine's load: runs alone, after
# the parallel pass (README, "Run the tests").
pytestmark = pytest.mark.serial


def numbers(n: int) -> list[NewRecipient]:
    return [NewRecipient(parse_number(f"+65 81{i:06d}"), f"Outage update {i}") for i in range(n)]


async def bots(database: str, provider, tmp_path, count: int = 1):
    slack = FakeSlack()
    await slack.start()
    procs = [
        await BotProcess(
            database=database, provider_url=provider.url, slack_url=slack.url, cwd=tmp_path
        ).start()
        for _ in range(count)
    ]
    return slack, procs


async def reaping(scenario):
    try:
        return await scenario
    finally:
        await reap()


def test_sigkill_mid_outage_fan_out(provider, database, tmp_path, bot_processes):
    """2,000 single sends at 2,000/s with 50 ms latency, killed mid-way: at most 150 reported unknown,
    at most 20 of them never reached the provider; every other recipient reaches it exactly once."""
    provider.reset(latency=0.05)

    async def go():
        store = await open_store(database)
        job, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=numbers(2000))
        slack, (first,) = await bots(database, provider, tmp_path)
        await wait_provider(provider, 700)
        first.kill()
        await first.stop()
        second = await BotProcess(
            database=database, provider_url=provider.url, slack_url=slack.url, cwd=tmp_path
        ).start()
        await wait_done(store, job.id)
        await second.stop()
        rows = await store.recipients(job.id)
        await store.close()
        await slack.stop()
        return rows

    rows = run(reaping(go()))
    counts, received = provider.snapshot()
    arrived = Counter(r.params["To"] for r in received if r.action == "SendMessageToGlobe")
    unknown = [r for r in rows if r.state == RecipientState.UNKNOWN]
    never_left = [r for r in unknown if r.number.api not in arrived]
    others = [r for r in rows if r.state != RecipientState.UNKNOWN]
    # Every figure in every message: a failure on a busy machine says which bound it crossed and by how much.
    seen = (
        f"throttled {counts['throttled']}, most arrivals of one number {max(arrived.values())}, "
        f"unknown {len(unknown)}, never left {len(never_left)}, others {Counter(r.state.value for r in others)}"
    )
    assert counts["throttled"] == 0, seen
    assert max(arrived.values()) == 1, seen  # no number twice, across both processes
    assert 0 < len(unknown) <= 150, seen
    assert len(never_left) <= 20, seen
    assert all(r.state == RecipientState.ACCEPTED and r.number.api in arrived for r in others), seen
    assert len(others) + len(unknown) == 2000, seen


async def states(store: Store, job_id: str) -> Counter[str]:
    return Counter(r.state.value for r in await store.recipients(job_id))


def test_sigkill_while_a_batch_waits_to_retry_then_restart_at_once(
    provider, database, tmp_path, bot_processes
):
    """The second chunk is throttled and waits 3 s to retry; the bot is killed meanwhile and started
    again at once, within a second of its last batch call. Nothing is reported unknown (that chunk never
    reached the provider), every recipient is accepted exactly once, and only the injected answer was a
    throttle: the new process did not call too soon after the old one."""

    async def go():
        store = await open_store(database)
        job, _ = await store.create_job(kind=JobKind.BATCH, created_by="U1", recipients=numbers(3000))
        slack, (first,) = await bots(database, provider, tmp_path)
        await wait_provider(provider, 1)
        provider.inject(Fault("throttle", action="BatchSendMessageToGlobe", retry_after_ms=3000))
        await wait_provider(provider, 2)

        async def withdrawn() -> bool:
            return (await states(store, job.id)) == Counter(accepted=1000, queued=2000)

        # The retry waits 3 s: the chunk is withdrawn (queued, not in flight) well before it goes again.
        await until(withdrawn, 2.5, "the throttled chunk was not withdrawn")
        first.kill()
        await first.stop()
        second = await BotProcess(
            database=database, provider_url=provider.url, slack_url=slack.url, cwd=tmp_path
        ).start()
        await wait_done(store, job.id)
        await second.stop()
        found = await states(store, job.id)
        await store.close()
        await slack.stop()
        return found

    found = run(reaping(go()))
    counts, received = provider.snapshot()
    accepted = Counter(numbers_accepted(received))
    assert found == Counter(accepted=3000)
    assert len(accepted) == 3000 and max(accepted.values()) == 1
    assert counts["throttled"] == 1  # the injected one
