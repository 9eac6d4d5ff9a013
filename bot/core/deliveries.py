"""Delivery receipts in the core: one pipeline for every source (HTTP push, message queue, QueryMessage).

1. **Store first.** `Deliveries.accept` writes receipts as they came into the `receipts` inbox in one
   transaction; a push is answered only after that commit, so a crash loses none (the provider pushes
   again after a failed answer).
2. **Match after.** The matcher takes the inbox in order and finds each receipt's recipient: by its
   `TaskId` (every send carries its job's) and number, else by `MessageId` with the number confirmed
   (how a batch answer's ids line up with its numbers is documented nowhere, so a batch's ids are only
   candidates until a receipt names the number). A receipt for a recipient whose send answer is not
   stored yet is held and tried again; one for a job we never had, or held longer than
   RECEIPTS_HOLD_SECONDS, is counted and dropped.
3. **Forward only.** A recipient's delivery state is written once (`delivery IS NULL` in the UPDATE):
   duplicates, late and older receipts change nothing. An `unknown` recipient (its answer was lost)
   becomes accepted with the receipt's outcome, and is counted as settled by the provider.
4. **Sweep.** Accepted messages without a receipt are asked about with QueryMessage at widening delays
   after acceptance (RECEIPTS_CHECK_AFTER), within RECEIPTS_QUERY_RATE of the account's 300/s; answers
   go through the same inbox.

The matcher and the sweep run only in the sending replica (`active`), so one process per deployment
does this work, calls the provider and tells Slack; any replica may accept receipts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from bot.sms import (
    Delivery,
    QueueMessage,
    RateLimiter,
    Receipt,
    SmsClient,
    SmsError,
    describe_delivery,
    from_query,
    number_matches,
)

from .db import Outage
from .schema import jobs, receipts
from .schema import recipients as rtab
from .store import RecipientState, Store

log = logging.getLogger("bot.core.deliveries")

DEFAULT_CHECK_AFTER = (120.0, 900.0, 7200.0, 86400.0)
PAGE = 200  # inbox receipts per matching transaction (short: pushes are stored between pages)
IN_CHUNK = 500  # values per IN (…) list
QUEUE_RETRY = 5.0  # seconds before the queue is tried again after a failure
BATCH_WAIT = 0.5  # seconds the matcher lets receipts gather after a wake-up
OFFER_EVERY = 30.0  # seconds between looks for receipts matched but not shown (and at start)
OFFER_FOR = 86_400.0  # receipts not shown are offered again for up to a day after they changed a job
OFFER_BATCH = 200  # jobs offered again at one look


class QueueSource(Protocol):
    """The provider's receipt queue (bot.sms.ReceiptQueue): long-poll, then delete what was stored."""

    async def receive(self) -> Sequence[QueueMessage]: ...

    async def delete(self, handles: list[str]) -> None: ...


class DeliveryObserver(Protocol):
    async def deliveries_changed(self, job_ids: Sequence[str]) -> None:
        """Receipts changed these jobs' recipients (the Slack layer edits its messages). Once it has
        shown a job's receipts, the observer says so with `Store.receipts_shown`; until then the job is
        offered again (after a restart, or when its edits failed)."""


@dataclass
class MatchResult:
    matched: int = 0
    duplicates: int = 0  # for a recipient whose delivery state was final already (or never sent)
    held: int = 0  # its recipient's answer is not stored yet: kept in the inbox, tried again later
    foreign: int = 0  # not ours, or held too long: dropped
    jobs: set[str] = field(default_factory=set)

    def add(self, other: MatchResult) -> None:
        self.matched += other.matched
        self.duplicates += other.duplicates
        self.held += other.held
        self.foreign += other.foreign
        self.jobs |= other.jobs


class Deliveries:
    def __init__(
        self,
        store: Store,
        client: SmsClient | None,
        observer: DeliveryObserver | None = None,
        *,
        queue: QueueSource | None = None,
        active: Callable[[], bool] = lambda: True,
        check_after: Sequence[float] = DEFAULT_CHECK_AFTER,
        query_rate: float = 100.0,
        hold_seconds: float = 3600.0,
        match_every: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.client = client
        self.observer = observer
        self.queue = queue
        self.active = active
        self.check_after = tuple(sorted(check_after))
        self.hold_seconds = hold_seconds
        self.match_every = match_every
        self.clock = clock
        self.query_limiter = RateLimiter(query_rate, margin=0.0)
        # The first check is scheduled when an outcome is stored (Store.record_outcomes).
        store.first_check = self.check_after[0] if self.check_after and client is not None else None
        self.counts = {"stored": 0, "matched": 0, "duplicates": 0, "held": 0, "foreign": 0, "queried": 0}
        if queue is not None:
            # queue_failures: polls, stores or deletes that failed (each logged; /healthz shows the count)
            self.counts |= {"queue_messages": 0, "queue_unreadable": 0, "queue_failures": 0}
        self._wake = asyncio.Event()
        self._outage = Outage(log, "delivery receipts")
        self._task: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._next_offer = 0.0  # time.monotonic() of the next look for receipts not shown

    # ------------------------------------------------------------------ intake
    async def accept(self, items: Sequence[Receipt], source: str) -> int:
        """Store receipts as they came (one transaction). When this returns, they are safe."""
        now = self.clock()
        rows = [_inbox_row(r, source, now) for r in items if r.delivery is not None]
        if rows:
            await self.store.write(lambda conn: conn.execute(sa.insert(receipts), rows))
            self.counts["stored"] += len(rows)
            self._wake.set()
        return len(rows)

    # ------------------------------------------------------------------ background
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="deliveries")
        if self.queue is not None:
            self._consumer = loop.create_task(self._consume(), name="receipt-queue")

    async def stop(self) -> None:
        for task in (self._task, self._consumer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _consume(self) -> None:
        """The queue's one consumer in the deployment (the sending replica): receive, store, delete. A
        failure before the delete leaves the messages in the queue; they come back and are stored again
        (duplicates change nothing)."""
        assert self.queue is not None
        while True:
            if not self.active():
                await asyncio.sleep(1.0)
                continue
            try:
                messages = await self.queue.receive()
                if not messages:
                    continue
                await self.accept([r for m in messages for r in m.receipts], "queue")
                await self.queue.delete([m.handle for m in messages])
            except Exception as exc:
                self.counts["queue_failures"] += 1
                log.warning("receipt queue: %s; trying again in %.0f s", exc, QUEUE_RETRY)
                await asyncio.sleep(QUEUE_RETRY)
                continue
            self.counts["queue_messages"] += len(messages)
            unreadable = sum(1 for m in messages if m.unreadable)
            if unreadable:
                self.counts["queue_unreadable"] += unreadable
                log.warning("receipt queue: %d message(s) were not receipts; deleted", unreadable)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            if self.active():
                await asyncio.sleep(BATCH_WAIT)  # receipts arriving meanwhile are matched together
                try:
                    await self.match_now()
                    # about a second of QueryMessage calls per turn: matching never waits long behind it
                    await self.sweep_now(limit=max(1, int(self.query_limiter.rate)))
                    if time.monotonic() >= self._next_offer:
                        await self.offer_unshown()
                        self._next_offer = time.monotonic() + OFFER_EVERY
                except Exception as exc:
                    if not self._outage.failed(exc):
                        log.exception("matching delivery receipts failed; trying again")
                else:
                    self._outage.ok()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # arrives as the wake-up does, and stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.match_every):
                    await self._wake.wait()

    async def match_now(self) -> MatchResult:
        """Match the whole inbox, page by page; tell the observer which jobs changed."""
        total = MatchResult()
        after = 0
        while True:
            now = self.clock()
            result, after, more = await self.store.write(
                lambda conn, a=after, n=now: _match(conn, a, n, self.hold_seconds)
            )
            total.add(result)
            if not more:
                break
        for name in ("matched", "duplicates", "foreign"):
            self.counts[name] += getattr(total, name)
        self.counts["held"] = total.held
        if total.foreign:
            log.info("delivery receipts: %d not ours (or never matched) dropped", total.foreign)
        if total.jobs and self.observer is not None:
            try:
                await self.observer.deliveries_changed(sorted(total.jobs))
            except Exception:
                log.exception("reporting deliveries failed (they are stored)")
        return total

    async def offer_unshown(self) -> int:
        """Offer the observer again the jobs whose receipts were matched and not shown: the process
        stopped before its edits, the sending replica changed, or the edits kept failing. Returns how
        many."""
        if self.observer is None:
            return 0
        job_ids = await self.store.unshown_receipts(since=self.clock() - OFFER_FOR, limit=OFFER_BATCH)
        if job_ids:
            await self.observer.deliveries_changed(job_ids)
        return len(job_ids)

    async def sweep_now(self, limit: int = 1000) -> int:
        """Ask the provider about accepted messages whose receipt has not come by their next check."""
        if self.client is None or not self.check_after:
            return 0
        now = self.clock()
        due = await self.store.read(lambda conn: _due(conn, now, limit))
        if not due:
            return 0
        answers: list[Receipt] = []

        async def ask(row: _Due) -> None:
            await self.query_limiter.acquire()
            try:
                resp = await self.client.query(row.message_id)  # type: ignore[union-attr]
            except SmsError as exc:  # DATA_NOT_EXIST, throttled, unreachable: the next check tries again
                log.info("QueryMessage for a message of job %s: %s", row.job_id, exc.code or exc)
                return
            answer = from_query(resp)
            if answer.delivery is not None:
                # The job's TaskId: matched by job and number, so a batch's candidate id is confirmed.
                answers.append(
                    Receipt(**{**_fields(answer), "task_id": row.task_id, "message_id": row.message_id})
                )

        await asyncio.gather(*(ask(row) for row in due))
        self.counts["queried"] += len(due)
        later = self.check_after
        await self.store.write(lambda conn: _advance(conn, due, now, later))
        await self.accept(answers, "query")
        if answers:
            await self.match_now()
        return len(due)


# ---------------------------------------------------------------------- transactions (sync connection)
@dataclass(frozen=True, slots=True)
class _Due:
    job_id: str
    idx: int
    message_id: str
    checks: int
    task_id: str | None


@dataclass(slots=True)
class _Row:
    job_id: str
    idx: int
    e164: str
    state: str
    message_id: str | None
    delivery: str | None


_ROW_COLUMNS = (rtab.c.job_id, rtab.c.idx, rtab.c.e164, rtab.c.state, rtab.c.message_id, rtab.c.delivery)


def _inbox_row(r: Receipt, source: str, now: float) -> dict[str, Any]:
    return {
        "message_id": r.message_id,
        "task_id": r.task_id,
        "to_number": r.to,
        "delivery": str(r.delivery),
        "code": r.code,
        "description": r.description,
        "done_at": r.done_at,
        "segments": r.segments,
        "source": source,
        "received_at": now,
    }


def _fields(r: Receipt) -> dict[str, Any]:
    return {name: getattr(r, name) for name in Receipt.__slots__}  # type: ignore[attr-defined]


def _chunks(values: Iterable[Any]) -> Iterable[list[Any]]:
    items = list(values)
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


def _match(conn: sa.Connection, after: int, now: float, hold: float) -> tuple[MatchResult, int, bool]:
    """One page of the inbox (ids > `after`): apply, drop or keep each receipt. Returns the result, the
    last id seen and whether more pages follow."""
    inbox = conn.execute(
        sa.select(receipts).where(receipts.c.id > after).order_by(receipts.c.id).limit(PAGE)
    ).fetchall()
    result = MatchResult()
    if not inbox:
        return result, after, False
    jobs_by_task: dict[str, list[str]] = {}
    for chunk in _chunks({x.task_id for x in inbox if x.task_id}):
        for job_id, task_id in conn.execute(
            sa.select(jobs.c.id, jobs.c.task_id).where(jobs.c.task_id.in_(chunk))
        ):
            jobs_by_task.setdefault(task_id, []).append(job_id)
    # Recipients by message id: needed up front only for receipts that their TaskId and an unmasked
    # number cannot place (the queue's, without TaskId); the others look an id up when they need it.
    unplaced = {
        x.message_id
        for x in inbox
        if x.message_id and not (jobs_by_task.get(x.task_id or "") and x.to_number and "*" not in x.to_number)
    }
    by_id: dict[str, list[_Row]] = {message_id: [] for message_id in unplaced}
    for chunk in _chunks(unplaced):
        for r in conn.execute(sa.select(*_ROW_COLUMNS).where(rtab.c.message_id.in_(chunk))):
            by_id.setdefault(r.message_id, []).append(_Row(*r))

    def with_id(message_id: str | None) -> list[_Row]:
        if not message_id:
            return []
        if message_id not in by_id:
            query = sa.select(*_ROW_COLUMNS).where(rtab.c.message_id == message_id)
            by_id[message_id] = [_Row(*r) for r in conn.execute(query)]
        return by_id[message_id]

    # Recipients by job and number: the jobs named by TaskId, and those of rows found by id.
    wanted: dict[str, set[str]] = {}
    for x in inbox:
        if x.to_number and "*" not in x.to_number:
            for job_id in jobs_by_task.get(x.task_id or "", []):
                wanted.setdefault(job_id, set()).add("+" + x.to_number)
            for r in by_id.get(x.message_id or "", []):
                wanted.setdefault(r.job_id, set()).add("+" + x.to_number)
    by_number: dict[tuple[str, str], _Row] = {}
    for job_id, numbers in wanted.items():
        for chunk in _chunks(numbers):
            query = sa.select(*_ROW_COLUMNS).where(rtab.c.job_id == job_id, rtab.c.e164.in_(chunk))
            for r in conn.execute(query):
                by_number[(r.job_id, r.e164)] = _Row(*r)

    def in_job(job_id: str, to: str | None, message_id: str | None) -> _Row | None:
        if to and "*" not in to:
            return by_number.get((job_id, "+" + to))
        found = [r for r in with_id(message_id) if r.job_id == job_id]
        if found:
            return found[0]
        if to:  # masked: the one recipient of the job whose number fits
            pattern = "+" + to.replace("*", "_")
            rows = conn.execute(
                sa.select(*_ROW_COLUMNS).where(rtab.c.job_id == job_id, rtab.c.e164.like(pattern)).limit(2)
            ).fetchall()
            if len(rows) == 1:
                return _Row(*rows[0])
        return None

    def in_job_late(job_id: str, to: str | None) -> _Row | None:
        """A recipient of a job not looked up in advance, by its number."""
        if (job_id, "+" + (to or "")) not in by_number and to and "*" not in to:
            query = sa.select(*_ROW_COLUMNS).where(rtab.c.job_id == job_id, rtab.c.e164 == "+" + to)
            found = conn.execute(query).first()
            if found is not None:
                by_number[(job_id, "+" + to)] = _Row(*found)
        return in_job(job_id, to, None)

    done: list[int] = []
    applied: set[tuple[str, int]] = set()
    apply: list[dict[str, Any]] = []
    settle: list[dict[str, Any]] = []
    for x in inbox:
        job_ids = jobs_by_task.get(x.task_id or "", [])
        target = next((r for j in job_ids if (r := in_job(j, x.to_number, x.message_id))), None)
        if target is None and x.message_id:
            rows = with_id(x.message_id)
            target = next((r for r in rows if number_matches(x.to_number, r.e164)), None)
            if target is None:  # the id is a batch candidate of another number of the same job
                target = next((r for r in (in_job_late(r.job_id, x.to_number) for r in rows) if r), None)
        if target is None:
            if (x.task_id and not job_ids and not with_id(x.message_id)) or x.received_at < now - hold:
                result.foreign += 1
                done.append(x.id)
            else:
                result.held += 1
            continue
        if target.state in (RecipientState.QUEUED, RecipientState.IN_FLIGHT):
            if x.received_at < now - hold:
                result.foreign += 1
                done.append(x.id)
            else:
                result.held += 1
            continue
        done.append(x.id)
        key = (target.job_id, target.idx)
        if target.state == RecipientState.FAILED or target.delivery is not None or key in applied:
            result.duplicates += 1
            continue
        (settle if target.state == RecipientState.UNKNOWN else apply).append(_apply_params(target, x, now))
        applied.add(key)
        target.delivery = x.delivery
        result.matched += 1
        result.jobs.add(target.job_id)
        if x.message_id and target.message_id and target.message_id != x.message_id:
            # Candidate ids were crossed: the row that holds this id gets the one this row had.
            for other in with_id(x.message_id):
                if other.job_id == target.job_id and other.idx != target.idx and other.delivery is None:
                    conn.execute(
                        sa.update(rtab)
                        .where(rtab.c.job_id == other.job_id, rtab.c.idx == other.idx)
                        .values(message_id=target.message_id)
                    )
                    other.message_id = target.message_id
        target.message_id = x.message_id or target.message_id
    # One statement each, many rows (the matcher is one task in one replica: no other writer of these
    # columns; the guards keep a final state final all the same).
    if apply:
        conn.execute(_APPLY, apply)
    if settle:
        conn.execute(_SETTLE, settle)
    for chunk in _chunks(done):
        conn.execute(sa.delete(receipts).where(receipts.c.id.in_(chunk)))
    # The jobs whose messages should change, recorded with the change: the observer's edits are made
    # again after a restart, or by the next sending replica (`offer_unshown`). The job's row last, as
    # in `Store.start_job`, the other transaction that writes both: no lock order to deadlock on.
    for chunk in _chunks(result.jobs):
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_(chunk))
            .values(
                receipts_changed=jobs.c.receipts_changed + 1,
                receipts_unshown=sa.func.coalesce(jobs.c.receipts_unshown, now),
            )
        )
    return result, inbox[-1].id, len(inbox) == PAGE


def _apply_params(target: _Row, x: Any, now: float) -> dict[str, Any]:
    return {
        "b_job": target.job_id,
        "b_idx": target.idx,
        "b_state": target.state,
        "b_delivery": x.delivery,
        "b_code": x.code,
        "b_error": x.description,
        "b_at": x.done_at or x.received_at,
        "b_message_id": x.message_id or target.message_id,
        "b_segments": x.segments,
        "b_now": now,
    }


_APPLY = (
    sa.update(rtab)
    .where(
        rtab.c.job_id == sa.bindparam("b_job"),
        rtab.c.idx == sa.bindparam("b_idx"),
        rtab.c.delivery.is_(None),
        rtab.c.state == sa.bindparam("b_state"),
    )
    .values(
        delivery=sa.bindparam("b_delivery"),
        delivery_code=sa.bindparam("b_code"),
        delivery_error=sa.bindparam("b_error"),
        delivered_at=sa.bindparam("b_at"),
        check_at=None,
        message_id=sa.bindparam("b_message_id"),
        segments=sa.func.coalesce(rtab.c.segments, sa.bindparam("b_segments", type_=sa.Integer)),
    )
)
# An unknown recipient the provider's receipt settled: accepted, with the receipt's outcome.
_SETTLE = _APPLY.values(
    state=str(RecipientState.ACCEPTED), reconciled=1, error=None, updated_at=sa.bindparam("b_now")
)


def _due(conn: sa.Connection, now: float, limit: int) -> list[_Due]:
    r = rtab.c
    query = (
        sa.select(r.job_id, r.idx, r.message_id, r.checks, jobs.c.task_id)
        .select_from(rtab.join(jobs, jobs.c.id == r.job_id))
        .where(
            r.check_at <= now,
            r.state == str(RecipientState.ACCEPTED),
            r.delivery.is_(None),
            r.message_id.is_not(None),
        )
        .order_by(r.check_at)
        .limit(limit)
    )
    return [_Due(*row) for row in conn.execute(query)]


def _advance(conn: sa.Connection, due: Sequence[_Due], now: float, check_after: Sequence[float]) -> None:
    """Each asked-about message's next check: the next delay after acceptance, or none after the last."""
    rows = []
    for d in due:
        k = d.checks + 1
        nxt = now + (check_after[k] - check_after[k - 1]) if k < len(check_after) else None
        rows.append({"b_job": d.job_id, "b_idx": d.idx, "b_checks": k, "b_next": nxt})
    stmt = (
        sa.update(rtab)
        .where(rtab.c.job_id == sa.bindparam("b_job"), rtab.c.idx == sa.bindparam("b_idx"))
        .values(checks=sa.bindparam("b_checks"), check_at=sa.bindparam("b_next"))
    )
    if rows:
        conn.execute(stmt, rows)


def describe_row_delivery(delivery: Delivery | None, code: str | None, description: str | None) -> str:
    """A recipient's delivery in words (see bot.sms.receipts.describe)."""
    return describe_delivery(Receipt(None, None, delivery, code=code, description=description))
