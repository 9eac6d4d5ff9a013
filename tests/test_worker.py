"""The worker's exactly-once rules and its leases, against the fake provider (no Slack), on both databases."""

import asyncio
import logging
import time

import pytest

from bot.core.db import DatabaseUnreachable
from bot.core.store import JobKind, NewRecipient, RecipientState
from bot.core.worker import MAX_JOBS, REPORT_RETRY, Busy, NotReported, NullObserver, Worker
from bot.sms import SmsClient
from bot.sms.phone import parse_number

from .conftest import Clock, open_store, run
from .processes import until


class Boom(Exception):
    pass


def people(n: int, prefix: str = "+65 8100") -> list[NewRecipient]:
    return [NewRecipient(parse_number(f"{prefix} {i:04d}"), "hi") for i in range(n)]


def test_an_unexpected_error_leaves_no_recipient_queued(provider, sms_settings, database, caplog):
    """In-flight requests become unknown; the ones never sent become failed (retryable), none stay queued."""

    def fault(point: str) -> None:
        if point == "before_store_results":
            raise Boom("a bug while storing the first answers")

    async def go():
        store = await open_store(database)
        job, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=people(3))
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client, fault=fault)
            await worker.start()
            worker.submit(job.id)
            summary = await asyncio.wait_for(worker.wait(job.id), 10)
            await worker.stop()
        rows = await store.recipients(job.id)
        await store.close()
        return summary, rows

    summary, rows = run(go())
    found = [r.state for r in rows]
    assert RecipientState.QUEUED not in found and RecipientState.IN_FLIGHT not in found
    assert summary.pending == 0 and summary.unknown + summary.failed == 3
    assert len(provider.sent()) <= 3
    (logged,) = [r.getMessage() for r in caplog.records if "stopped on an unexpected error" in r.getMessage()]
    ref = logged.rsplit("ref=", 1)[1]
    assert all(ref in (r.error or "") for r in rows if r.state == RecipientState.FAILED)


def test_a_database_that_cannot_be_reached_for_a_while_loses_nothing(
    provider, sms_settings, database, caplog
):
    """The database goes away twice during a send (as in a restart): while the first answers are being
    stored, and as a mark commits but its answer never comes back, for longer than the leases. The
    answers are stored when it answers again; the heartbeat takes the sender lease back and the job
    goes on here; the marked rows that were never written go out after all; nothing is failed or
    reported unknown for it: every number reaches the provider once. The job is announced once."""
    calls = {"record": 0, "mark": 0, "started": 0}
    clock = Clock(time.time())
    caplog.set_level(logging.INFO, "bot.core.worker")

    class Observer(NullObserver):
        async def job_started(self, job, recipients):
            calls["started"] += 1

    async def go():
        store = await open_store(database)
        store.clock = clock
        record, mark = store.record_outcomes, store.mark_for_send

        def refused(conn):  # as asyncpg fails a connect: a bare OSError, which the store wraps
            raise ConnectionRefusedError(111, "Connection refused")

        async def flaky_record(job_id, outcomes):
            calls["record"] += 1
            if calls["record"] in (1, 2):  # the first answers: two refusals, then stored
                await store.write(refused)
            await record(job_id, outcomes)

        async def flaky_mark(job_id, indices, **kw):
            calls["mark"] += 1
            marked = await mark(job_id, indices, **kw)
            if calls["mark"] == 2:  # committed, but the connection drops before its answer ...
                clock.now += 10  # ... and comes back after every lease has ended
                raise DatabaseUnreachable("ConnectionResetError: [Errno 104] Connection reset by peer")
            return marked

        store.record_outcomes, store.mark_for_send = flaky_record, flaky_mark
        job, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=people(40))
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client, Observer(), lease_seconds=4.5, poll_seconds=0.05)
            await worker.start()
            worker.submit(job.id)
            summary = await asyncio.wait_for(worker.wait(job.id), 20)
            assert worker.is_sender
            await worker.stop()
        rows = await store.recipients(job.id)
        await store.close()
        return summary, rows

    summary, rows = run(go())
    sent = [r.params["To"] for r in provider.sent()]
    assert calls["record"] >= 3 and calls["mark"] >= 3 and calls["started"] == 1, calls
    assert (summary.accepted, summary.unknown, summary.failed, summary.pending) == (40, 0, 0, 0), summary
    assert all(r.state == RecipientState.ACCEPTED for r in rows)
    assert len(sent) == len(set(sent)) == 40
    logged = [r.getMessage() for r in caplog.records]
    assert not [m for m in logged if "unexpected error" in m], logged
    assert [m for m in logged if "the database cannot be reached" in m], logged
    assert [m for m in logged if "the database answers again; the send goes on" in m], logged


def test_a_finish_whose_answer_was_lost_is_still_reported_once(provider, sms_settings, database):
    """The job's completion commits, but the connection drops before its answer (a restart at that
    moment): once the database answers, the finish is reported, once, and the job's waiters get it."""
    finished: list[str] = []

    class Observer(NullObserver):
        async def job_finished(self, job, summary, recipients):
            finished.append(job.id)

    async def go():
        store = await open_store(database)
        complete = store.complete_job
        calls = {"complete": 0}

        async def answer_lost(job_id):
            calls["complete"] += 1
            done = await complete(job_id)
            if calls["complete"] == 1:
                raise DatabaseUnreachable("ConnectionResetError: [Errno 104] Connection reset by peer")
            return done

        store.complete_job = answer_lost
        job, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=people(3))
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client, Observer(), poll_seconds=0.05)
            await worker.start()
            worker.submit(job.id)
            summary = await asyncio.wait_for(worker.wait(job.id), 10)
            await worker.stop()
        await store.close()
        return job.id, summary

    job_id, summary = run(go())
    assert summary.accepted == 3 and len(provider.sent()) == 3
    assert finished == [job_id]


async def reported_at(store, job_id: str) -> float | None:
    import sqlalchemy as sa

    from bot.core.schema import jobs

    query = sa.select(jobs.c.reported_at).where(jobs.c.id == job_id)
    return await store.read(lambda conn: conn.execute(query).scalar())


@pytest.mark.parametrize("refusal", ["slack", "database"])
def test_a_finish_nobody_could_be_told_is_reported_again_once_it_can_be(
    provider, sms_settings, database, caplog, refusal
):
    """The observer cannot tell anyone when the job finishes (Slack unreachable, or the database it
    reads the channel's messages from): the job stays unreported, held by its process until that lease
    ends; the sender's next look reports it again. That fails too, so it is held REPORT_RETRY seconds;
    then it is told, once, and recorded. Each failure is one warning line, without a traceback."""
    told: list[str] = []
    refusals = {"left": 2}
    clock = Clock(time.time())

    class Observer(NullObserver):
        async def job_finished(self, job, summary, recipients):
            if refusals["left"]:
                refusals["left"] -= 1
                if refusal == "slack":
                    raise NotReported("Slack could not be reached")
                raise DatabaseUnreachable("ConnectionRefusedError: [Errno 111] Connection refused")
            told.append(job.id)

    async def go():
        store = await open_store(database)
        store.clock = clock
        job, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=people(2))
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client, Observer(), lease_seconds=4.5, poll_seconds=0.02, report_every=0.5)
            await worker.start()
            worker.submit(job.id)
            summary = await asyncio.wait_for(worker.wait(job.id), 10)
            unreported = await reported_at(store, job.id)
            # While the lease it finished under lasts, nobody may take it (a probe claims nothing).
            held = [await store.claim_unreported("probe", clock.now + 10, since=0, limit=5)]
            clock.now += 4.6  # that lease ends, and the next look is due: refused again

            async def held_for_the_retry():  # refused again, and held REPORT_RETRY seconds
                job_now = await store.get_job(job.id)
                return (job_now.lease_until or 0) >= clock.now + REPORT_RETRY or None

            await until(held_for_the_retry, 10, "the second refusal")
            clock.now += 4.6  # a lease later: still held for REPORT_RETRY
            held.append(await store.claim_unreported("probe", clock.now + 10, since=0, limit=5))
            clock.now += REPORT_RETRY
            await until(lambda: reported_at(store, job.id), 10, "the finish reported")
            again = await store.claim_unreported("probe", clock.now + 10, since=0, limit=5)
            await worker.stop()
        await store.close()
        return job.id, summary, unreported, held, again

    job_id, summary, unreported, held, again = run(go())
    failures = [r for r in caplog.records if "reporting job_finished failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.levelname == "WARNING" and not r.exc_info for r in failures)
    assert summary.accepted == 2 and len(provider.sent()) == 2
    assert unreported is None and held == [[], []]
    assert told == [job_id]  # told once, after the two refusals
    assert again == []  # recorded: nobody reports it again


def test_a_finish_whose_process_stopped_before_telling_is_reported_by_the_sender(
    provider, sms_settings, database
):
    """A process completes a job and stops before telling anyone (killed between the two). Once its
    lease ends, the sending replica reports the finish, once, whichever replicas run; a finish older
    than a day is left alone. (A's lease is shorter than the replicas' own: when the test moves the
    clock past it, B stays the sender.)"""
    told: list[str] = []
    clock = Clock(time.time())

    class Observer(NullObserver):
        async def job_finished(self, job, summary, recipients):
            told.append(job.id)

    async def go():
        a_store, b_store = await open_store(database), await open_store(database)
        a_store.clock = b_store.clock = clock
        old, _ = await a_store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=people(1))
        (claim,) = await a_store.claim_jobs("A", clock.now + 4.5, limit=1)
        await a_store.complete_job(old.id)  # a day and more ago
        clock.now += 86_400 + 60
        job, _ = await a_store.create_job(
            kind=JobKind.FANOUT, created_by="U1", recipients=people(2, "+65 8200")
        )
        (claim,) = await a_store.claim_jobs("A", clock.now + 1.0, limit=1)
        assert claim.job_id == job.id
        await a_store.complete_job(job.id)  # A stops here: nobody was told
        async with SmsClient(sms_settings) as client:
            b, c = (
                Worker(
                    store,
                    client,
                    Observer(),
                    lease_seconds=4.5,
                    poll_seconds=0.02,
                    name=name,
                    report_every=0.5,
                )
                for store, name in ((b_store, "B"), (a_store, "C"))
            )
            await b.start()
            await asyncio.wait_for(b.wait_sender(), 5)
            await c.start()
            clock.now += 1.1  # A's lease ends; the next look comes within half a second
            await until(lambda: reported_at(b_store, job.id), 10, "the finish reported")
            await b.stop()
            await c.stop()
        old_reported = await reported_at(b_store, old.id)
        await a_store.close()
        await b_store.close()
        return job.id, old_reported

    job_id, old_reported = run(go())
    assert told == [job_id]
    assert old_reported is None


def test_a_burst_of_jobs_goes_on_as_places_free_up_not_at_the_next_poll(provider, sms_settings, database):
    """Three times MAX_JOBS single sends at once: the sender runs MAX_JOBS of them together, and each
    that ends lets the next start then (with a 30 s poll, waiting for it would time the test out)."""

    async def go():
        store = await open_store(database)
        jobs = [
            (
                await store.create_job(
                    kind=JobKind.SINGLE, created_by="U1", recipients=people(1, f"+65 82{k:02d}")
                )
            )[0]
            for k in range(3 * MAX_JOBS)
        ]
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client, poll_seconds=30.0)
            await worker.start()
            for job in jobs:
                worker.submit(job.id)
            summaries = await asyncio.wait_for(asyncio.gather(*(worker.wait(j.id) for j in jobs)), 10)
            await worker.stop()
        await store.close()
        return summaries

    summaries = run(go())
    assert [s.accepted for s in summaries] == [1] * (3 * MAX_JOBS) and len(provider.sent()) == 3 * MAX_JOBS


def test_a_job_submitted_twice_runs_once(provider, sms_settings, database):
    async def go():
        store = await open_store(database)
        job, _ = await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1))
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client)
            await worker.start()
            worker.submit(job.id)
            worker.submit(job.id)
            summary = await asyncio.wait_for(worker.wait(job.id), 10)
            await worker.stop()
        await store.close()
        return summary

    assert run(go()).accepted == 1
    assert len(provider.sent()) == 1


def test_two_workers_one_sender_and_a_takeover_after_its_lease_ends(provider, sms_settings, database):
    """A job created on B is sent by A (the sender). A dies without a word (its heartbeat stops, its
    leases stay): B becomes the sender once they end, takes the job over, reports what A had in flight
    as unknown and sends the rest, once. The stores' clock is the test's: the lease ends when the test
    moves it past, not after seconds of waiting."""

    async def go():
        a_store, b_store = await open_store(database), await open_store(database)
        clock = Clock(time.time())
        a_store.clock = b_store.clock = clock
        async with SmsClient(sms_settings) as a_client, SmsClient(sms_settings) as b_client:
            a = Worker(a_store, a_client, lease_seconds=4.5, poll_seconds=0.05, name="A")
            await a.start()
            await asyncio.wait_for(a.wait_sender(), 5)
            b = Worker(b_store, b_client, lease_seconds=4.5, poll_seconds=0.05, name="B")
            await b.start()
            first, _ = await b_store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=people(3))
            b.submit(first.id)
            await asyncio.wait_for(a.wait(first.id), 10)
            assert not b.is_sender and (await a_store.get_job(first.id)).owner == "A"

            # A dies holding a job with two requests in flight and three never sent.
            a._runner.cancel()  # no more heartbeats, no hand-back: as if killed
            second, _ = await b_store.create_job(
                kind=JobKind.FANOUT, created_by="U1", recipients=people(5, "+65 8200")
            )
            (claim,) = await a_store.claim_jobs("A", a._lease_until, limit=1)
            assert claim.job_id == second.id
            await a_store.mark_in_flight(second.id, [0, 1], owner="A")
            b.submit(second.id)
            await b.wait_submitted(2)
            # While A's leases last, nobody may take its job (a probe claims nothing) and B is no sender.
            held = await b_store.claim_jobs("probe", clock.now + 10, limit=5)
            was_sender = b.is_sender
            clock.now = a._lease_until + 0.01  # A's leases end
            summary = await asyncio.wait_for(b.wait(second.id), 15)
            assert b.is_sender
            await b.stop()
            await a.stop()  # its listening connection and leases, for a clean end of the test
        rows = await b_store.recipients(second.id)
        await a_store.close()
        await b_store.close()
        return summary, rows, held, was_sender

    summary, rows, held, was_sender = run(go())
    assert held == [] and not was_sender
    assert (summary.unknown, summary.accepted, summary.pending) == (2, 3, 0)
    assert [r.state for r in rows[:2]] == [RecipientState.UNKNOWN] * 2
    sent = [r.params["To"] for r in provider.sent()]
    assert (
        len(sent) == len(set(sent)) == 6
    )  # 3 of the first job, 3 of the second: none twice, none of the two


def test_a_wake_up_that_comes_while_the_heartbeat_runs_is_not_lost(provider, sms_settings, database):
    """A NOTIFY (here: the wake-up it sets) arriving just after the heartbeat looked for jobs must make it
    look again at once, not at the next poll (30 s here)."""

    async def go():
        store = await open_store(database)
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client, poll_seconds=30)
            claim_jobs = store.claim_jobs
            created: list[str] = []
            arrived = asyncio.Event()

            async def claim_then_a_job_arrives(*args, **kwargs):
                claims = await claim_jobs(*args, **kwargs)
                if not created:  # another replica makes a job and its NOTIFY lands now
                    job, _ = await store.create_job(
                        kind=JobKind.SINGLE, created_by="U1", recipients=people(1)
                    )
                    created.append(job.id)
                    worker._wake.set()
                    arrived.set()
                return claims

            store.claim_jobs = claim_then_a_job_arrives  # type: ignore[method-assign]
            await worker.start()
            await asyncio.wait_for(arrived.wait(), 5)
            summary = await asyncio.wait_for(worker.wait(created[0]), 5)
            await worker.stop()
        await store.close()
        return summary

    assert run(go()).accepted == 1


def test_a_job_made_while_a_request_is_answered_is_claimed_after_the_answer(provider, sms_settings, database):
    """The job a slash command creates wakes the worker before that command is acked: its claim (a
    write, and statements built on the event loop) waits until no request has been in progress for
    `Busy.quiet`, so Slack's answer goes out first."""

    async def go():
        store = await open_store(database)
        busy = Busy(max_wait=10, quiet=0.02)
        claims: list[tuple[float, int]] = []  # (when, jobs claimed)
        ticked = asyncio.Event()
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client, poll_seconds=30, busy=busy)
            claim_jobs = store.claim_jobs

            async def recorded(*args, **kwargs):
                found = await claim_jobs(*args, **kwargs)
                claims.append((asyncio.get_running_loop().time(), len(found)))
                ticked.set()
                return found

            store.claim_jobs = recorded  # type: ignore[method-assign]
            await worker.start()
            await asyncio.wait_for(ticked.wait(), 5)  # the first heartbeat: nothing to claim yet
            busy.enter()  # a request arrives ...
            job, _ = await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1))
            worker.submit(job.id)  # ... creates its job ...
            await asyncio.sleep(0.05)  # ... and takes a while before it acks
            busy.leave()
            answered = asyncio.get_running_loop().time()
            summary = await asyncio.wait_for(worker.wait(job.id), 5)
            await worker.stop()
        await store.close()
        return claims, answered, summary

    claims, answered, summary = run(go())
    assert summary.accepted == 1
    (claimed_at, _), *_ = [c for c in claims if c[1]]
    assert claimed_at >= answered + 0.02, (claimed_at - answered, claims)


def test_busy_waits_for_a_quiet_moment_and_no_longer_than_its_limit():
    async def go():
        loop = asyncio.get_running_loop()
        busy = Busy(max_wait=2.0, quiet=0.05)  # far above the waits below: they end before it
        start = loop.time()
        await busy.wait_idle()  # never used: no wait
        never = loop.time() - start

        busy.enter()
        busy.leave()
        start = loop.time()
        await busy.wait_idle()  # answered just now: a quiet moment first
        quiet = loop.time() - start

        busy.enter()
        loop.call_later(0.1, busy.leave)
        start = loop.time()
        await busy.wait_idle()  # until the answer, then a quiet moment
        answered = loop.time() - start

        stuck_busy = Busy(max_wait=0.3, quiet=0.05)
        stuck_busy.enter()  # never answered: the limit
        start = loop.time()
        await stuck_busy.wait_idle()
        stuck = loop.time() - start
        return never, quiet, answered, stuck

    never, quiet, answered, stuck = run(go())
    assert never < 0.05, never
    assert 0.045 <= quiet < 1.0, quiet
    assert 0.145 <= answered < 1.0, answered
    assert 0.295 <= stuck < 2.0, stuck


def test_postgresql_wakes_the_sender_when_another_replica_creates_a_job(
    provider, sms_settings, pg_server, pg_template
):
    """The sender polls every 30 s here, yet a job created through another process's store is sent at
    once: the creating transaction's NOTIFY wakes it (polling stays the source of truth)."""
    database = pg_server.create_database(pg_template)

    async def go():
        sender_store, other_store = await open_store(database), await open_store(database)
        async with SmsClient(sms_settings) as client:
            worker = Worker(sender_store, client, poll_seconds=30)
            await worker.start()
            await asyncio.wait_for(worker.wait_sender(), 5)
            t0 = time.monotonic()
            job, _ = await other_store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1))
            summary = await asyncio.wait_for(worker.wait(job.id), 5)
            took = time.monotonic() - t0
            await worker.stop()
        await sender_store.close()
        await other_store.close()
        return summary, took

    summary, took = run(go())
    assert summary.accepted == 1 and took < 2.0


def test_a_long_running_worker_keeps_only_the_latest_submitted_ids(sms_settings, tmp_path, monkeypatch):
    monkeypatch.setattr("bot.core.worker.KEEP_FINISHED", 10)

    async def go():
        store = await open_store(f"sqlite:///{tmp_path}/bot.sqlite3")
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client)
            for i in range(25):
                worker.submit(f"job-{i}")
            latest = await worker.wait_submitted(25)
        await store.close()
        return worker.submitted_count, latest

    count, latest = run(go())
    assert count == 25
    assert 10 <= len(latest) <= 20 and latest[-1] == "job-24", latest


def test_progress_is_read_for_jobs_of_several_recipients_and_not_for_a_single_send(
    provider, sms_settings, tmp_path
):
    """A single send's one outcome is followed at once by its finish, which carries the summary: no
    progress read of its own (one transaction fewer on the database for every /sms). A job of several
    recipients still reports its progress while it sends."""

    class Seen(NullObserver):
        def __init__(self) -> None:
            self.progress: list[str] = []

        async def job_progress(self, job, summary) -> None:
            self.progress.append(job.id)

    async def go():
        store = await open_store(f"sqlite:///{tmp_path}/bot.sqlite3")
        single, _ = await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1))
        several, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=people(3))
        seen = Seen()
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client, seen)
            await worker.start()
            for job in (single, several):
                worker.submit(job.id)
                assert (await asyncio.wait_for(worker.wait(job.id), 10)).accepted == job.total
            await worker.stop()
        await store.close()
        return seen.progress, single.id, several.id

    progress, single, several = run(go())
    assert single not in progress
    assert several in progress


def test_the_jobs_of_a_burst_share_one_warm_up_of_the_provider_pool(sms_settings, tmp_path):
    """Each submitted job may open a connection ahead of its send; the jobs submitted together (a burst of
    /sms commands answered by one group commit) share one warm-up task, not one each."""

    async def go():
        store = await open_store(f"sqlite:///{tmp_path}/bot.sqlite3")
        async with SmsClient(sms_settings) as client:
            calls: list[int] = []
            release, over = asyncio.Event(), asyncio.Event()

            async def warm_up(connections: int = 1) -> int:
                calls.append(connections)
                await release.wait()
                over.set()  # the task ends in this same step
                return 0

            client.warm_up = warm_up  # type: ignore[method-assign]
            worker = Worker(store, client)
            await worker.start()
            await worker.wait_sender()
            for i in range(50):
                worker.submit(f"burst-{i}")
            await asyncio.sleep(0)  # the warm-up task runs
            during = len(calls)
            release.set()
            await asyncio.wait_for(over.wait(), 5)
            worker.submit("later")  # the burst's warm-up is over: a later job warms again
            await asyncio.sleep(0)
            after = len(calls)
            await worker.stop()
        await store.close()
        return during, after

    assert run(go()) == (1, 2)
