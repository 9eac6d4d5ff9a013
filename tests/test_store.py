"""The store on both databases: drafts into jobs exactly once, fenced in-flight marks, leases, recovery."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from bot.core import db
from bot.core.schema import recipients as rtab
from bot.core.store import DraftState, JobKind, NewRecipient, RecipientState, Store, _runs, day_start
from bot.sms import Outcome, Status
from bot.sms.phone import PhoneNumber

from .conftest import open_store, run


def people(n: int, segments: int = 2) -> list[NewRecipient]:
    return [
        NewRecipient(PhoneNumber(f"+6581{i:06d}", 65, f"81{i:06d}", "SG"), f"Hi P{i}", segments)
        for i in range(n)
    ]


async def confirmed(store: Store, n: int, hold: tuple[str, float] | None = None) -> tuple[str, str]:
    """A draft of `n` people confirmed into a job (with `hold`, as the Slack confirmation does it)."""
    draft_id = await store.create_draft("U1")
    assert await store.fill_draft(draft_id, {"user_id": "U1"}, people(n))
    job_id, created = await store.claim_draft_into_job(
        draft_id, kind=JobKind.BATCH, created_by="U1", hold=hold
    )
    assert created
    return draft_id, job_id


async def states(store: Store, job_id: str) -> dict[int, str]:
    return {r.idx: r.state.value for r in await store.recipients(job_id)}


async def count(store: Store, table: str) -> int:
    return await store.read(lambda conn: conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


class WriteCounter:
    """Counts the store's transactions (its `write` calls) from now on."""

    def __init__(self, store: Store) -> None:
        self.n = 0
        write = store.write

        async def counting(fn):
            self.n += 1
            return await write(fn)

        store.write = counting  # type: ignore[method-assign]


def test_confirming_copies_the_draft_into_the_job_once(database):
    async def go():
        store = await open_store(database)
        draft_id, job_id = await confirmed(store, 5)
        draft = await store.get_draft(draft_id)
        assert (draft.state, draft.job_id, draft.count) == (DraftState.CONFIRMED, job_id, 5)
        assert await states(store, job_id) == dict.fromkeys(range(5), "queued")
        pending = await store.pending(job_id)
        assert [(p.idx, p.number.e164, p.message) for p in pending] == [
            (i, f"+6581{i:06d}", f"Hi P{i}") for i in range(5)
        ]
        again = await store.claim_draft_into_job(draft_id, kind=JobKind.BATCH, created_by="U1")
        assert again == (job_id, False)
        assert await count(store, "jobs") == 1
        await store.complete_job(job_id)
        assert await count(store, "draft_rows") == 0  # the copy is the job's: the draft's goes at the end
        assert (await store.get_job(job_id)).state == "done"
        await store.close()

    run(go())


def test_a_held_confirmation_creates_the_job_now_and_its_recipients_after_the_answer(database):
    """Confirmed with a hold (the Slack confirmation, before its ack): the job exists, with no
    recipients and nobody else's to start; the copy after the ack fills it once and lets it go."""

    async def go():
        store = await open_store(database)
        draft_id, job_id = await confirmed(store, 7, hold=("A", 15))
        assert (await store.get_draft(draft_id)).job_id == job_id
        assert await store.recipients(job_id) == []
        assert await store.claim_jobs("sender", time.time() + 15, limit=5) == []  # held by A
        assert await store.copy_draft_rows(job_id, "A") == 7
        assert await store.copy_draft_rows(job_id, "A") == 0  # once
        assert [r.idx for r in await store.recipients(job_id)] == list(range(7))
        (claim,) = await store.claim_jobs("sender", time.time() + 15, limit=5)
        assert claim.job_id == job_id and not claim.recovered
        start = await store.start_job(job_id)
        assert start.copied == 0 and [p.idx for p in start.pending] == list(range(7))
        await store.close()

    run(go())


def test_a_held_job_whose_copy_never_came_is_filled_by_the_sender_that_takes_it_over(database):
    """The confirming process died between its ack and the copy: when its hold ends, the sender claims
    the job and its start copies the recipients, once; a late copy by the dead holder changes nothing."""

    async def go():
        now = [1000.0]
        store = await open_store(database)
        store.clock = lambda: now[0]
        _, job_id = await confirmed(store, 5, hold=("A", 15))
        assert await store.claim_jobs("B", now[0] + 15, limit=1) == []
        now[0] += 16
        (claim,) = await store.claim_jobs("B", now[0] + 15, limit=1)
        assert claim.job_id == job_id and claim.recovered
        start = await store.start_job(job_id)
        assert start.copied == 5 and [p.idx for p in start.pending] == list(range(5))
        assert (await store.start_job(job_id)).copied == 0
        assert await store.copy_draft_rows(job_id, "A") == 0
        assert (await store.get_job(job_id)).owner == "B"  # A's late copy did not release B's claim
        assert len(await store.recipients(job_id)) == 5
        await store.close()

    run(go())


def test_racing_confirmations_create_one_job(database):
    """Double clicks, Slack's retries, two replicas: however many confirm at once, one job."""

    async def go():
        stores = [await open_store(database) for _ in range(4)]
        draft_id = await stores[0].create_draft("U1")
        await stores[0].fill_draft(draft_id, {}, people(50))
        results = await asyncio.gather(
            *(s.claim_draft_into_job(draft_id, kind=JobKind.BATCH, created_by="U1") for s in stores)
        )
        assert len({job_id for job_id, _ in results}) == 1
        assert sum(created for _, created in results) == 1
        assert await count(stores[0], "jobs") == 1 and await count(stores[0], "recipients") == 50
        for s in stores:
            await s.close()

    run(go())


def test_an_idempotency_key_starts_one_job_across_processes(database):
    async def go():
        a, b = await open_store(database), await open_store(database)
        one = people(1)
        results = await asyncio.gather(
            a.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=one, source_key="view:V1"),
            b.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=one, source_key="view:V1"),
        )
        assert results[0][0].id == results[1][0].id
        assert sorted(created for _, created in results) == [False, True]
        await a.close()
        await b.close()

    run(go())


def test_jobs_created_at_once_share_commits_and_keys_still_hold(database):
    """Group commit: a burst of jobs is a few transactions, not one each; a key taken inside the same
    group (Slack delivering one command twice at once) still starts one job, and the rest are unharmed."""

    async def go():
        store = await open_store(database)
        writes = WriteCounter(store)
        keys = [f"trigger:T{i}" for i in range(40)] + ["trigger:T7", "trigger:T7"]
        results = await asyncio.gather(
            *(
                store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1), source_key=k)
                for k in keys
            )
        )
        assert [created for _, created in results] == [True] * 40 + [False, False]
        assert results[40][0].id == results[41][0].id == results[7][0].id
        assert await count(store, "jobs") == 40 and await count(store, "recipients") == 40
        # one lone write, then the rest together; a taken key costs one write per job of its group
        assert writes.n <= 2 + 41 + 1, writes.n
        assert len({j.id for j, _ in results}) == 40
        writes.n = 0
        await asyncio.gather(
            *(
                store.create_job(
                    kind=JobKind.SINGLE, created_by="U1", recipients=people(1), source_key=f"k{i}"
                )
                for i in range(40)
            )
        )
        assert writes.n <= 2, writes.n
        await store.close()

    run(go())


def test_checks_run_inside_the_shared_commit_and_decide_for_their_own_job_only(database):
    """A burst's checks are decided in the transaction it shares, together (one call for the group, not
    one per job): a refusal refuses that job only, an existing job found by the check is returned
    instead, the others are created, and it is still one or two writes for the burst."""

    class Refused(Exception):
        pass

    groups: list[int] = []
    first = None

    @dataclass(frozen=True)
    class Check:
        i: int

        @classmethod
        def decide(cls, conn, checks):
            assert conn.execute(sa.select(sa.func.count()).select_from(rtab)).scalar_one() >= 1
            groups.append(len(checks))
            return [Refused(c.i) if c.i % 10 == 3 else first if c.i % 10 == 5 else None for c in checks]

    async def go():
        nonlocal first
        store = await open_store(database)
        first, _ = await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1))
        writes = WriteCounter(store)
        results = await asyncio.gather(
            *(
                store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1), check=Check(i))
                for i in range(30)
            ),
            return_exceptions=True,
        )
        refused = [i for i, r in enumerate(results) if isinstance(r, Refused)]
        found = [i for i, r in enumerate(results) if not isinstance(r, Exception) and r == (first, False)]
        created = [r[0].id for r in results if not isinstance(r, Exception) and r[1]]
        assert refused == [3, 13, 23] and found == [5, 15, 25]
        assert len(set(created)) == 24
        assert await count(store, "jobs") == 25 and await count(store, "recipients") == 25
        assert writes.n <= 2, writes.n
        assert sum(groups) == 30 and len(groups) == writes.n, groups  # one decision per group
        await store.close()

    run(go())


def test_only_the_lease_holder_moves_rows_and_only_queued_ones(database):
    async def go():
        store = await open_store(database)
        _, job_id = await confirmed(store, 6)
        until = time.time() + 10
        assert [c.job_id for c in await store.claim_jobs("A", until, limit=5)] == [job_id]
        assert await store.claim_jobs("B", until, limit=5) == []  # held by A
        assert await store.mark_in_flight(job_id, [0, 1], owner="B") == 0  # not B's to send
        assert await store.mark_in_flight(job_id, [0, 1], owner="A", fence=2) == 2
        assert await store.mark_in_flight(job_id, [1, 2], owner="A") == 1  # 1 is already in flight
        assert await store.mark_in_flight(job_id, [3], owner="A", fence=11) == 0  # lease ends too soon
        assert await store.withdraw(job_id, [2]) == 1
        assert await states(store, job_id) == {0: "in_flight", 1: "in_flight", 2: "queued", 3: "queued",
                                               4: "queued", 5: "queued"}  # fmt: skip
        await store.close()

    run(go())


def test_the_workers_mark_moves_all_or_nothing_and_says_why(database):
    """An opted-out number or a pause stops the whole mark: nothing is left in flight that will not be
    sent (it would be reported unknown after a stop), and the opted-out recipient fails at once."""
    from bot.core.optouts import OptOuts
    from bot.core.store import Control

    async def go():
        store = await open_store(database)
        _, job_id = await confirmed(store, 6)
        until = time.time() + 10
        await store.claim_jobs("A", until, limit=5)
        rows = await store.recipients(job_id)
        await OptOuts(store).add([rows[4].number.e164], by="U1", source="test")
        first = await store.mark_for_send(job_id, [0, 1], owner="A", fence=2, optouts="NOTIFY")
        opted = await store.mark_for_send(job_id, [2, 3, 4, 5], owner="A", fence=2, optouts="NOTIFY")
        after_opt_out = await states(store, job_id)
        await store.set_control(job_id, Control.PAUSE, "U2")
        paused = await store.mark_for_send(job_id, [2, 3, 5], owner="A", fence=2, optouts="NOTIFY")
        after_pause = await states(store, job_id)
        rows = await store.recipients(job_id)
        await store.close()
        return first, opted, after_opt_out, paused, after_pause, rows

    first, opted, after_opt_out, paused, after_pause, rows = run(go())
    assert (first.moved, first.opted_out, first.control) == (2, [], None)
    assert (opted.moved, opted.opted_out, opted.control) == (0, [4], None)
    expected = {0: "in_flight", 1: "in_flight", 2: "queued", 3: "queued", 4: "failed", 5: "queued"}
    assert after_opt_out == expected and rows[4].code == "OPTED_OUT"
    assert (paused.moved, paused.control) == (0, Control.PAUSE) and after_pause == expected


def test_an_expired_job_lease_is_taken_over_and_flagged_recovered(database):
    async def go():
        now = [1000.0]
        store = await open_store(database)
        store.clock = lambda: now[0]
        _, job_id = await confirmed(store, 3)
        (claim,) = await store.claim_jobs("A", now[0] + 15, limit=1)
        assert not claim.recovered
        now[0] += 10
        assert await store.renew_jobs("A", now[0] + 15, [job_id]) == {job_id}
        assert await store.claim_jobs("B", now[0] + 15, limit=1) == []
        now[0] += 16  # A stopped renewing
        (taken,) = await store.claim_jobs("B", now[0] + 15, limit=1)
        assert taken.job_id == job_id and taken.recovered
        assert await store.renew_jobs("A", now[0] + 15, [job_id]) == set()  # A must stop
        await store.close()

    run(go())


def test_the_sender_lease_has_one_holder_and_passes_on_after_it_ends(database):
    async def go():
        now = [1000.0]
        a, b = await open_store(database), await open_store(database)
        a.clock = b.clock = lambda: now[0]
        assert await a.acquire_lease("sender", "A", 15) == 1015.0
        assert await b.acquire_lease("sender", "B", 15) is None
        now[0] += 5
        assert await a.acquire_lease("sender", "A", 15) == 1020.0  # renewed
        await a.release_lease("sender", "A", hold=1.1)
        assert await b.acquire_lease("sender", "B", 15) is None  # the hand-over gap
        now[0] += 1.2
        assert await b.acquire_lease("sender", "B", 15) == now[0] + 15
        await a.close()
        await b.close()

    run(go())


def test_recovery_reports_in_flight_unknown_and_resends_none_of_them(database):
    async def go():
        store = await open_store(database)
        _, job_id = await confirmed(store, 6)
        await store.mark_in_flight(job_id, [0, 1, 2])
        await store.close()  # the process dies with three requests in flight and three never sent

        store = await open_store(database)
        assert await store.in_flight_to_unknown(job_id) == 3
        assert [p.idx for p in await store.pending(job_id)] == [3, 4, 5]
        summary = await store.summary(job_id)
        assert (summary.unknown, summary.pending, summary.total) == (3, 3, 6)
        await store.close()

    run(go())


def test_a_stopped_job_stores_every_unsent_recipient_as_failed(database):
    async def go():
        store = await open_store(database)
        _, job_id = await confirmed(store, 5)
        await store.mark_in_flight(job_id, [0])
        assert await store.queued_to_failed(job_id, "Not sent: stopped.") == 4
        assert await states(store, job_id) == {
            0: "in_flight",
            1: "failed",
            2: "failed",
            3: "failed",
            4: "failed",
        }
        failed = await store.recipients(job_id, [RecipientState.FAILED])
        assert all(r.code == "NOT_SENT" and r.retryable for r in failed)
        await store.fail_unsent(job_id, 0, "INVALID", "x")  # in flight: not touched
        assert (await states(store, job_id))[0] == "in_flight"
        await store.close()

    run(go())


def test_the_daily_budget_counts_estimates_until_billed_and_not_unsent(database):
    async def go():
        store = await open_store(database)
        _, job_id = await confirmed(store, 10)  # 2 segments each
        assert await store.segments_today("U1") == 20
        await store.mark_in_flight(job_id, range(4))
        await store.queued_to_failed(job_id, "Not sent.")
        assert await store.segments_today("U1") == 8  # failed unsent recipients cost nothing
        await store.close()

    run(go())


def test_texts_today_count_what_may_have_reached_each_number_in_other_jobs(database):
    """The daily cap's count: accepted, unknown and in-flight texts of other jobs, per number; over more
    numbers than one statement's chunk on SQLite, and as one array parameter on PostgreSQL."""

    async def go():
        store = await open_store(database)
        _, first = await confirmed(store, 1200)  # numbers 0..1199
        await store.mark_in_flight(first, range(0, 1200))
        await store.record_outcomes(
            first, [Outcome(i, "", Status.ACCEPTED if i % 3 else Status.FAILED) for i in range(0, 1199)]
        )  # 1199 stays in flight; every third (i % 3 == 0) failed: not counted
        _, second = await confirmed(store, 3)  # numbers 0..2 again, queued: not counted
        asked = [f"+6581{i:06d}" for i in range(0, 1300)]  # 1200..1299 never texted
        counts = await store.texts_today(asked)
        expected = {f"+6581{i:06d}": 1 for i in range(1200) if i % 3 or i == 1199}
        assert counts == expected
        assert await store.texts_today(asked, exclude_job=first) == {}
        await store.mark_in_flight(second, [1])
        assert await store.texts_today(["+6581000000", "+6581000001"]) == {"+6581000001": 2}
        assert await store.texts_today(["+6581000001"], exclude_job=first) == {"+6581000001": 1}
        await store.close()

    run(go())


def test_discarding_a_draft_drops_its_recipients_and_it_cannot_be_confirmed(database):
    async def go():
        store = await open_store(database)
        draft_id = await store.create_draft("U1")
        await store.fill_draft(draft_id, {}, people(3))
        assert await store.discard_draft(draft_id)
        assert await count(store, "draft_rows") == 0
        with pytest.raises(LookupError):
            await store.claim_draft_into_job(draft_id, kind=JobKind.BATCH, created_by="U1")
        assert await count(store, "jobs") == 0
        await store.close()

    run(go())


def test_the_slack_layer_keeps_threads_and_posts_in_its_own_tables(database):
    from bot.slack.state import SlackState

    async def go():
        store = await open_store(database)
        state = SlackState(store)
        await state.remember_thread("C1", "+6581000000", "1.1")
        await state.remember_thread("C1", "+6581000000", "1.2")
        assert await state.thread_for("C1", "+6581000000") == "1.2"
        assert await state.thread_for("C2", "+6581000000") is None
        assert (await state.post("J1")).thread_ts is None
        await state.save_post("J1", post_error="not_in_channel")
        await state.save_post("J1", thread_ts="2.1", parent_ts="2.1")
        post = await state.post("J1")
        assert (post.thread_ts, post.parent_ts, post.post_error, post.thread_existing) == (
            "2.1",
            "2.1",
            "not_in_channel",
            False,
        )
        # the same fields again, for another job and the first: one statement, built once, each row its own
        await state.save_post("J2", thread_ts="3.1", parent_ts="3.0")
        await state.save_post("J1", thread_ts="2.2", parent_ts="2.1")
        assert len(state._upserts) == 3  # threads; posts' post_error; posts' thread_ts and parent_ts
        one, two = await state.post("J1"), await state.post("J2")
        assert (one.thread_ts, one.post_error, two.thread_ts, two.parent_ts, two.post_error) == (
            "2.2",
            "not_in_channel",
            "3.1",
            "3.0",
            None,
        )
        await store.close()

    run(go())


def test_runs_of_consecutive_indices():
    assert _runs([0, 1, 2, 5, 6, 9]) == [(0, 2), (5, 6), (9, 9)]
    assert _runs([7]) == [(7, 7)]


def test_a_checkpoint_leaves_nothing_open_for_the_next_write(database):
    """SQLite's checkpoint answers with a row; unread, it kept a statement open and the next commit
    failed ("cannot commit transaction - SQL statements in progress")."""

    async def go():
        store = await open_store(database)
        await store.checkpoint()
        job, created = await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1))
        assert created and (await store.get_job(job.id)).total == 1
        await store.close()

    run(go())


def test_a_database_error_names_no_number_or_message(database):
    """Errors are logged (the worker's, Bolt's error handler): their text must not carry the statement's
    parameters, which hold full numbers and message text."""

    async def go():
        store = await open_store(database)
        job, _ = await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1))
        duplicate = sa.insert(rtab).values(
            job_id=job.id, idx=0, e164="+6581000000", country_code=65, national="81000000", region="SG",
            message="Secret text", state="queued", updated_at=1.0,
        )  # fmt: skip
        with pytest.raises(sa.exc.IntegrityError) as caught:
            await store.write(lambda conn: conn.execute(duplicate))
        await store.close()
        return str(caught.value)

    text = run(go())
    assert "INSERT INTO recipients" in text
    assert "6581000000" not in text and "Secret text" not in text


def test_a_bursts_single_sends_are_checked_together_and_each_gets_its_own_answer(database):
    """The checks of single sends created at once: a recorded request finds its job (even for a number
    opted out since), an opt-out refuses the texts of its scope only (unless overridden), the daily cap
    refuses a number that had its texts, the rest pass; the whole group in the same few statements
    whatever its size."""
    from bot.core.consent import DailyCapReached
    from bot.core.optouts import OptedOut, OptOuts, Scope
    from bot.core.service import SingleSendCheck

    def number(i: int) -> PhoneNumber:
        return PhoneNumber(f"+6581{i:06d}", 65, f"81{i:06d}", "SG")

    async def go():
        store = await open_store(database)
        recorded, _ = await store.create_job(
            kind=JobKind.SINGLE, created_by="U1", recipients=[NewRecipient(number(0), "Hi")], source_key="K1"
        )
        _, texted = await confirmed(store, 4)  # numbers 0..3; number 3 gets one text in flight today
        await store.mark_in_flight(texted, [3])
        optouts = OptOuts(store)
        await optouts.add([number(0).e164], scope=Scope.ALL, by="U1", source="test")
        await optouts.add([number(1).e164], scope=Scope.MARKETING, by="U1", source="test")
        since = day_start(store.clock())

        def check(i: int, type: str | None = None, **kw) -> SingleSendCheck:
            fields = {"source_key": None, "overridden": False, "cap": 0, "since": since} | kw
            return SingleSendCheck(number=number(i), type=type, **fields)

        checks = [
            check(0, source_key="K1"),  # recorded before the opt-out: its job
            check(0, "NOTIFY"),
            check(0, "NOTIFY", overridden=True),
            check(1, "MKT"),
            check(1, "NOTIFY"),
            check(3, cap=1),
            check(3, cap=2),
            check(2, "MKT", source_key="K2", cap=1),
        ]

        def decide(conn, checks):
            statements = []
            sa.event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
            return SingleSendCheck.decide(conn, checks), len(statements)

        answers, statements = await store.write(lambda conn: decide(conn, checks))
        many = [check(i % 4, ("MKT", "NOTIFY", None)[i % 3], cap=5, source_key=f"M{i}") for i in range(300)]
        _, statements_for_many = await store.write(lambda conn: decide(conn, many))
        await store.close()
        return recorded, answers, statements, statements_for_many

    recorded, answers, statements, statements_for_many = run(go())
    assert answers[0] == recorded
    assert isinstance(answers[1], OptedOut) and answers[1].optout.e164 == "+6581000000"
    assert answers[2] is None
    assert isinstance(answers[3], OptedOut) and answers[3].optout.e164 == "+6581000001"
    assert answers[4] is None
    assert isinstance(answers[5], DailyCapReached)
    assert answers[6] is None and answers[7] is None
    # the keys, the opt-outs of each type asked about, the texts since the day's start
    assert statements == 1 + 3 + 1, statements
    assert statements_for_many == 1 + 3 + 1, statements_for_many


def test_a_confirmation_with_the_drafts_count_reads_none_of_its_rows(database):
    """Before Slack's ack, nothing may grow with the list: given the count the draft was stored with,
    the confirmation's transaction does not touch the draft's rows (the copy comes after the ack)."""

    async def go():
        store = await open_store(database)
        draft_id = await store.create_draft("U1")
        assert await store.fill_draft(draft_id, {"user_id": "U1"}, people(30))
        found = await store.get_draft(draft_id)
        statements: list[str] = []
        write = store.write

        async def recording(fn):
            def traced(conn):
                sa.event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
                return fn(conn)

            return await write(traced)

        store.write = recording  # type: ignore[method-assign]
        job_id, created = await store.claim_draft_into_job(
            draft_id, kind=JobKind.BATCH, created_by="U1", hold=("me", 60.0), count=found.count
        )
        store.write = write  # type: ignore[method-assign]
        assert created
        total = (await store.get_job(job_id)).total
        assert await store.copy_draft_rows(job_id, "me") == 30
        await store.close()
        return statements, total

    statements, total = run(go())
    assert total == 30
    assert statements and not [s for s in statements if "draft_rows" in s], statements


def test_history_of_one_number_finds_its_rows_in_the_users_jobs_newest_first(database):
    """The number's own row in each of the user's jobs (single or not), newest job first, at most
    `limit`; other users' jobs and other numbers are left out."""

    async def go():
        store = await open_store(database)
        clock = [1_000.0]
        store.clock = lambda: clock[0]
        made = []
        for user, n in (("U1", 3), ("U1", 1), ("U2", 2), ("U1", 2)):
            clock[0] += 10
            job, _ = await store.create_job(kind=JobKind.FANOUT, created_by=user, recipients=people(n))
            made.append(job.id)
        target = people(1)[0].number.e164  # everyone's first recipient
        found = await store.history("U1", 10, e164=target)
        limited = await store.history("U1", 2, e164=target)
        nobody = await store.history("U1", 10, e164="+6581999999")
        await store.close()
        return made, found, limited, nobody, target

    made, found, limited, nobody, target = run(go())
    assert [job.id for job, _ in found] == [made[3], made[1], made[0]]  # U1's, newest first; not U2's
    assert all(row.number.e164 == target and row.job_id == job.id for job, row in found)
    assert [job.total for job, _ in found] == [2, 1, 3]
    assert [job.id for job, _ in limited] == [made[3], made[1]]
    assert nobody == []


def test_a_database_out_of_reach_is_told_apart_from_a_wrong_statement():
    """`db.cut_off` says which driver errors mean "not now" (a retry may succeed once the database is
    back) rather than "not this"; the store raises `DatabaseUnreachable` for those, here for a real
    refused connect of asyncpg, and nothing else."""

    class Orig(Exception):
        def __init__(self, sqlstate: str | None) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    def dbapi(state: str | None, invalidated: bool = False) -> sa.exc.DBAPIError:
        return sa.exc.DBAPIError("SELECT 1", {}, Orig(state), connection_invalidated=invalidated)

    assert db.cut_off(ConnectionRefusedError(111, "refused")) and db.cut_off(TimeoutError())
    assert all(db.cut_off(dbapi(state)) for state in ("08006", "57P01", "57P03", "53300"))
    assert db.cut_off(dbapi(None, invalidated=True))
    assert not any(db.cut_off(dbapi(state)) for state in ("23505", "42P01", "40001", None))
    assert not db.cut_off(sa.exc.OperationalError("x", {}, sqlite3.OperationalError("database is locked")))
    assert not db.cut_off(ValueError("a bug"))

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go():
        store = Store(db.create_engine(db.database_url(f"postgresql://u@127.0.0.1:{port}/none", "")))
        try:
            await store.write(lambda conn: conn.execute(sa.select(1)))
        except Exception as exc:
            return exc
        finally:
            await store.close()
        return None

    refused = run(go())
    assert isinstance(refused, db.DatabaseUnreachable) and db.unreachable(refused), repr(refused)
    assert "ConnectionRefusedError" in str(refused) and isinstance(refused.__cause__, OSError)


def test_the_look_for_untold_finishes_reads_only_the_unreported_rows(tmp_path):
    """The sending replica looks every few seconds for finishes nobody was told. On SQLite that look
    must search the index of unreported rows (a handful), not the index on `state`, where `done` is
    nearly every row of the table: the plan SQLite makes for the statement `claim_unreported` runs."""
    path = tmp_path / "plan.sqlite3"
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, params, context, executemany):
        seen.append((statement, params))

    async def go():
        store = await open_store(f"sqlite:///{path}")
        for _ in range(3):
            job, _ = await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=people(1))
            await store.complete_job(job.id)
        sa.event.listen(store.engine, "before_cursor_execute", record)
        claimed = await store.claim_unreported("me", time.time() + 10, since=0, limit=5)
        sa.event.remove(store.engine, "before_cursor_execute", record)
        await store.close()
        return claimed

    claimed = run(go())
    select, params = next((s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT"))
    with sqlite3.connect(path) as conn:
        found = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + select, params))
    assert len(claimed) == 3
    assert "USING INDEX jobs_unreported" in found and "jobs_unfinished" not in found, found
