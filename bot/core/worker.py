"""The background worker: runs send jobs on the event loop, never inside Slack's listener handling.

Several processes (replicas) may share one database. Which one does what is decided there:
- **One sending replica.** The `sender` lease (a row in `leases`) names the one process that talks to
  the provider, so the account's limits (≤ 1 batch call/s, ≤ SMS_SINGLE_RATE single sends/s) hold
  whatever the number of replicas: its in-process limiter sees every request. The others take Slack
  traffic and create jobs; when the sender stops renewing (it died), another takes over once the lease
  has ended.
- **A job runs in one process at a time**, claimed with a lease (`jobs.owner`, `jobs.lease_until`;
  `FOR UPDATE SKIP LOCKED` on PostgreSQL) that the heartbeat renews with the sender lease.
- **Fencing.** A recipient moves to `in_flight` only through a statement that moves rows still queued
  of a job whose lease this process holds for at least FENCE more seconds; the process sends only the
  rows it moved. A process that cannot renew stops sending FENCE seconds before its lease ends, so the
  next sender's first request comes more than a second after the last one of the previous sender.

Exactly-once rules:
- a recipient is marked `in_flight` after the rate limiter granted its request and before the request
  is written; a request waiting for a retry's backoff is withdrawn (queued again) meanwhile;
- its outcome is stored as soon as the answer (or the error) arrives;
- a job claimed by a process turns its `in_flight` recipients into `unknown` (the request may have
  reached the provider: never resent automatically) and sends the queued ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.sms import Hooks, InvalidRequestError, MessageType, Outcome, SmsClient, batch_send_all, fan_out

from .consent import cap_reason, over_cap
from .db import Outage, reason, unreachable
from .store import Claim, Control, Job, JobKind, JobStart, JobState, Pending, RecipientRow, Store, Summary
from .windows import WindowCheck, WindowRules

log = logging.getLogger("bot.core.worker")

KEEP_FINISHED = 10_000  # completion futures kept for `wait()` after a job finished
SENDER = "sender"
FENCE = 2.0  # seconds before its lease ends that a process stops writing requests (> the 1 s batch interval)
HANDOVER = 1.1  # after a clean stop, the next sender waits this long (> the 1 s batch interval, margin)
MAX_JOBS = 8  # jobs one sender runs at once (they share the account's limiter)
YIELD_EVERY = 200  # requests built before the event loop gets a turn (about 10 ms of work)
NOTICE_AFTER = 5.0  # seconds a send waits for the database before its sender is told (a blip says nothing)
REPORT_EVERY = 5.0  # seconds between the sending replica's looks for finishes nobody was told
REPORT_FOR = 86_400.0  # a finish nobody was told is reported again for up to a day after it
REPORT_BATCH = 20  # finishes reported again at one look
REPORT_RETRY = 300.0  # seconds before a finish that could not be told again is tried once more


class NotReported(Exception):
    """Raised by an observer's `job_finished` when nobody could be told (Slack could not be reached, or
    refused every way): the job stays unreported, and the sending replica reports it again later."""


class JobObserver(Protocol):
    """What the worker tells the outside world (Slack, in the bot). Errors here never stop a job."""

    async def job_started(self, job: Job, recipients: Sequence[RecipientRow]) -> None:
        """`recipients` are given for single-recipient jobs only (empty otherwise)."""

    async def job_progress(self, job: Job, summary: Summary) -> None: ...

    async def job_finished(self, job: Job, summary: Summary, recipients: Sequence[RecipientRow]) -> None:
        """`recipients`: a single send's one; of a larger job, those that did not get through
        (failed, unknown, not delivered), as `Store.not_delivered`. Returns once someone was told; an
        exception (`NotReported`, or any other) leaves the finish to be reported again later, so the
        same finish can come more than once (a stop between telling and recording it)."""

    async def job_waiting(self, job: Job) -> None:
        """The job's send has waited NOTICE_AFTER seconds for the database; it goes on by itself. Said
        without the database (the observer cannot read it now)."""

    async def job_going_on(self, job: Job) -> None:
        """The database answers again, and the job said to be waiting goes on."""


class NullObserver:
    async def job_started(self, job: Job, recipients: Sequence[RecipientRow]) -> None:
        return None

    async def job_progress(self, job: Job, summary: Summary) -> None:
        return None

    async def job_finished(self, job: Job, summary: Summary, recipients: Sequence[RecipientRow]) -> None:
        return None

    async def job_waiting(self, job: Job) -> None:
        return None

    async def job_going_on(self, job: Job) -> None:
        return None


class Busy:
    """Counts requests being answered (e.g. Slack requests that must be acked within 3 s). The worker
    lets them go first before starting work: it waits until none has been in progress for `quiet`
    seconds (a burst's requests arrive a little apart, and the server counts each only once it has
    read it), and at most `max_wait` seconds in all."""

    def __init__(self, max_wait: float = 0.25, quiet: float = 0.005) -> None:
        self.max_wait = max_wait
        self.quiet = quiet
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._left_at = -math.inf  # the event loop's time when the last request was answered

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        self._left_at = asyncio.get_running_loop().time()
        if self.active <= 0:
            self.active = 0
            self._idle.set()

    async def wait_idle(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while (now := loop.time()) < deadline:
            if self.active:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._idle.wait()
                continue
            rest = self._left_at + self.quiet - now
            if rest <= 0:
                return
            await asyncio.sleep(min(rest, deadline - now))


class SimulatedCrash(BaseException):
    """Raised by a test's fault hook to stop the worker the way a killed process would: mid-step."""


class LeaseLost(Exception):
    """This process no longer holds the job (or the sender lease): it must not send any more of it."""


class Interrupted(Exception):
    """Raised by the worker's own hook before a request leaves: the send stops after what is in flight
    has its answer. `control` says why: someone paused or cancelled the job, or (None) a number of this
    request was opted out meanwhile, and the rest is sent from what is still queued."""

    def __init__(self, control: Control | None) -> None:
        super().__init__(str(control or "opted out"))
        self.control = control


@dataclass
class _Run:
    """What one job's run in this process keeps when the database cannot be reached for a while."""

    unsent: set[int] = field(default_factory=set)  # marked or withdrawn without an answer: never written
    announced: asyncio.Task[bool] | None = None  # its "job started" notice, given once
    job: Job | None = None  # as it last started here (what a notice while the database is away names)


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        store: Store,
        client: SmsClient,
        observer: JobObserver | None = None,
        *,
        fault: Callable[[str], None] | None = None,
        busy: Busy | None = None,
        lease_seconds: float = 15.0,
        poll_seconds: float = 0.5,
        name: str | None = None,
        per_number_daily: int = 0,
        windows: WindowRules | None = None,
        notice_after: float = NOTICE_AFTER,
        report_every: float = REPORT_EVERY,
    ) -> None:
        if lease_seconds <= FENCE * 2:
            raise ValueError(f"lease_seconds must be more than {FENCE * 2:g}")
        self.busy = busy or Busy()
        self.store = store
        self.client = client
        self.observer: JobObserver = observer or NullObserver()
        self.name = name or process_name()
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.notice_after = notice_after
        self.report_every = report_every
        self.per_number_daily = per_number_daily
        self.windows = windows if windows is not None and windows.active else None
        self._fault = fault
        self._wake = asyncio.Event()
        self._done: dict[str, asyncio.Future[Summary]] = {}
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warming: asyncio.Task[Any] | None = None  # the latest warm-up of the provider's pool
        self._runner: asyncio.Task[None] | None = None
        self._lease_until = 0.0
        self._renew_at = 0.0
        self._report_at = 0.0  # the next look for finishes nobody was told
        self._reporting: dict[str, asyncio.Task[None]] = {}
        self._outage = Outage(log, "worker")
        self._sender = asyncio.Event()
        self._unlisten: Callable[[], Awaitable[None]] | None = None
        self._relisten = False  # the listening connection ended: listen again
        self.crashed: BaseException | None = None
        self.submitted: list[str] = []  # the latest jobs submitted here, oldest first (tests, tooling)
        self.submitted_count = 0  # all of them since start
        self._submit_waiters: list[tuple[int, asyncio.Future[list[str]]]] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the heartbeat: become the sender when the lease is free, claim and run jobs. On
        PostgreSQL, a job created by another replica wakes it at once (else: the next poll)."""
        try:
            self._unlisten = await self.store.listen(self._wake.set, self._listen_lost)
        except Exception:
            log.warning(
                "cannot listen for new jobs; polling every %.1f s instead", self.poll_seconds, exc_info=True
            )
        self._runner = asyncio.create_task(self._run(), name="sms-worker")

    def _listen_lost(self) -> None:
        """The listening connection ended (a database restart): the heartbeat listens again once the
        database answers; meanwhile new jobs are found by polling."""
        self._relisten = True
        self._wake.set()

    async def _listen_again(self) -> None:
        self._relisten = False
        if self._unlisten is not None:
            await self._unlisten()
            self._unlisten = None
        try:
            self._unlisten = await self.store.listen(self._wake.set, self._listen_lost)
        except Exception:
            self._relisten = True  # tried again at the next heartbeat
            raise
        log.info("listening for new jobs again")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let running jobs finish for up to `grace` seconds, then cancel them (their
        in-flight recipients become unknown when the job is next claimed; queued ones are sent then).
        The leases are handed back so that another process (or the next start) can go on at once,
        a pacing interval later."""
        if self._runner:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        running = list(self._jobs.values())
        if running:
            await asyncio.wait(running, timeout=grace)
        for task in [*self._jobs.values(), *self._tasks]:
            task.cancel()
        for task in [*running, *list(self._tasks)]:
            with contextlib.suppress(asyncio.CancelledError, SimulatedCrash, Exception):
                await task
        if self._unlisten is not None:
            with contextlib.suppress(Exception):
                await self._unlisten()
        with contextlib.suppress(Exception):
            await self.store.release_jobs(self.name)
            if self._lease_until:
                # Nothing more leaves this process: the next sender may start one batch interval on.
                await self.store.release_lease(SENDER, self.name, hold=HANDOVER)

    @property
    def alive(self) -> bool:
        return self._runner is not None and not self._runner.done() and self.crashed is None

    @property
    def is_sender(self) -> bool:
        return self._lease_until > self.store.clock()

    async def wait_sender(self) -> None:
        """Until this process is the sending replica (tests and tooling)."""
        await self._sender.wait()

    def submit(self, job_id: str) -> None:
        """A job was created here: look for it now rather than at the next poll (the sending replica may
        be another process, which finds it at its next poll)."""
        self._future(job_id)
        self._wake.set()
        if self.is_sender and (self._warming is None or self._warming.done()):
            # A connection to the provider opens now, while the job is read: its first request need
            # not wait for a TCP and TLS handshake. One warm-up at a time: the jobs of a burst, submitted
            # together, share it.
            self._warming = self._spawn(self.client.warm_up())
        self.submitted.append(job_id)
        self.submitted_count += 1
        if len(self.submitted) > 2 * KEEP_FINISHED:  # a long-running bot keeps the latest ones only
            del self.submitted[:-KEEP_FINISHED]
        for count, fut in list(self._submit_waiters):
            if self.submitted_count >= count and not fut.done():
                fut.set_result(list(self.submitted))
                self._submit_waiters.remove((count, fut))

    async def wait_submitted(self, count: int = 1) -> list[str]:
        """Until `count` jobs have been submitted in this process since start (tests and tooling); returns
        the latest ones (`submitted`)."""
        if self.submitted_count >= count:
            return list(self.submitted)
        fut: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._submit_waiters.append((count, fut))
        return await fut

    async def wait(self, job_id: str) -> Summary:
        """Until `job_id` has finished in this process (its results are stored and reported)."""
        return await self._future(job_id)

    def finished(self, job_id: str) -> bool:
        return self._future(job_id).done()

    def _future(self, job_id: str) -> asyncio.Future[Summary]:
        fut = self._done.get(job_id)
        if fut is None:
            fut = self._done[job_id] = asyncio.get_running_loop().create_future()
        return fut

    # ------------------------------------------------------------------ heartbeat
    async def _run(self) -> None:
        while True:
            # Cleared before the tick, not after: a wake-up that comes while the tick runs (a NOTIFY
            # just after claim_jobs looked) must start another tick, not wait for the next poll.
            self._wake.clear()
            try:
                # Woken by a job just created: Slack's answer to that request goes out first.
                await self.busy.wait_idle()
                await self._tick()
                if self._relisten:
                    await self._listen_again()
            except Exception as exc:
                if not self._outage.failed(exc):
                    log.exception("worker heartbeat failed; trying again")
            else:
                self._outage.ok()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # arrives as the wake-up does, and stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()

    async def _tick(self) -> None:
        now = self.store.clock()  # the database's clock (a test's own, to move through hours at once)
        if now >= self._renew_at or not self.is_sender:
            until = await self.store.acquire_lease(SENDER, self.name, self.lease_seconds)
            if until is None:
                if self._lease_until:
                    log.warning("lost the sender lease: stopping %d job(s) here", len(self._jobs))
                    self._lease_until = 0.0
                    self._sender.clear()
                    for task in self._jobs.values():
                        task.cancel()
                return
            if not self._lease_until:
                log.info("this process (%s) is now the sending replica", self.name)
                self._sender.set()
            self._lease_until = until
            self._renew_at = now + self.lease_seconds / 3
            if self._jobs:
                kept = await self.store.renew_jobs(self.name, until, self._jobs)
                for job_id in set(self._jobs) - kept:
                    log.warning("job %s: lease lost; it stops here", job_id)
                    self._jobs[job_id].cancel()
        if len(self._jobs) < MAX_JOBS:
            claims = await self.store.claim_jobs(
                self.name, self._lease_until, limit=MAX_JOBS - len(self._jobs), skip=self._jobs
            )
            for claim in claims:
                task = asyncio.create_task(self._run_job(claim), name=f"job-{claim.job_id}")
                self._jobs[claim.job_id] = task
                task.add_done_callback(lambda _t, j=claim.job_id: self._job_ended(j))
        if now >= self._report_at:
            self._report_at = now + self.report_every
            await self._report_unreported(now)

    def _job_ended(self, job_id: str) -> None:
        """A place among MAX_JOBS is free: the heartbeat looks for the next job now, not at its next poll
        (a burst of single sends would otherwise go MAX_JOBS a poll)."""
        self._jobs.pop(job_id, None)
        self._wake.set()

    async def _report_unreported(self, now: float) -> None:
        """Finishes nobody was told (the process that finished them stopped first, or Slack or the
        database could not be reached then): reported now, each held by this process meanwhile. One that
        fails again is held for REPORT_RETRY seconds, then tried at the next look."""
        job_ids = await self.store.claim_unreported(
            self.name, self._lease_until, since=now - REPORT_FOR, limit=REPORT_BATCH
        )
        for job_id in job_ids:
            if job_id in self._reporting or job_id in self._jobs:
                continue
            task = self._spawn(self._report_again(job_id))
            self._reporting[job_id] = task
            task.add_done_callback(lambda _t, j=job_id: self._reporting.pop(j, None))

    async def _report_again(self, job_id: str) -> None:
        try:
            job, summary, recipients = await self.store.finish_report(job_id)
        except Exception as exc:
            if not unreachable(exc):
                log.exception("job %s: could not read its finish to report it", job_id)
            return
        log.info("job %s: nobody was told of its finish; reporting it now", job_id)
        if await self._notify("job_finished", job, summary, recipients):
            await self._reported(job_id)
            return
        # Twice untold: Slack may be down for a while, or refuse this sender for good (an account
        # deactivated since): tried every REPORT_RETRY seconds rather than at every look.
        with contextlib.suppress(Exception):  # else at the next look after its hold: no harm
            await self.store.renew_jobs(self.name, self.store.clock() + REPORT_RETRY, [job_id])

    # ------------------------------------------------------------------ one job
    async def _run_job(self, claim: Claim) -> None:
        """Run a claimed job. When the database cannot be reached (a restart, a failover), the send
        stops before its next request; the outcomes of the requests that left are kept until they can
        be stored (`_stored`), and the job goes on here once the database answers, if this process
        still holds it. Nothing queued is failed for it, and nothing that did not leave is reported
        unknown: the rows of a mark or a withdrawal that got no answer (`_Run.unsent`) are queued again."""
        job_id = claim.job_id
        await self.busy.wait_idle()
        run = _Run()
        while True:
            try:
                if run.unsent:
                    await self.store.withdraw(job_id, run.unsent)
                    run.unsent.clear()
                await self._run_claimed(claim, run)
                return
            except Exception as exc:
                if not unreachable(exc):
                    raise
                log.warning(
                    "job %s: the database cannot be reached (%s); the send goes on when it can",
                    job_id, reason(exc),
                )  # fmt: skip
            if not await self._held_again(job_id, run):
                return
            claim = Claim(job_id, recovered=False)

    async def _held_again(self, job_id: str, run: _Run) -> bool:
        """After the database could not be reached: wait until it answers, then whether this process
        still holds the job. The heartbeat renews the sender lease meanwhile, or stops this job if
        another process has become the sender. A wait of NOTICE_AFTER seconds or more is told to the
        job's sender, and so is its end."""
        delay = 0.1
        loop = asyncio.get_running_loop()
        notice_at = loop.time() + self.notice_after
        told: asyncio.Task[Any] | None = None
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            if told is None and run.job is not None and loop.time() >= notice_at:
                told = self._spawn(self._notify("job_waiting", run.job))  # Slack calls: not in the way
            if not self.is_sender:
                continue
            try:
                kept = await self.store.renew_jobs(self.name, self._lease_until, [job_id])
            except Exception as exc:
                if unreachable(exc):
                    continue
                raise
            if job_id in kept:
                log.info("job %s: the database answers again; the send goes on", job_id)
                if told is not None:
                    self._spawn(self._after(told, lambda job=run.job: self._notify("job_going_on", job)))
                return True
            log.warning("job %s: another process holds it now; it goes on there", job_id)
            return False

    @staticmethod
    async def _after(first: asyncio.Task[Any], then: Callable[[], Awaitable[object]]) -> None:
        """`then()`, once `first` has ended (two notices, in the order they were given)."""
        await asyncio.wait([first])
        await then()

    async def _stored(self, job_id: str, write: Callable[[], Awaitable[None]]) -> None:
        """`write` (idempotent: outcomes of requests that left), tried again while the database cannot
        be reached, until it can: what the provider answered is not lost to a database restart."""
        delay = 0.1
        warned = False
        while True:
            try:
                await write()
            except Exception as exc:
                if not unreachable(exc):
                    raise
                if not warned:
                    log.warning(
                        "job %s: the database cannot be reached (%s); the provider's answers are kept "
                        "until they can be stored", job_id, reason(exc),
                    )  # fmt: skip
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if warned:
                log.info("job %s: the provider's answers kept meanwhile are stored", job_id)
            return

    async def _run_claimed(self, claim: Claim, run: _Run) -> None:
        job_id = claim.job_id
        start = await self.store.start_job(job_id)
        if start is None:
            return
        run.job = start.job
        if start.lost:
            log.warning(
                "job %s: %d request(s) were in flight at the last stop; reported unknown", job_id, start.lost
            )
        if claim.recovered:
            log.info("job %s: taken over after its previous process stopped", job_id)
        if start.copied:
            log.warning(
                "job %s: %d recipient(s) copied from its draft here; the process that confirmed it "
                "stopped before it could", job_id, start.copied,
            )  # fmt: skip
        if start.job.state == JobState.DONE:
            if run.announced is not None:  # it finished here, but the database's answer never came
                await self._finish(job_id)  # so nobody was told: tell them now
                return
            self._resolve(job_id, await self.store.summary(job_id))
            return
        try:
            await self._execute(start, run)
        except SimulatedCrash as exc:
            self.crashed = exc
            log.error("worker stopped by a simulated crash in job %s", job_id)
            fut = self._done.get(job_id)
            if fut and not fut.done():
                fut.set_exception(RuntimeError("worker crashed"))
        except (LeaseLost, asyncio.CancelledError):
            log.warning("job %s: stopped in this process; whoever holds it next goes on", job_id)
            raise
        except Exception as exc:
            if unreachable(exc):  # not the job's fault: it goes on when the database is back
                raise
            ref = secrets.token_hex(4)
            log.exception("job %s stopped on an unexpected error ref=%s", job_id, ref)
            await self.store.in_flight_to_unknown(job_id)
            await self.store.queued_to_failed(
                job_id,
                f"Not sent: the send stopped on an internal error (reference {ref}) before reaching this "
                "number.",
            )
            await self._finish(job_id)

    async def _execute(self, start: JobStart, run: _Run) -> None:
        job = start.job
        if run.announced is None:  # once, however often the database made the job start again here
            run.announced = asyncio.create_task(self._notify("job_started", job, start.rows))
        started = run.announced
        pending, control = start.pending, job.control
        while True:
            while pending and control is None:
                try:
                    await self._send(job, pending, run.unsent)
                    pending = []
                except Interrupted as stop:
                    control = stop.control  # None: opted out meanwhile; the rest, from what is queued
                    pending = await self.store.pending(job.id)
            if control != Control.PAUSE or not (pending or await self.store.queued_left(job.id)):
                break
            # Nothing of it is in flight now (the send waited for every answer): nobody's until resumed.
            parked = await self.store.park_job(job.id, self.name)
            if parked is not None:
                await started
                log.info("job %s: paused by %s", job.id, parked.control_by)
                await self._progress(parked)
                return
            # Resumed (or cancelled) before it was parked: carry on here, as asked now.
            job = await self.store.get_job(job.id) or job
            pending, control = await self.store.pending(job.id), job.control
        if control is None and job.type == MessageType.MKT:  # only marketing texts wait for windows
            waiting = await self.store.defer_job(job.id, self.name)
            if waiting is not None:  # the rest waits for send windows: nobody's until the first opens
                await started
                log.info("job %s: the rest waits for send windows, from %.0f", job.id, waiting.run_at or 0)
                await self._progress(waiting)
                return
        if control == Control.CANCEL:
            cancelled = await self.store.cancel_queued(job.id)
            log.info("job %s: cancelled, %d recipient(s) not sent", job.id, cancelled)
        await started
        await self._finish(job.id)

    async def _send(self, job: Job, pending: list[Pending], unsent: set[int]) -> None:
        """Send `pending`. The rows of a mark or a withdrawal that failed because the database could not
        be reached go into `unsent`: their requests were not written, whatever the database holds."""
        if self.windows is not None and job.type == MessageType.MKT:
            pending = await self._hold_outside_windows(job, pending)
            if not pending:
                return
        if self.per_number_daily > 0:  # checked again now: other sends may have come first since confirmation
            capped = await over_cap(
                self.store, [r.number.e164 for r in pending], self.per_number_daily, exclude_job=job.id
            )
            if capped:
                over = [r.idx for r in pending if r.number.e164 in capped]
                await self.store.fail_unsent_many(
                    job.id, over, "DAILY_CAP", cap_reason(self.per_number_daily)
                )
                log.info("job %s: %d recipient(s) over the daily cap, not sent", job.id, len(over))
                pending = [r for r in pending if r.number.e164 not in capped]
                if not pending:
                    return
        common = {"sender_id": job.sender_id, "task_id": job.task_id, "validity_period": job.validity}
        requests = []
        if job.kind != JobKind.BATCH:
            valid = []
            for n, r in enumerate(pending, 1):
                if n % YIELD_EVERY == 0:  # thousands of validated requests: let Slack's requests in between
                    await asyncio.sleep(0)
                try:
                    requests.append(
                        self.client.send_request(to=r.number, message=r.message, type=job.type, **common)
                    )
                    valid.append(r)
                except InvalidRequestError as exc:
                    # Checked at draft time; kept for rows stored by older code.
                    await self.store.fail_unsent(job.id, r.idx, "INVALID", exc.message)
            pending = valid
        idx_at = [r.idx for r in pending]  # helper position -> recipient index
        last_progress = 0.0

        optouts = None if job.meta.get("optout_override") else (job.type or "NOTIFY")

        async def before_send(positions: Sequence[int]) -> None:
            wanted = [idx_at[p] for p in positions]
            try:
                marked = await self.store.mark_for_send(
                    job.id, wanted, owner=self.name, fence=FENCE, optouts=optouts
                )
            except Exception as exc:
                if unreachable(exc):  # committed or not, none of these is written now
                    unsent.update(wanted)
                raise
            if marked.opted_out:
                log.info(
                    "job %s: %d recipient(s) opted out meanwhile, not sent", job.id, len(marked.opted_out)
                )
                raise Interrupted(None)
            if marked.control is not None:
                raise Interrupted(marked.control)
            if marked.moved != len(wanted):
                raise LeaseLost(
                    f"job {job.id}: {len(wanted) - marked.moved} recipient(s) could not be marked"
                )
            self._hit("after_mark_in_flight")

        async def withdraw(positions: Sequence[int]) -> None:
            wanted = [idx_at[p] for p in positions]
            try:
                await self.store.withdraw(job.id, wanted)
            except Exception as exc:
                if unreachable(exc):  # the send stops: the retry is not written
                    unsent.update(wanted)
                raise

        progress: asyncio.Task[Any] | None = None

        async def on_results(outcomes: Sequence[Outcome]) -> None:
            nonlocal last_progress, progress
            self._hit("before_store_results")
            for o in outcomes:
                o.index = idx_at[o.index]
            await self._stored(job.id, lambda: self.store.record_outcomes(job.id, outcomes))
            if job.total == 1:  # its one outcome is in: the job's finish comes next, with the summary
                return
            now = time.monotonic()
            if now - last_progress >= 0.5 and (progress is None or progress.done()):
                last_progress = now
                # Beside the send, not in its way: the next answers are stored while this one is read.
                progress = self._spawn(self._progress(job))

        hooks = Hooks(before_send=before_send, withdraw=withdraw, on_results=on_results)
        if job.kind == JobKind.BATCH:
            await batch_send_all(
                self.client,
                [r.number for r in pending],
                [r.message for r in pending],
                hooks=hooks,
                keep=False,  # every outcome is stored by `on_results` as it comes
                type=job.type or MessageType.NOTIFY,
                **common,
            )
        elif requests:
            await fan_out(self.client, requests, hooks=hooks)

    async def _hold_outside_windows(self, job: Job, pending: list[Pending]) -> list[Pending]:
        """Marketing texts whose recipient is outside their send window now wait for it (checked again
        at every round: the clock moves, and a job may start long after its confirmation)."""
        assert self.windows is not None
        check = WindowCheck(self.windows, self.store.clock())
        held: dict[int, float] = {}
        ready = []
        for n, r in enumerate(pending, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            opens = check.opens_at(r.number)
            if opens is None:
                ready.append(r)
            else:
                held[r.idx] = opens
        if held:
            await self.store.hold(job.id, held)
            log.info("job %s: %d marketing text(s) wait for their send window", job.id, len(held))
        return ready

    async def _finish(self, job_id: str) -> None:
        job, summary, recipients = await self.store.complete_job(job_id)
        if await self._notify("job_finished", job, summary, recipients):
            await self._reported(job_id)
        self._resolve(job_id, summary)
        if not set(self._jobs) - {job_id}:  # no other job sending: a quiet moment for the checkpoint
            await self.store.checkpoint()

    def _resolve(self, job_id: str, summary: Summary) -> None:
        fut = self._future(job_id)
        if not fut.done():
            fut.set_result(summary)
        while len(self._done) > KEEP_FINISHED:  # oldest first; a long-running bot must not keep them all
            oldest = next(iter(self._done))
            if not self._done[oldest].done():
                break
            del self._done[oldest]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task of this worker's (cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _progress(self, job: Job) -> None:
        try:
            summary = await self.store.summary(job.id)
        except Exception as exc:
            if not unreachable(exc):  # else the worker has said so; the next progress or the finish tells
                log.exception("job %s: could not read its progress", job.id)
            return
        await self._notify("job_progress", job, summary)

    async def _reported(self, job_id: str) -> None:
        try:
            await self.store.mark_reported(job_id)
        except Exception as exc:  # told, but not recorded: the sending replica tells it again later
            if unreachable(exc):
                log.warning(
                    "job %s: its finish was told, but that could not be recorded (%s)", job_id, reason(exc)
                )
            else:
                log.exception("job %s: its finish was told, but that could not be recorded", job_id)

    async def _notify(self, event: str, *args: object) -> bool:
        """Whether the observer took it; its errors are logged and never stop a job."""
        try:
            await getattr(self.observer, event)(*args)
        except NotReported as exc:
            log.warning("reporting %s failed: %s", event, exc)
            return False
        except Exception as exc:
            if unreachable(exc):  # the observer reads the database too (Slack's own state)
                log.warning("reporting %s failed: the database cannot be reached (%s)", event, reason(exc))
            else:
                log.exception("reporting %s failed (the send itself is unaffected)", event)
            return False
        return True

    def _hit(self, point: str) -> None:
        if self._fault is not None:
            self._fault(point)
