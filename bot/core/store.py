"""Storage: jobs, per-recipient state (which is also the audit log), drafts, leases.

SQLAlchemy Core over SQLite (on a thread of its own) or PostgreSQL (asyncpg): no call blocks the event loop.
Every state change that must survive a crash is committed before the provider is called. Several
processes may share one PostgreSQL database: idempotency keys are unique constraints, a recipient moves
to `in_flight` only through a statement that moves rows still queued of a job the caller holds the lease
of, and leases (`claim_jobs`, `acquire_lease`) decide which process does what.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from bot.sms.phone import PhoneNumber
from bot.sms.receipts import Delivery

from . import db
from .optouts import opted_out_reason
from .schema import draft_rows, drafts, jobs, leases, suppressions
from .schema import recipients as rtab

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class JobKind(StrEnum):
    SINGLE = "single"  # one SendMessageToGlobe
    BATCH = "batch"  # BatchSendMessageToGlobe, chunks of ≤ 1,000 at ≤ 1 call/s
    FANOUT = "fanout"  # many single sends at the account's single-send rate


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # someone paused it: nobody runs it until it is resumed or cancelled
    DONE = "done"


class RecipientState(StrEnum):
    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    ACCEPTED = "accepted"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Control(StrEnum):
    """What someone asked of a job; the sending replica obeys before its next request."""

    PAUSE = "pause"
    CANCEL = "cancel"


class DraftState(StrEnum):
    CHECKING = "checking"
    OPEN = "open"
    CONFIRMED = "confirmed"
    DISCARDED = "discarded"


T = TypeVar("T")

FINAL_STATES = (RecipientState.ACCEPTED, RecipientState.FAILED, RecipientState.UNKNOWN)

CANCELLED = "CANCELLED"  # the code of recipients not sent because their job was cancelled

UNKNOWN_AFTER_STOP = (
    "The bot stopped while this request was in flight; it may or may not have been sent. It was not resent."
)


@dataclass(frozen=True, slots=True)
class NewRecipient:
    number: PhoneNumber
    message: str
    segments: int | None = None


class Pending(NamedTuple):
    idx: int
    number: PhoneNumber
    message: str


@dataclass
class Job:
    id: str
    kind: JobKind
    state: JobState
    created_by: str
    channel_id: str | None
    response_url: str | None
    sender_id: str | None
    type: str | None
    task_id: str | None
    validity: int | None
    total: int
    meta: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    owner: str | None = None
    lease_until: float | None = None
    source_key: str | None = None
    control: Control | None = None  # what someone asked of it while it runs (pause, cancel)
    control_by: str | None = None  # who (a Slack user id) paused, resumed or cancelled it last
    run_at: float | None = None  # nobody claims it before then (scheduled, or waiting for send windows)
    reported_at: float | None = None  # when its finish was told to someone (None: not yet, or running)
    receipts_changed: int = 0  # delivery receipts matched for it (Store.receipts_shown names the last shown)
    receipts_unshown: float | None = None  # since when receipts changed it and were not shown (None: shown)


@dataclass
class RecipientRow:
    job_id: str
    idx: int
    number: PhoneNumber
    message: str
    state: RecipientState
    message_id: str | None
    segments: int | None
    code: str | None
    error: str | None
    request_id: str | None
    country: str | None
    carrier: str | None
    retryable: bool
    updated_at: float
    delivery: Delivery | None = None  # what the provider said after accepting (None: no receipt yet)
    delivery_code: str | None = None
    delivery_error: str | None = None
    delivered_at: float | None = None
    reconciled: bool = False  # reported unknown at first; the provider's receipt settled it


@dataclass
class Summary:
    total: int
    accepted: int
    failed: int
    unknown: int
    pending: int
    segments: int
    cancelled: int = 0  # not sent because the job was cancelled (counted apart from `failed`)
    held: int = 0  # of the pending: marketing texts waiting for their recipient's send window
    next_window: float | None = None  # when the first of those windows opens
    # Of the accepted: what the receipts said (the rest of them are waiting for one).
    delivered: int = 0
    undelivered: int = 0  # not delivered, expired included
    # Accepted ones that were unknown until the provider's receipt (or QueryMessage) settled them.
    reconciled_delivered: int = 0
    reconciled_undelivered: int = 0

    @property
    def waiting(self) -> int:
        """Accepted, no receipt yet."""
        return self.accepted - self.delivered - self.undelivered

    @property
    def reconciled(self) -> int:
        return self.reconciled_delivered + self.reconciled_undelivered


@dataclass(frozen=True)
class DraftRecord:
    """A draft as stored: `head` is what the confirmation shows (with `count`, not the list itself)."""

    id: str
    user_id: str
    state: DraftState
    head: dict[str, Any]
    job_id: str | None

    @property
    def count(self) -> int:
        return int(self.head.get("count") or 0)


@dataclass
class JobStart:
    """A job as its process starts (or resumes) it: `lost` recipients were in flight and are now unknown."""

    job: Job
    lost: int
    pending: list[Pending]
    rows: list[RecipientRow]  # every recipient, for single-recipient jobs only
    copied: int = 0  # recipients this start copied from the job's draft (its confirming process died)


class JobCheck(Protocol):
    """What decides, inside the transaction a burst of new jobs shares, whether each may be created.

    The store calls `decide` once per group commit for all the group's checks of one class, so that a
    class can look up the whole group in a few statements instead of a few for each job (SQLite's one
    thread runs them while the event loop waits for its answers)."""

    @classmethod
    def decide(cls, conn: sa.Connection, checks: Sequence[Self]) -> Sequence[Job | Exception | None]:
        """One answer per check, in order: None (create that job), an existing Job to use instead, or the
        exception that refuses it (that job only). Raising fails the whole group."""
        ...


@dataclass(slots=True)
class _NewJob:
    """A job waiting for the group commit. `done` gets True (committed), False (its key was taken), the
    existing Job its `check` found, or the exception the check raised."""

    job: Job
    rows: list[dict[str, Any]]
    check: JobCheck | None
    done: asyncio.Future[bool | Job]


@dataclass(frozen=True)
class Marked:
    """What `mark_for_send` did: `moved` recipients are in flight (all or none of those asked for)."""

    moved: int  # all of those asked for, or none (what moved of them was put back)
    opted_out: list[int]  # failed just now: opted out since the job was prepared (nothing moved)
    control: Control | None  # someone asked to pause or cancel the job (nothing moved)


@dataclass(frozen=True)
class Claim:
    """A job this process now holds the lease of; `recovered` when another process held it before."""

    job_id: str
    recovered: bool


class Store:
    """Every method is one transaction (or one read), run as a plain function over a synchronous
    SQLAlchemy connection: on SQLite, whole, on a thread of its own (one hand-off per call, not one per
    driver call); on PostgreSQL through `AsyncConnection.run_sync` (asyncpg, no threads). Nothing of it
    runs on the event loop's thread for SQLite, and no call blocks the loop on either."""

    def __init__(self, engine: db.Engine, *, clock: Callable[[], float] = time.time) -> None:
        """`engine` from `db.create_engine`: SQLite's is synchronous, PostgreSQL's asyncio."""
        self.engine = engine
        self.clock = clock
        self.dialect = engine.dialect.name
        self._sync: sa.Engine | None = engine if isinstance(engine, sa.Engine) else None
        self._async: AsyncEngine | None = None if isinstance(engine, sa.Engine) else engine
        self._thread: _SqliteThread | None = None
        self._new_jobs: list[_NewJob] = []
        self._job_writer: asyncio.Task[None] | None = None
        # Seconds after acceptance that the QueryMessage sweep first asks about a message with no
        # receipt (None: never); bot/core/deliveries.py sets it from RECEIPTS_CHECK_AFTER.
        self.first_check: float | None = None
        if self._sync is not None:
            assert self.dialect == "sqlite", "a synchronous engine is for SQLite only"
            self._thread = _SqliteThread()

    async def close(self) -> None:
        if self._thread is not None and self._sync is not None:
            await self._thread.run(self._sync.dispose)
            await self._thread.stop()
        if self._async is not None:
            await self._async.dispose()

    async def write(self, fn: Callable[[sa.Connection], T]) -> T:
        """`fn(conn)` in one transaction, committed when it returns (rolled back if it raises). Other layers
        use it for tables of their own (the Slack layer's, bot/slack/state.py). A database out of reach
        raises `db.DatabaseUnreachable` (whether a commit whose answer was lost took effect is unknown)."""
        with _reaching():
            if self._thread is not None:
                return await self._thread.run(self._sync_write, fn)
            assert self._async is not None
            async with self._async.begin() as conn:
                return await conn.run_sync(fn)

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """`fn(conn)` for reading (nothing it does is committed); `db.DatabaseUnreachable` as `write`."""
        with _reaching():
            if self._thread is not None:
                return await self._thread.run(self._sync_read, fn)
            assert self._async is not None
            async with self._async.connect() as conn:
                return await conn.run_sync(fn)

    def _sync_write(self, fn: Callable[[sa.Connection], T]) -> T:
        assert self._sync is not None
        with self._sync.begin() as conn:
            return fn(conn)

    def _sync_read(self, fn: Callable[[sa.Connection], T]) -> T:
        assert self._sync is not None
        with self._sync.connect() as conn:
            return fn(conn)

    async def checkpoint(self) -> None:
        """SQLite: copy the WAL into the database file now, without waiting for readers (a quiet moment)."""
        if self.dialect == "sqlite":
            await self.read(lambda conn: conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall())

    async def ping(self) -> bool:
        return await self.read(lambda conn: conn.execute(sa.select(1)).scalar() == 1)

    # ------------------------------------------------------------------ jobs
    async def create_job(
        self,
        *,
        kind: JobKind,
        created_by: str,
        recipients: Sequence[NewRecipient],
        source_key: str | None = None,
        check: JobCheck | None = None,
        **fields: Any,
    ) -> tuple[Job, bool]:
        """Create a job and its recipients in one transaction. With a `source_key` already used, return
        that job instead (`created` False): a double submit, a retry, or another replica's copy of the
        same request starts one job (the key is a unique column: the database decides).

        `check` (see `JobCheck`) is decided in that transaction just before the insert: an existing job
        to use instead (`created` False), an exception that refuses it (nothing is written; the exception
        is raised here), or None. The checks of a burst of requests are decided together, in the commit
        they share."""
        now = self.clock()
        job = _new_job(kind, created_by, source_key, len(recipients), now, **fields)
        rows = [
            _recipient_values(job.id, i, r.number, r.message, r.segments, now)
            for i, r in enumerate(recipients)
        ]
        result = await self._insert_job(job, rows, check)
        if result is True:
            return job, True
        if isinstance(result, Job):
            return result, False
        existing = await self._job_by_key(source_key)
        if existing is None:
            raise RuntimeError(f"job {job.id} was refused as a duplicate, but no job has its key")
        return existing, False

    async def _insert_job(self, job: Job, rows: list[dict[str, Any]], check: JobCheck | None) -> bool | Job:
        """Group commit: jobs created while an earlier write is under way share the next transaction (a
        burst of 200 slash commands is a few commits, not 200). See _NewJob for the result."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool | Job] = loop.create_future()
        self._new_jobs.append(_NewJob(job, rows, check, done))
        if self._job_writer is None:
            self._job_writer = loop.create_task(self._write_new_jobs())
        return await done

    async def _write_new_jobs(self) -> None:
        group: list[_NewJob] = []
        try:
            while self._new_jobs:
                group, self._new_jobs = self._new_jobs, []
                try:
                    checked = await self.write(lambda conn, group=group: self._insert_jobs(conn, group))
                except IntegrityError:  # a taken key somewhere: each on its own, to tell which
                    for item in group:
                        try:
                            one = await self.write(lambda conn, item=item: self._insert_jobs(conn, [item]))
                        except IntegrityError as exc:
                            if item.job.source_key is None:  # not a taken key: a real error
                                _settle(item.done, None, exc)
                            else:
                                _settle(item.done, False, None)
                        except Exception as exc:
                            _settle(item.done, None, exc)
                        else:
                            _settle_new(item, one.get(0))
                except Exception as exc:
                    for item in group:
                        _settle(item.done, None, exc)
                else:
                    for i, item in enumerate(group):
                        _settle_new(item, checked.get(i))
        finally:
            self._job_writer = None
            for item in group + self._new_jobs:  # none left undone, unless cancelled at shutdown
                item.done.cancel()
            self._new_jobs = []

    def _insert_jobs(self, conn: sa.Connection, group: list[_NewJob]) -> dict[int, Job | Exception]:
        """Run the group's checks, then insert the jobs that passed. Returns what the checks decided for
        the others (by position in the group)."""
        decided: dict[int, Job | Exception] = {}
        by_class: dict[type[JobCheck], list[int]] = {}
        for i, item in enumerate(group):
            if item.check is not None:
                by_class.setdefault(type(item.check), []).append(i)
        for kind, positions in by_class.items():
            answers = kind.decide(conn, [group[i].check for i in positions])  # type: ignore[misc]
            for i, answer in zip(positions, answers, strict=True):
                if answer is not None:
                    decided[i] = answer
        passed = [item for i, item in enumerate(group) if i not in decided]
        if passed:
            conn.execute(_INSERT_JOB, [_job_values(item.job) for item in passed])
            rows = [row for item in passed for row in item.rows]
            if rows:
                conn.execute(_INSERT_RECIPIENTS, rows)
            self._announce(conn)
        return decided

    async def claim_draft_into_job(
        self,
        draft_id: str,
        *,
        kind: JobKind,
        created_by: str,
        hold: tuple[str, float] | None = None,
        count: int | None = None,
        **fields: Any,
    ) -> tuple[str, bool]:
        """open → confirmed and its job, in one transaction: however many confirmations race (double
        clicks, Slack retries, two replicas), one job is created; the others get its id.

        `count`: the draft's number of recipients as the caller read it (`DraftRecord.count`, written
        with the rows in one transaction, and they never change while the draft is open); without it
        the rows are counted.

        The recipients are copied by one INSERT … SELECT inside the database: in this transaction, or,
        with `hold=(owner, seconds)`, by `copy_draft_rows` once Slack has its answer (the copy grows
        with the list; with `count` given, nothing in this transaction does). Meanwhile the job is
        leased to `owner`, so no sender starts it without its recipients; if the copy never comes (that
        process died), the sender that takes the job over when the lease ends copies them itself
        (`start_job`). The draft's own rows are deleted when the job completes (`complete_job`)."""
        now = self.clock()

        def tx(conn: sa.Connection) -> tuple[str, bool]:
            row = conn.execute(
                sa.select(drafts.c.state, drafts.c.job_id).where(drafts.c.id == draft_id)
            ).first()
            if row is None or row.state != DraftState.OPEN:
                if row is not None and row.job_id:
                    return row.job_id, False
                raise LookupError("draft is not open")
            total = count
            if total is None:
                total = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(draft_rows)
                    .where(draft_rows.c.draft_id == draft_id)
                ).scalar_one()
            job = _new_job(kind, created_by, f"draft:{draft_id}", total, now, **fields)
            values = _job_values(job)
            if hold is not None:
                job.owner, job.lease_until = hold[0], now + hold[1]
                values |= {"owner": job.owner, "lease_until": job.lease_until}
            moved = conn.execute(
                sa.update(drafts)
                .where(drafts.c.id == draft_id, drafts.c.state == DraftState.OPEN)
                .values(state=DraftState.CONFIRMED, job_id=job.id)
            )
            if moved.rowcount != 1:  # another confirmation won between our read and our update
                raise _LostRace
            conn.execute(_INSERT_JOB, values)
            if hold is None:
                _copy_draft_rows(conn, job.id, draft_id, now)
                self._announce(conn)
            return job.id, True

        try:
            return await self.write(tx)
        except (_LostRace, IntegrityError):
            winner = await self.get_draft(draft_id)
            if winner is not None and winner.job_id:
                return winner.job_id, False
            raise LookupError("draft is not open") from None

    async def copy_draft_rows(self, job_id: str, owner: str) -> int:
        """The recipients of a job confirmed with `hold` (see `claim_draft_into_job`), copied from its
        draft, and the hold released so that the sending replica starts it. Returns how many were
        copied: 0 when they already were (by a sender that took the job over)."""
        now = self.clock()

        def tx(conn: sa.Connection) -> int:
            source = conn.execute(
                sa.select(jobs.c.source_key).where(jobs.c.id == job_id)
            ).scalar_one_or_none()
            copied = _copy_from_draft(conn, job_id, source, now)
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.owner == owner)
                .values(owner=None, lease_until=None)
            )
            self._announce(conn)
            return copied

        try:
            return await self.write(tx)
        except IntegrityError:  # the job's new holder copied them meanwhile
            return 0

    async def job_by_key(self, source_key: str | None) -> Job | None:
        """The job made from `source_key` (an idempotency key), if any."""
        return await self._job_by_key(source_key)

    async def _job_by_key(self, source_key: str | None) -> Job | None:
        if source_key is None:
            return None
        return await self.read(lambda conn: job_with_key(conn, source_key))

    async def get_job(self, job_id: str) -> Job | None:
        def read(conn: sa.Connection) -> Job | None:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            return _job(row) if row else None

        return await self.read(read)

    async def unfinished_jobs(self) -> list[Job]:
        query = sa.select(jobs).where(jobs.c.state != str(JobState.DONE)).order_by(jobs.c.created_at)
        return await self.read(lambda conn: [_job(r) for r in conn.execute(query)])

    # ------------------------------------------------------------------ wake-ups
    def _announce(self, conn: sa.Connection) -> None:
        """PostgreSQL: wake listening processes when this transaction commits (a hint; they poll anyway)."""
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"NOTIFY {NEW_JOBS_CHANNEL}")

    async def listen(
        self, wake: Callable[[], None], lost: Callable[[], None] | None = None
    ) -> Callable[[], Awaitable[None]] | None:
        """PostgreSQL: call `wake()` when another process creates a job, and `lost()` if the listening
        connection ends (a database restart): listen again then. Returns a closer, or None where there
        is nothing to listen to (SQLite: one process). NOTIFY is not replayed to a listener that was
        disconnected, and does not pass PgBouncer in transaction mode: callers keep polling."""
        if self._async is None:
            return None
        closing = False

        def on_notify(*_: object) -> None:
            wake()

        def on_end(*_: object) -> None:
            if lost is not None and not closing:
                lost()

        conn: AsyncConnection | None = None
        try:
            with _reaching():
                conn = await self._async.connect()
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                await driver.add_listener(NEW_JOBS_CHANNEL, on_notify)  # type: ignore[union-attr]
                driver.add_termination_listener(on_end)  # type: ignore[union-attr]
        except Exception:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            raise

        async def close() -> None:
            nonlocal closing
            closing = True
            with contextlib.suppress(Exception):
                await driver.remove_listener(NEW_JOBS_CHANNEL, on_notify)  # type: ignore[union-attr]
            with contextlib.suppress(Exception):
                await conn.close()

        return close

    # ------------------------------------------------------------------ leases
    async def acquire_lease(self, name: str, owner: str, ttl: float) -> float | None:
        """Take or renew the named lease for `ttl` seconds. Returns its new end, or None while another
        process holds it (until it renews no more and its lease ends)."""
        now = self.clock()
        until = now + ttl

        def tx(conn: sa.Connection) -> float | None:
            renewed = conn.execute(
                sa.update(leases)
                .where(leases.c.name == name, sa.or_(leases.c.owner == owner, leases.c.until < now))
                .values(owner=owner, until=until)
            )
            if renewed.rowcount == 1:
                return until
            inserted = conn.execute(self._insert_ignore(leases).values(name=name, owner=owner, until=until))
            return until if inserted.rowcount == 1 else None

        return await self.write(tx)

    async def release_lease(self, name: str, owner: str, hold: float = 0.0) -> None:
        """Let the lease go: another process may take it `hold` seconds from now."""
        until = self.clock() + hold
        await self.write(
            lambda conn: conn.execute(
                sa.update(leases).where(leases.c.name == name, leases.c.owner == owner).values(until=until)
            )
        )

    async def claim_jobs(
        self, owner: str, until: float, *, limit: int, skip: Iterable[str] = ()
    ) -> list[Claim]:
        """Unfinished jobs that nobody holds (new, or whose holder's lease ended), oldest first: now ours
        until `until`. PostgreSQL skips rows another process is claiming at the same moment."""
        now = self.clock()
        skipped = list(skip)
        free = sa.or_(jobs.c.owner.is_(None), jobs.c.lease_until < now)
        due = sa.or_(jobs.c.run_at.is_(None), jobs.c.run_at <= now)
        query = (
            sa.select(jobs.c.id, jobs.c.owner)
            .where(jobs.c.state.not_in([str(JobState.DONE), str(JobState.PAUSED)]), free, due)
            .order_by(jobs.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if skipped:
            query = query.where(jobs.c.id.not_in(skipped))

        def tx(conn: sa.Connection) -> list[Claim]:
            claims = []
            for row in conn.execute(query).fetchall():
                taken = conn.execute(
                    sa.update(jobs).where(jobs.c.id == row.id, free).values(owner=owner, lease_until=until)
                )
                if taken.rowcount == 1:
                    claims.append(Claim(row.id, recovered=row.owner is not None))
            return claims

        return await self.write(tx)

    async def renew_jobs(self, owner: str, until: float, job_ids: Iterable[str]) -> set[str]:
        """Extend our leases; returns the jobs still ours (a job missing from it must stop sending)."""
        wanted = list(job_ids)
        if not wanted:
            return set()
        stmt = (
            sa.update(jobs)
            .where(jobs.c.id.in_(wanted), jobs.c.owner == owner)
            .values(lease_until=until)
            .returning(jobs.c.id)
        )
        return await self.write(lambda conn: {r[0] for r in conn.execute(stmt)})

    async def release_jobs(self, owner: str) -> int:
        """Hand back every unfinished job this process holds (it is stopping and sends no more)."""
        stmt = (
            sa.update(jobs)
            .where(jobs.c.owner == owner, jobs.c.state != str(JobState.DONE))
            .values(owner=None, lease_until=None)
        )
        return await self.write(lambda conn: conn.execute(stmt).rowcount)

    # ------------------------------------------------------------------ recipients
    async def recipients(
        self, job_id: str, states: Iterable[RecipientState] | None = None
    ) -> list[RecipientRow]:
        return await self.read(lambda conn: _rows(conn, job_id, states))

    async def not_delivered(self, job_id: str) -> list[RecipientRow]:
        """Recipients that did not (or may not) get the text: failed, unknown, or accepted and reported
        not delivered or expired. Delivered ones and ones waiting for a receipt are left out."""
        return await self.read(lambda conn: _not_delivered(conn, job_id))

    async def pending(self, job_id: str) -> list[Pending]:
        """The recipients still to send, as light rows (index, number, message), in index order."""
        now = self.clock()
        return await self.read(lambda conn: _pending(conn, job_id, now))

    async def start_job(self, job_id: str) -> JobStart | None:
        """This process now holds the job: in one transaction, what was in flight becomes unknown (it may
        have left; never resent), the job is running, and what it still has to send is read."""
        now = self.clock()

        def tx(conn: sa.Connection) -> JobStart | None:
            r = rtab.c
            lost = conn.execute(
                sa.update(rtab)
                .where(r.job_id == job_id, r.state == str(RecipientState.IN_FLIGHT))
                .values(state=str(RecipientState.UNKNOWN), error=UNKNOWN_AFTER_STOP, updated_at=now)
            ).rowcount
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            job = _job(row)
            # Confirmed with a hold whose copy never came (that process died): copied here, once.
            copied = _copy_from_draft(conn, job_id, job.source_key, now)
            changes: dict[str, Any] = {}
            if lost:
                job.meta["recovered_unknown"] = job.meta.get("recovered_unknown", 0) + lost
                changes["meta"] = json.dumps(job.meta)
            if job.state == JobState.QUEUED:  # new, or resumed after a pause
                job.state, job.started_at = JobState.RUNNING, job.started_at or now
                changes |= {"state": str(JobState.RUNNING), "started_at": job.started_at}
            if changes:
                conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(**changes))
            if job.state == JobState.DONE:
                return JobStart(job, lost, [], [], copied)
            # Full rows only where they are shown (a single send's thread); a 10,000-recipient job starts
            # from light rows.
            rows = _rows(conn, job_id) if job.total == 1 else []
            return JobStart(job, lost, _pending(conn, job_id, now), rows, copied)

        return await self.write(tx)

    async def complete_job(self, job_id: str) -> tuple[Job, Summary, list[RecipientRow]]:
        """The job is done: its state, its summary, the recipients its report names (a single send's
        one; of a larger job those that did not get through, see `not_delivered`: reading 10,000 rows
        to list a handful held the database and the event loop), and the draft it was confirmed from
        (if any) gives up its copy of the recipients."""
        now = self.clock()

        def tx(conn: sa.Connection) -> tuple[Job, Summary, list[RecipientRow]]:
            conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id).values(state=str(JobState.DONE), finished_at=now)
            )
            conn.execute(
                sa.delete(draft_rows).where(
                    draft_rows.c.draft_id
                    == sa.select(drafts.c.id).where(drafts.c.job_id == job_id).scalar_subquery()
                )
            )
            return _finish_report(conn, job_id, now)

        return await self.write(tx)

    async def finish_report(self, job_id: str) -> tuple[Job, Summary, list[RecipientRow]]:
        """What `complete_job` returned for a finished job, read again (its finish is reported again)."""
        now = self.clock()
        return await self.read(lambda conn: _finish_report(conn, job_id, now))

    async def mark_reported(self, job_id: str) -> None:
        """The job's finish was told to someone: nobody reports it again."""
        stmt = sa.update(jobs).where(jobs.c.id == job_id).values(reported_at=self.clock())
        await self.write(lambda conn: conn.execute(stmt))

    async def claim_unreported(self, owner: str, until: float, *, since: float, limit: int) -> list[str]:
        """Finished jobs whose finish nobody was told (`reported_at` unset), finished after `since`, that
        nobody holds (the process that finished it holds it while it reports): now ours until `until`.
        Read first, so that a sweep that finds nothing writes nothing. No condition on `state`: only
        `complete_job` sets `finished_at`, and with one SQLite searched the index on `state`, where
        `done` is nearly every row; without, it searches `jobs_unreported` for the NULLs (the jobs not
        finished, and those nobody was told of)."""
        now = self.clock()
        free = sa.or_(jobs.c.owner.is_(None), jobs.c.lease_until < now)
        query = (
            sa.select(jobs.c.id)
            .where(jobs.c.reported_at.is_(None), jobs.c.finished_at > since, free)
            .order_by(jobs.c.finished_at)
            .limit(limit)
        )
        found = [r[0] for r in await self.read(lambda conn: conn.execute(query).fetchall())]
        if not found:
            return []
        take = (
            sa.update(jobs)
            .where(jobs.c.id.in_(found), jobs.c.reported_at.is_(None), free)
            .values(owner=owner, lease_until=until)
            .returning(jobs.c.id)
        )
        return await self.write(lambda conn: [r[0] for r in conn.execute(take)])

    async def receipts_shown(self, job_id: str, changed: int | None) -> None:
        """The observer showed the job's receipts as they were when `changed` was read with the job
        (`Job.receipts_changed`): nobody offers them again, unless a receipt matched since (its change
        is counted, so the job stays offered). None: given up, whatever came since."""
        stmt = sa.update(jobs).where(jobs.c.id == job_id, jobs.c.receipts_unshown.is_not(None))
        if changed is not None:
            stmt = stmt.where(jobs.c.receipts_changed == changed)
        await self.write(lambda conn: conn.execute(stmt.values(receipts_unshown=None)))

    async def unshown_receipts(self, *, since: float, limit: int) -> list[str]:
        """Jobs whose receipts changed after `since` and were not shown yet, the longest waiting first
        (a range of the index `jobs_receipts_unshown`: the shown, NULL, are not read). Not a finished
        job whose finish nobody was told yet: the finish shows its receipts when it is told, and the
        job is offered from then on (finishes Slack refuses for a day do not fill every look)."""
        told = sa.or_(jobs.c.finished_at.is_(None), jobs.c.reported_at.is_not(None))
        query = (
            sa.select(jobs.c.id)
            .where(jobs.c.receipts_unshown > since, told)
            .order_by(jobs.c.receipts_unshown)
            .limit(limit)
        )
        return await self.read(lambda conn: [r[0] for r in conn.execute(query)])

    async def mark_in_flight(
        self, job_id: str, indices: Iterable[int], *, owner: str | None = None, fence: float = 0.0
    ) -> int:
        """queued → in_flight, committed before the requests leave. Only rows still queued move, and
        with `owner`, only while that process holds the job's lease for at least `fence` more seconds
        and nobody asked to pause or cancel the job. Returns how many moved: the caller sends those and
        no others. (The worker uses `mark_for_send`, which also checks opt-outs and says why.)"""
        return await self._move(
            job_id, indices, RecipientState.QUEUED, RecipientState.IN_FLIGHT, owner=owner, fence=fence
        )

    async def mark_for_send(
        self, job_id: str, indices: Iterable[int], *, owner: str, fence: float, optouts: str | None
    ) -> Marked:
        """`mark_in_flight` for the worker, in one transaction with two more checks that make what people
        ask while a job runs take effect before its next request:
        - with `optouts` (the job's message type), a recipient whose number was opted out since the job
          was prepared fails now (`OPTED_OUT`) and nothing moves: the caller builds its requests again
          from what is still queued;
        - a job someone asked to pause or cancel moves nothing, and `control` says which."""
        wanted = sorted(indices)
        now = self.clock()
        params = {
            "b_job": job_id,
            "b_old": str(RecipientState.QUEUED),
            "b_new": str(RecipientState.IN_FLIGHT),
            "b_now": now,
            "b_owner": owner,
            "b_deadline": now + fence,
        }
        scopes = ["all", "marketing"] if optouts == "MKT" else ["all"]
        r = rtab.c

        def tx(conn: sa.Connection) -> Marked:
            runs = _runs(wanted)
            stmt = _MOVE_FENCED if optouts is None else _MOVE_NOT_OPTED_OUT[optouts == "MKT"]
            moved = sum(conn.execute(stmt, {**params, "b_lo": lo, "b_hi": hi}).rowcount for lo, hi in runs)
            if moved == len(wanted):  # the usual case: one statement per run of indices, as before
                return Marked(moved, [], None)
            if moved:  # none of these goes out: put back what this call moved (stamped with its `now`)
                for lo, hi in runs:
                    conn.execute(
                        sa.update(rtab)
                        .where(
                            r.job_id == job_id,
                            r.idx.between(lo, hi),
                            r.state == str(RecipientState.IN_FLIGHT),
                            r.updated_at == now,
                        )
                        .values(state=str(RecipientState.QUEUED))
                    )
            if optouts is not None:
                hits: list[tuple[int, str]] = []
                for lo, hi in runs:
                    hits += conn.execute(
                        sa.select(r.idx, suppressions.c.scope)
                        .join(suppressions, suppressions.c.e164 == r.e164)
                        .where(
                            r.job_id == job_id,
                            r.idx.between(lo, hi),
                            r.state == str(RecipientState.QUEUED),
                            suppressions.c.scope.in_(scopes),
                        )
                    ).all()
                if hits:
                    conn.execute(
                        sa.update(rtab)
                        .where(
                            r.job_id == job_id,
                            r.idx == sa.bindparam("b_idx"),
                            r.state == str(RecipientState.QUEUED),
                        )
                        .values(
                            state=str(RecipientState.FAILED),
                            code="OPTED_OUT",
                            error=sa.bindparam("b_error"),
                            updated_at=now,
                        ),
                        [{"b_idx": idx, "b_error": opted_out_reason(scope)} for idx, scope in hits],
                    )
                    return Marked(0, sorted(idx for idx, _ in hits), None)
            control = conn.execute(sa.select(jobs.c.control).where(jobs.c.id == job_id)).scalar()
            return Marked(0, [], Control(control) if control else None)

        return await self.write(tx)

    async def set_control(self, job_id: str, control: Control | None, by: str) -> Job | None:
        """Ask a job to pause or cancel (None: resume). A paused job is nobody's: resuming or cancelling
        it queues it again, and the sending replica finishes it (sending the rest, or reporting the rest
        cancelled). Returns the job as it is now, or None when it is finished or unknown."""

        def tx(conn: sa.Connection) -> Job | None:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            if row is None or row.state == JobState.DONE:
                return None
            changes: dict[str, Any] = {"control": str(control) if control else None, "control_by": by}
            if row.state == JobState.PAUSED and control != Control.PAUSE:
                changes["state"] = str(JobState.QUEUED)
            if control == Control.PAUSE and row.owner is None and row.state == JobState.RUNNING:
                # Started, but nobody runs it now (it waits for send windows): paused at once.
                changes["state"] = str(JobState.PAUSED)
            if control == Control.CANCEL:  # scheduled, or waiting for send windows: finished now
                changes["run_at"] = None
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state != str(JobState.DONE))
                .values(**changes)
            )
            self._announce(conn)
            return _job(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

        return await self.write(tx)

    async def park_job(self, job_id: str, owner: str) -> Job | None:
        """Someone paused the job and nothing of it is in flight: it is nobody's until resumed. None when
        it was resumed (or cancelled) meanwhile: the caller carries on."""

        def tx(conn: sa.Connection) -> Job | None:
            done = conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.owner == owner, jobs.c.control == str(Control.PAUSE))
                .values(state=str(JobState.PAUSED), owner=None, lease_until=None)
            ).rowcount
            if not done:
                return None
            return _job(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

        return await self.write(tx)

    async def queued_left(self, job_id: str) -> int:
        """Recipients still to send, those waiting for their send window included."""
        r = rtab.c
        query = sa.select(sa.func.count()).where(r.job_id == job_id, r.state == str(RecipientState.QUEUED))
        return await self.read(lambda conn: conn.execute(query).scalar_one())

    async def hold(self, job_id: str, until: dict[int, float]) -> None:
        """Queued recipients that wait for their send window: not sent before `until[idx]`."""
        r = rtab.c
        stmt = (
            sa.update(rtab)
            .where(r.job_id == job_id, r.idx == sa.bindparam("b_idx"), r.state == str(RecipientState.QUEUED))
            .values(not_before=sa.bindparam("b_until"))
        )
        rows = [{"b_idx": idx, "b_until": at} for idx, at in until.items()]
        if rows:
            await self.write(lambda conn: conn.execute(stmt, rows))

    async def defer_job(self, job_id: str, owner: str) -> Job | None:
        """What this process could send of the job is sent; the rest waits for send windows. The job is
        nobody's until the first of them opens (`run_at`), then claimed again like any other. None when
        nothing waits (the job is finished)."""
        now = self.clock()
        r = rtab.c

        def tx(conn: sa.Connection) -> Job | None:
            opens = conn.execute(
                sa.select(sa.func.min(r.not_before)).where(
                    r.job_id == job_id, r.state == str(RecipientState.QUEUED), r.not_before > now
                )
            ).scalar()
            if opens is None:
                return None
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.owner == owner)
                .values(owner=None, lease_until=None, run_at=opens)
            )
            return _job(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

        return await self.write(tx)

    async def scheduled(self, limit: int = 20, *, created_by: str | None = None) -> list[Job]:
        """Jobs scheduled for later that have not started, soonest first (with `created_by`: theirs)."""
        now = self.clock()
        query = (
            sa.select(jobs)
            .where(jobs.c.state == str(JobState.QUEUED), jobs.c.started_at.is_(None), jobs.c.run_at > now)
            .order_by(jobs.c.run_at)
            .limit(limit)
        )
        if created_by is not None:
            query = query.where(jobs.c.created_by == created_by)
        return await self.read(lambda conn: [_job(row) for row in conn.execute(query)])

    async def cancel_queued(self, job_id: str) -> int:
        """A cancelled job's recipients not yet sent: "cancelled (not sent)", to be sent later by a retry."""
        return await self.queued_to_failed(job_id, "Cancelled (not sent).", code=CANCELLED)

    async def withdraw(self, job_id: str, indices: Iterable[int]) -> int:
        """in_flight → queued: the provider certainly did not take these requests (a retry waits)."""
        return await self._move(job_id, indices, RecipientState.IN_FLIGHT, RecipientState.QUEUED)

    async def _move(
        self,
        job_id: str,
        indices: Iterable[int],
        old: RecipientState,
        new: RecipientState,
        *,
        owner: str | None = None,
        fence: float = 0.0,
    ) -> int:
        wanted = sorted(indices)
        if not wanted:
            return 0
        now = self.clock()
        common = {"b_job": job_id, "b_old": str(old), "b_new": str(new), "b_now": now}
        if owner is not None:
            common |= {"b_owner": owner, "b_deadline": now + fence}
        stmt = _MOVE if owner is None else _MOVE_FENCED

        def tx(conn: sa.Connection) -> int:  # one statement per run of consecutive indices (chunks, waves)
            return sum(
                conn.execute(stmt, {**common, "b_lo": lo, "b_hi": hi}).rowcount for lo, hi in _runs(wanted)
            )

        return await self.write(tx)

    async def record_outcomes(self, job_id: str, outcomes: Iterable[Any]) -> None:
        """Store `bot.sms.Outcome`s (status accepted / failed / unknown) for their recipients. An accepted
        one with a message id (or a batch's candidate id) is due for its first QueryMessage check."""
        now = self.clock()
        first = None if self.first_check is None else now + self.first_check
        rows = [
            {
                "b_state": str(o.status),
                "b_message_id": o.message_id or o.candidate_id,
                "b_check_at": first if o.status == "accepted" and (o.message_id or o.candidate_id) else None,
                "b_segments": o.segments,
                "b_code": o.code,
                "b_error": o.error,
                "b_request_id": o.request_id,
                "b_country": o.country,
                "b_carrier": o.carrier,
                "b_retryable": int(o.retryable),
                "b_now": now,
                "b_job": job_id,
                "b_idx": o.index,
            }
            for o in outcomes
        ]
        if rows:
            await self.write(lambda conn: conn.execute(_RECORD_OUTCOME, rows))

    async def in_flight_to_unknown(self, job_id: str) -> int:
        """After a crash: requests that may have gone out are reported unknown, never resent."""
        r = rtab.c
        stmt = (
            sa.update(rtab)
            .where(r.job_id == job_id, r.state == str(RecipientState.IN_FLIGHT))
            .values(state=str(RecipientState.UNKNOWN), error=UNKNOWN_AFTER_STOP, updated_at=self.clock())
        )
        return await self.write(lambda conn: conn.execute(stmt).rowcount)

    async def queued_to_failed(self, job_id: str, reason: str, *, code: str = "NOT_SENT") -> int:
        """Recipients never sent because their job stopped: failed (not sent, retryable), not left queued."""
        r = rtab.c
        stmt = (
            sa.update(rtab)
            .where(r.job_id == job_id, r.state == str(RecipientState.QUEUED))
            .values(
                state=str(RecipientState.FAILED),
                code=code,
                error=reason,
                retryable=1,
                updated_at=self.clock(),
            )
        )
        return await self.write(lambda conn: conn.execute(stmt).rowcount)

    async def fail_unsent_many(self, job_id: str, indices: Sequence[int], code: str, error: str) -> None:
        """Queued recipients that will not be sent (e.g. over the daily cap when the job starts)."""
        r = rtab.c
        stmt = (
            sa.update(rtab)
            .where(r.job_id == job_id, r.idx == sa.bindparam("b_idx"), r.state == str(RecipientState.QUEUED))
            .values(state=str(RecipientState.FAILED), code=code, error=error, updated_at=self.clock())
        )
        rows = [{"b_idx": i} for i in indices]
        if rows:
            await self.write(lambda conn: conn.execute(stmt, rows))

    async def fail_unsent(self, job_id: str, idx: int, code: str, error: str) -> None:
        """One queued recipient that will not be sent (e.g. refused by the client's own checks)."""
        r = rtab.c
        stmt = (
            sa.update(rtab)
            .where(r.job_id == job_id, r.idx == idx, r.state == str(RecipientState.QUEUED))
            .values(state=str(RecipientState.FAILED), code=code, error=error, updated_at=self.clock())
        )
        await self.write(lambda conn: conn.execute(stmt))

    async def summary(self, job_id: str) -> Summary:
        now = self.clock()
        return await self.read(lambda conn: _summary(conn, job_id, now))

    async def history(
        self, user_id: str, limit: int = 10, e164: str | None = None
    ) -> list[tuple[Job, RecipientRow]]:
        """`user_id`'s latest sends, newest first, each with its first recipient; with `e164`, only their
        texts to that number (in single and larger sends alike), each with that number's own row."""

        def to_number(conn: sa.Connection) -> list[tuple[Job, RecipientRow]]:
            found = conn.execute(  # the number's rows (indexed by number), of this user's jobs
                sa.select(*_RECIPIENT_COLUMNS)
                .join(jobs, jobs.c.id == rtab.c.job_id)
                .where(rtab.c.e164 == e164, jobs.c.created_by == user_id)
                .order_by(jobs.c.created_at.desc(), rtab.c.idx)
                .limit(limit)
            ).fetchall()
            ids = sorted({row.job_id for row in found})
            by_id = {row.id: _job(row) for row in conn.execute(sa.select(jobs).where(jobs.c.id.in_(ids)))}
            return [(by_id[row.job_id], _recipient(row)) for row in found]

        if e164 is not None:
            return await self.read(to_number)

        def read(conn: sa.Connection) -> list[tuple[Job, RecipientRow]]:
            found = conn.execute(
                sa.select(jobs)
                .where(jobs.c.created_by == user_id)
                .order_by(jobs.c.created_at.desc())
                .limit(limit)
            ).fetchall()
            out = []
            for row in found:
                first = conn.execute(
                    sa.select(*_RECIPIENT_COLUMNS)
                    .where(rtab.c.job_id == row.id)
                    .order_by(rtab.c.idx)
                    .limit(1)
                ).first()
                if first:
                    out.append((_job(row), _recipient(first)))
            return out

        return await self.read(read)

    async def summaries(self, job_ids: Sequence[str]) -> dict[str, Summary]:
        """Each job's summary (one read)."""
        now = self.clock()
        return await self.read(lambda conn: {job_id: _summary(conn, job_id, now) for job_id in job_ids})

    async def texts_today(self, numbers: Sequence[str], *, exclude_job: str | None = None) -> dict[str, int]:
        """How many texts each number (E.164) got since 00:00 UTC that may have reached it (accepted,
        unknown or in flight), other jobs than `exclude_job`. Numbers with none are left out."""
        since = day_start(self.clock())
        return await self.read(lambda conn: texts_since(conn, numbers, since, exclude_job))

    async def segments_today(self, user_id: str) -> int:
        """Segments of the user's sends since 00:00 UTC: billed ones, else the estimate."""
        midnight = day_start(self.clock())
        r = rtab.c
        query = (
            sa.select(sa.func.coalesce(sa.func.sum(sa.func.coalesce(r.segments, r.est_segments, 1)), 0))
            .select_from(rtab.join(jobs, jobs.c.id == r.job_id))
            .where(
                jobs.c.created_by == user_id,
                jobs.c.created_at >= midnight,
                r.state != str(RecipientState.FAILED),
            )
        )
        return await self.read(lambda conn: int(conn.execute(query).scalar_one()))

    # ------------------------------------------------------------------ drafts
    async def create_draft(
        self, user_id: str, head: dict[str, Any] | None = None, *, state: DraftState = DraftState.CHECKING
    ) -> str:
        draft_id = uuid.uuid4().hex
        stmt = sa.insert(drafts).values(
            id=draft_id,
            user_id=user_id,
            state=str(state),
            payload=json.dumps(head or {}),
            created_at=self.clock(),
        )
        await self.write(lambda conn: conn.execute(stmt))
        return draft_id

    async def fill_draft(self, draft_id: str, head: dict[str, Any], rows: Sequence[NewRecipient]) -> bool:
        """checking → open with what the confirmation shows and the validated recipients (not if the
        draft was discarded meanwhile). `head` gets the recipients' `count`."""
        head = {**head, "count": len(rows)}
        values = [
            {
                "draft_id": draft_id,
                "idx": i,
                "e164": r.number.e164,
                "country_code": r.number.country_code,
                "national": r.number.national,
                "region": r.number.region,
                "message": r.message,
                "segments": r.segments,
            }
            for i, r in enumerate(rows)
        ]

        def tx(conn: sa.Connection) -> bool:
            moved = conn.execute(
                sa.update(drafts)
                .where(drafts.c.id == draft_id, drafts.c.state == str(DraftState.CHECKING))
                .values(state=str(DraftState.OPEN), payload=json.dumps(head))
            )
            if moved.rowcount != 1:
                return False
            for start in range(0, len(values), DRAFT_CHUNK):
                conn.execute(sa.insert(draft_rows), values[start : start + DRAFT_CHUNK])
            return True

        return await self.write(tx)

    async def get_draft(self, draft_id: str) -> DraftRecord | None:
        def read(conn: sa.Connection) -> DraftRecord | None:
            row = conn.execute(sa.select(drafts).where(drafts.c.id == draft_id)).first()
            if row is None:
                return None
            return DraftRecord(
                row.id, row.user_id, DraftState(row.state), json.loads(row.payload), row.job_id
            )

        return await self.read(read)

    async def discard_draft(self, draft_id: str) -> bool:
        def tx(conn: sa.Connection) -> bool:
            res = conn.execute(
                sa.update(drafts)
                .where(
                    drafts.c.id == draft_id,
                    drafts.c.state.in_([str(DraftState.OPEN), str(DraftState.CHECKING)]),
                )
                .values(state=str(DraftState.DISCARDED), payload="{}")
            )
            if res.rowcount == 1:
                conn.execute(sa.delete(draft_rows).where(draft_rows.c.draft_id == draft_id))
            return res.rowcount == 1

        return await self.write(tx)

    # ------------------------------------------------------------------ helpers
    def dialect_insert(self, table: sa.Table) -> Any:
        """The database's own INSERT for `table`, which has `on_conflict_do_…` (both dialects spell it
        alike). PostgreSQL's dialect is imported only by a store on PostgreSQL (≈ 25 ms of start-up)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        return sqlite.insert(table)

    def _insert_ignore(self, table: sa.Table) -> Any:
        return self.dialect_insert(table).on_conflict_do_nothing()


def _finish_report(conn: sa.Connection, job_id: str, now: float) -> tuple[Job, Summary, list[RecipientRow]]:
    """A finished job, its summary and the recipients its report names (see `complete_job`)."""
    job = _job(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())
    named = _rows(conn, job_id) if job.total == 1 else _not_delivered(conn, job_id)
    return job, _summary(conn, job_id, now), named


def _rows(
    conn: sa.Connection, job_id: str, states: Iterable[RecipientState] | None = None
) -> list[RecipientRow]:
    query = sa.select(*_RECIPIENT_COLUMNS).where(rtab.c.job_id == job_id).order_by(rtab.c.idx)
    if states is not None:
        query = query.where(rtab.c.state.in_([str(s) for s in states]))
    return [_recipient(r) for r in conn.execute(query)]


def _not_delivered(conn: sa.Connection, job_id: str) -> list[RecipientRow]:
    r = rtab.c
    query = (
        sa.select(*_RECIPIENT_COLUMNS)
        .where(
            r.job_id == job_id,
            sa.or_(
                r.state.in_([str(RecipientState.FAILED), str(RecipientState.UNKNOWN)]),
                sa.and_(r.delivery.is_not(None), r.delivery != str(Delivery.DELIVERED)),
            ),
        )
        .order_by(r.idx)
    )
    return [_recipient(x) for x in conn.execute(query)]


def _pending(conn: sa.Connection, job_id: str, now: float) -> list[Pending]:
    """Queued recipients that may go now (not those waiting for their send window)."""
    r = rtab.c
    query = (
        sa.select(r.idx, r.e164, r.country_code, r.national, r.region, r.message)
        .where(
            r.job_id == job_id,
            r.state == str(RecipientState.QUEUED),
            sa.or_(r.not_before.is_(None), r.not_before <= now),
        )
        .order_by(r.idx)
    )
    return [Pending(x[0], PhoneNumber(x[1], x[2], x[3], x[4]), x[5]) for x in conn.execute(query)]


def _summary(conn: sa.Connection, job_id: str, now: float) -> Summary:
    r = rtab.c
    counts: dict[str, int] = {}
    segments = delivered = undelivered = rec_delivered = rec_undelivered = cancelled = 0
    was_cancelled = sa.case((r.code == CANCELLED, 1), else_=0)
    for state, delivery, reconciled, is_cancelled, n, segs in conn.execute(
        sa.select(
            r.state,
            r.delivery,
            r.reconciled,
            was_cancelled,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(r.segments), 0),
        )
        .where(r.job_id == job_id)
        .group_by(r.state, r.delivery, r.reconciled, was_cancelled)
    ):
        counts[state] = counts.get(state, 0) + n
        if state == RecipientState.FAILED and is_cancelled:
            cancelled += n
        if state != RecipientState.ACCEPTED:
            continue
        segments += int(segs)
        if delivery == Delivery.DELIVERED:
            delivered += n
            rec_delivered += n if reconciled else 0
        elif delivery is not None:
            undelivered += n
            rec_undelivered += n if reconciled else 0
    total = max(
        conn.execute(sa.select(jobs.c.total).where(jobs.c.id == job_id)).scalar() or 0, sum(counts.values())
    )
    accepted = counts.get(RecipientState.ACCEPTED, 0)
    failed = counts.get(RecipientState.FAILED, 0)
    unknown = counts.get(RecipientState.UNKNOWN, 0)
    held, opens = 0, None
    if counts.get(RecipientState.QUEUED):
        held, opens = conn.execute(
            sa.select(sa.func.count(), sa.func.min(r.not_before)).where(
                r.job_id == job_id, r.state == str(RecipientState.QUEUED), r.not_before > now
            )
        ).one()
    return Summary(
        held=held,
        next_window=opens,
        total=total,
        accepted=accepted,
        failed=failed - cancelled,
        unknown=unknown,
        pending=total - accepted - failed - unknown,  # queued or in flight
        segments=segments,
        cancelled=cancelled,
        delivered=delivered,
        undelivered=undelivered,
        reconciled_delivered=rec_delivered,
        reconciled_undelivered=rec_undelivered,
    )


def _new_job(
    kind: JobKind,
    created_by: str,
    source_key: str | None,
    total: int,
    now: float,
    *,
    channel_id: str | None = None,
    response_url: str | None = None,
    sender_id: str | None = None,
    type: str | None = None,
    task_id: str | None = None,
    validity: int | None = None,
    meta: dict[str, Any] | None = None,
    run_at: float | None = None,
) -> Job:
    job_id = uuid.uuid4().hex
    return Job(
        id=job_id,
        kind=JobKind(kind),
        state=JobState.QUEUED,
        created_by=created_by,
        channel_id=channel_id,
        response_url=response_url,
        sender_id=sender_id,
        type=type,
        task_id=task_id or job_id,
        validity=validity,
        total=total,
        meta=dict(meta or {}),
        created_at=now,
        started_at=None,
        finished_at=None,
        source_key=source_key,
        run_at=run_at,
    )


def _job_values(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": str(job.kind),
        "state": str(job.state),
        "source_key": job.source_key,
        "created_by": job.created_by,
        "channel_id": job.channel_id,
        "response_url": job.response_url,
        "sender_id": job.sender_id,
        "type": job.type,
        "task_id": job.task_id,
        "validity": job.validity,
        "total": job.total,
        "meta": json.dumps(job.meta),
        "created_at": job.created_at,
        "run_at": job.run_at,
    }


NEW_JOBS_CHANNEL = "sms_ops_new_job"
DRAFT_CHUNK = 1000  # draft rows per INSERT (one statement per chunk, inside one transaction)


ANSWERING: ContextVar[bool] = ContextVar("answering", default=False)


@contextlib.contextmanager
def _reaching() -> Iterator[None]:
    """A driver's error that says the database is out of reach (`db.cut_off`), raised as
    `db.DatabaseUnreachable` with it chained; any other error as it is."""
    try:
        yield
    except Exception as exc:
        if db.cut_off(exc):
            raise db.DatabaseUnreachable(db.reason(exc)) from exc
        raise


def answering() -> None:
    """From now on, store calls made by the current task (and by the tasks it starts) are for someone
    waiting for an answer, e.g. a request that must be acknowledged within seconds: on SQLite they go
    before background work. Call it in a task of the request's own (each aiohttp request and each Socket
    Mode envelope has one): the flag ends with that task."""
    ANSWERING.set(True)


class _SqliteThread:
    """The one thread that runs SQLite calls, each whole; calls made while `answering` go first."""

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], Any] | None, Any]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._serve, name="sqlite", daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((0 if ANSWERING.get() else 1, next(self._order), lambda: fn(*args), (loop, fut)))
        return await fut

    def _serve(self) -> None:
        while True:
            _, _, fn, target = self._queue.get()
            if fn is None:
                return
            loop, fut = target
            try:
                result = fn()
            except BaseException as exc:
                loop.call_soon_threadsafe(_settle, fut, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, fut, result, None)

    async def stop(self) -> None:
        self._queue.put((2, next(self._order), None, None))
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _settle_new(item: _NewJob, decided: Job | Exception | None) -> None:
    if isinstance(decided, Exception):
        _settle(item.done, None, decided)
    else:
        _settle(item.done, True if decided is None else decided, None)


_DRAFT_COLUMNS = ("idx", "e164", "country_code", "national", "region", "message")


def _copy_draft_rows(conn: sa.Connection, job_id: str, draft_id: str, now: float) -> int:
    """Every row of the draft into the job as a queued recipient: one INSERT … SELECT in the database."""
    return conn.execute(
        sa.insert(rtab).from_select(
            ["job_id", *_DRAFT_COLUMNS, "state", "est_segments", "updated_at"],
            sa.select(
                sa.literal(job_id), *[draft_rows.c[c] for c in _DRAFT_COLUMNS],
                sa.literal(str(RecipientState.QUEUED)), draft_rows.c.segments, sa.literal(now, sa.Double),
            ).where(draft_rows.c.draft_id == draft_id),
        )
    ).rowcount  # fmt: skip


def _copy_from_draft(conn: sa.Connection, job_id: str, source: str | None, now: float) -> int:
    """A job made from a draft (its `source` key `draft:<id>`) that has no recipients yet gets the
    draft's (0 when it has some, or was not made from a draft)."""
    if not source or not source.startswith("draft:"):
        return 0
    if conn.execute(sa.select(rtab.c.idx).where(rtab.c.job_id == job_id).limit(1)).first() is not None:
        return 0
    return _copy_draft_rows(conn, job_id, source.removeprefix("draft:"), now)


class _LostRace(Exception):
    pass


# ---------------------------------------------------------------------- reads other core modules compose
def job_with_key(conn: sa.Connection, source_key: str) -> Job | None:
    """The job made from `source_key` (an idempotency key), if any."""
    row = conn.execute(_JOB_BY_KEY, {"key": source_key}).first()
    return _job(row) if row else None


def jobs_with_keys(conn: sa.Connection, source_keys: Iterable[str]) -> dict[str, Job]:
    """The jobs made from these idempotency keys, by key (keys no job has are left out): one indexed
    lookup per 500 keys."""
    found: dict[str, Job] = {}
    unique = sorted(set(source_keys))
    for start in range(0, len(unique), 500):
        for row in conn.execute(_JOBS_BY_KEYS, {"keys": unique[start : start + 500]}):
            job = _job(row)
            found[str(job.source_key)] = job
    return found


def day_start(now: float) -> float:
    """00:00 UTC of the day `now` is in: where the daily counts (texts a number, segments a person) start."""
    return now - now % 86400


def texts_since(
    conn: sa.Connection, numbers: Sequence[str], since: float, exclude_job: str | None = None
) -> dict[str, int]:
    """Texts each number (E.164) got since `since` that may have reached it (accepted, unknown or in
    flight), in other jobs than `exclude_job`; numbers with none are left out."""
    out: dict[str, int] = {}
    unique = sorted(set(numbers))
    if conn.dialect.name == "postgresql":  # one statement, the numbers as one array parameter
        params = {"numbers": unique, "since": since, "states": _COUNTED, "exclude": exclude_job or ""}
        return {e164: int(n) for e164, n in conn.execute(_TEXTS_SINCE_PG, params)}
    for i in range(0, len(unique), 500):
        params = {
            "numbers": unique[i : i + 500],
            "since": since,
            "states": _COUNTED,
            "exclude": exclude_job or "",
        }
        out.update({e164: int(n) for e164, n in conn.execute(_TEXTS_SINCE, params)})
    return out


def _recipient_values(
    job_id: str, idx: int, number: PhoneNumber, message: str, segments: int | None, now: float
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "idx": idx,
        "e164": number.e164,
        "country_code": number.country_code,
        "national": number.national,
        "region": number.region,
        "message": message,
        "state": str(RecipientState.QUEUED),
        "est_segments": segments,
        "updated_at": now,
    }


# Statements built once: parameters are bound at execution, so each compiles once (a statement built
# with literal values needs a new cache key every time: ~0.3 ms of CPU for a job insert).
_INSERT_JOB = sa.insert(jobs)
_JOB_BY_KEY = sa.select(jobs).where(jobs.c.source_key == sa.bindparam("key"))
_JOBS_BY_KEYS = sa.select(jobs).where(jobs.c.source_key.in_(sa.bindparam("keys", expanding=True)))
_COUNTED = [str(RecipientState.ACCEPTED), str(RecipientState.UNKNOWN), str(RecipientState.IN_FLIGHT)]
_TEXTS_SINCE = (
    sa.select(rtab.c.e164, sa.func.count())
    .where(
        rtab.c.e164.in_(sa.bindparam("numbers", expanding=True)),
        rtab.c.updated_at >= sa.bindparam("since"),
        rtab.c.state.in_(sa.bindparam("states", expanding=True)),
        rtab.c.job_id != sa.bindparam("exclude"),  # "" when none: no job has an empty id
    )
    .group_by(rtab.c.e164)
)
# PostgreSQL: `= ANY(array)`, one statement and one parameter however many numbers. For a 10,000-number
# job, twenty IN lists of 500 took about 77 ms before its first request; the array about 30 ms.
_TEXTS_SINCE_PG = (
    sa.select(rtab.c.e164, sa.func.count())
    .where(
        rtab.c.e164 == sa.func.any(sa.bindparam("numbers", type_=sa.ARRAY(sa.String))),
        rtab.c.updated_at >= sa.bindparam("since"),
        rtab.c.state.in_(sa.bindparam("states", expanding=True)),
        rtab.c.job_id != sa.bindparam("exclude"),
    )
    .group_by(rtab.c.e164)
)
_INSERT_RECIPIENTS = sa.insert(rtab)
_MOVE = (
    sa.update(rtab)
    .where(
        rtab.c.job_id == sa.bindparam("b_job"),
        rtab.c.state == sa.bindparam("b_old"),
        rtab.c.idx.between(sa.bindparam("b_lo"), sa.bindparam("b_hi")),
    )
    .values(state=sa.bindparam("b_new"), updated_at=sa.bindparam("b_now"))
)
_MOVE_FENCED = _MOVE.where(
    sa.exists().where(
        jobs.c.id == sa.bindparam("b_job"),
        jobs.c.owner == sa.bindparam("b_owner"),
        jobs.c.lease_until > sa.bindparam("b_deadline"),
        jobs.c.control.is_(None),  # nobody asked to pause or cancel it
    )
)

# The worker's mark: also only recipients whose number is not opted out of texts of the job's type
# (no list parameter: each statement is compiled once and cached).
_MOVE_NOT_OPTED_OUT = {
    marketing: _MOVE_FENCED.where(
        ~sa.exists().where(  # a marketing text: any opt-out applies; others: an opt-out of all texts
            suppressions.c.e164 == rtab.c.e164, sa.true() if marketing else suppressions.c.scope == "all"
        )
    )
    for marketing in (False, True)
}

_RECORD_OUTCOME = (
    sa.update(rtab)
    .where(rtab.c.job_id == sa.bindparam("b_job"), rtab.c.idx == sa.bindparam("b_idx"))
    .values(
        state=sa.bindparam("b_state"),
        message_id=sa.bindparam("b_message_id"),
        segments=sa.bindparam("b_segments"),
        code=sa.bindparam("b_code"),
        error=sa.bindparam("b_error"),
        request_id=sa.bindparam("b_request_id"),
        country=sa.bindparam("b_country"),
        carrier=sa.bindparam("b_carrier"),
        retryable=sa.bindparam("b_retryable"),
        updated_at=sa.bindparam("b_now"),
        check_at=sa.bindparam("b_check_at"),
    )
)

_RECIPIENT_COLUMNS = [
    rtab.c[name]
    for name in (
        "job_id", "idx", "e164", "country_code", "national", "region", "message", "state", "message_id",
        "segments", "code", "error", "request_id", "country", "carrier", "retryable", "updated_at",
        "delivery", "delivery_code", "delivery_error", "delivered_at", "reconciled",
    )
]  # fmt: skip
_DELIVERIES = {d.value: d for d in Delivery}
_STATES = {s.value: s for s in RecipientState}


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        kind=JobKind(row.kind),
        state=JobState(row.state),
        created_by=row.created_by,
        channel_id=row.channel_id,
        response_url=row.response_url,
        sender_id=row.sender_id,
        type=row.type,
        task_id=row.task_id,
        validity=row.validity,
        total=row.total,
        meta=json.loads(row.meta),
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        owner=row.owner,
        lease_until=row.lease_until,
        source_key=row.source_key,
        control=Control(row.control) if row.control else None,
        control_by=row.control_by,
        run_at=row.run_at,
        reported_at=row.reported_at,
        receipts_changed=row.receipts_changed,
        receipts_unshown=row.receipts_unshown,
    )


def _recipient(r: Sequence[Any]) -> RecipientRow:
    return RecipientRow(
        r[0], r[1], PhoneNumber(r[2], r[3], r[4], r[5]), r[6], _STATES[r[7]], r[8], r[9], r[10], r[11],
        r[12], r[13], r[14], bool(r[15]), r[16], _DELIVERIES.get(r[17]) if r[17] else None, r[18], r[19],
        r[20], bool(r[21]),
    )  # fmt: skip


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted indices as inclusive (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    lo = prev = indices[0]
    for i in indices[1:]:
        if i != prev + 1:
            runs.append((lo, prev))
            lo = i
        prev = i
    runs.append((lo, prev))
    return runs
