"""The background worker: runs send jobs on the event loop, never inside Slack's listener handling.

Exactly-once rules it keeps:
- a recipient is marked `in_flight` in the database before its request can leave;
- its outcome is stored as soon as the answer (or the error) arrives;
- on start-up, jobs left unfinished are resumed: `queued` recipients are sent, `in_flight` ones become
  `unknown` (the request may have reached the provider) and are never resent automatically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from bot.sms import Hooks, MessageType, SmsClient, batch_send_all, fan_out
from bot.sms.errors import InvalidRequestError
from bot.sms.pacing import Outcome

from .store import Job, JobState, Pending, RecipientRow, Store, Summary

log = logging.getLogger("bot.core.worker")

KEEP_FINISHED = 10_000  # completion futures kept for `wait()` after a job finished


class JobObserver(Protocol):
    """What the worker tells the outside world (Slack, in the bot). Errors here never stop a job."""

    async def job_started(self, job: Job, recipients: Sequence[RecipientRow]) -> None:
        """`recipients` are given for single-recipient jobs only (empty otherwise)."""

    async def job_progress(self, job: Job, summary: Summary) -> None: ...

    async def job_finished(self, job: Job, summary: Summary, recipients: Sequence[RecipientRow]) -> None: ...


class NullObserver:
    async def job_started(self, job: Job, recipients: Sequence[RecipientRow]) -> None:
        return None

    async def job_progress(self, job: Job, summary: Summary) -> None:
        return None

    async def job_finished(self, job: Job, summary: Summary, recipients: Sequence[RecipientRow]) -> None:
        return None


class Busy:
    """Counts requests being answered (e.g. Slack requests that must be acked within 3 s). The worker
    lets them go first before starting a job, waiting at most `max_wait` seconds."""

    def __init__(self, max_wait: float = 0.25) -> None:
        self.max_wait = max_wait
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if self.active <= 0:
            self.active = 0
            self._idle.set()

    async def wait_idle(self) -> None:
        if self.active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.max_wait)


class SimulatedCrash(BaseException):
    """Raised by a test's fault hook to stop the worker the way a killed process would: mid-step."""


class Worker:
    def __init__(
        self,
        store: Store,
        client: SmsClient,
        observer: JobObserver | None = None,
        *,
        fault: Callable[[str], None] | None = None,
        busy: Busy | None = None,
    ) -> None:
        self.busy = busy or Busy()
        self.store = store
        self.client = client
        self.observer: JobObserver = observer or NullObserver()
        self._fault = fault
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._done: dict[str, asyncio.Future[Summary]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.crashed: BaseException | None = None
        self.submitted: list[str] = []
        self._running: set[str] = set()
        self._submit_waiters: list[tuple[int, asyncio.Future[list[str]]]] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> list[str]:
        """Recover unfinished jobs (in-flight recipients → unknown), queue them, start consuming."""
        resumed = []
        for job in self.store.unfinished_jobs():
            lost = self.store.in_flight_to_unknown(job.id)
            if lost:
                log.warning(
                    "job %s: %d request(s) were in flight at the last stop; reported unknown", job.id, lost
                )
                meta = dict(job.meta)
                meta["recovered_unknown"] = meta.get("recovered_unknown", 0) + lost
                self.store.set_job(job.id, meta=meta)
            self.submit(job.id)
            resumed.append(job.id)
        self._runner = asyncio.create_task(self._run(), name="sms-worker")
        return resumed

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking jobs; let running ones finish for up to `grace` seconds, then cancel them (their
        in-flight recipients stay in flight and become unknown at the next start; queued ones resume)."""
        if self._runner:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, SimulatedCrash):
                await task

    @property
    def alive(self) -> bool:
        return self._runner is not None and not self._runner.done() and self.crashed is None

    def submit(self, job_id: str) -> None:
        self._future(job_id)
        self._queue.put_nowait(job_id)
        # A connection to the provider opens now, while the job is read: its first request need not
        # wait for a TCP and TLS handshake.
        warming = asyncio.get_running_loop().create_task(self.client.warm_up())
        self._tasks.add(warming)
        warming.add_done_callback(self._tasks.discard)
        self.submitted.append(job_id)
        for count, fut in list(self._submit_waiters):
            if len(self.submitted) >= count and not fut.done():
                fut.set_result(list(self.submitted))
                self._submit_waiters.remove((count, fut))

    async def wait_submitted(self, count: int = 1) -> list[str]:
        """Until `count` jobs have been submitted since start (tests and tooling)."""
        if len(self.submitted) >= count:
            return list(self.submitted)
        fut: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._submit_waiters.append((count, fut))
        return await fut

    async def wait(self, job_id: str) -> Summary:
        """Until `job_id` has finished (its results are stored and reported)."""
        return await self._future(job_id)

    def finished(self, job_id: str) -> bool:
        return self._future(job_id).done()

    def _future(self, job_id: str) -> asyncio.Future[Summary]:
        fut = self._done.get(job_id)
        if fut is None:
            fut = self._done[job_id] = asyncio.get_running_loop().create_future()
        return fut

    async def _run(self) -> None:
        while True:
            job_id = await self._queue.get()
            task = asyncio.create_task(self._run_job(job_id), name=f"job-{job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ one job
    async def _run_job(self, job_id: str) -> None:
        if job_id in self._running:  # submitted twice (e.g. resumed at start and queued again): run it once
            return
        self._running.add(job_id)
        try:
            await self._run_job_once(job_id)
        finally:
            self._running.discard(job_id)

    async def _run_job_once(self, job_id: str) -> None:
        await self.busy.wait_idle()
        job = self.store.get_job(job_id)
        if job is None or job.state == JobState.DONE:
            if job is not None:
                self._resolve(job_id, self.store.summary(job_id))
            return
        try:
            await self._execute(job)
        except SimulatedCrash as exc:
            self.crashed = exc
            log.error("worker stopped by a simulated crash in job %s", job_id)
            fut = self._done.get(job_id)
            if fut and not fut.done():
                fut.set_exception(RuntimeError("worker crashed"))
        except Exception:
            log.exception("job %s stopped on an unexpected error", job_id)
            self.store.in_flight_to_unknown(job_id)
            self.store.queued_to_failed(
                job_id, "Not sent: the send stopped on an internal error before reaching this number."
            )
            await self._finish(job_id)

    async def _execute(self, job: Job) -> None:
        if job.state == JobState.QUEUED:
            self.store.set_job(job.id, state=JobState.RUNNING, started_at=time.time())
            job = self.store.get_job(job.id) or job
        # Full rows only where the observer uses them (a single send's thread); a 10,000-recipient job
        # starts sending from light rows.
        recipients = self.store.recipients(job.id) if job.total == 1 else []
        started = asyncio.create_task(self._notify("job_started", job, recipients))
        pending = self.store.pending(job.id)
        if pending:
            await self._send(job, pending)
        await started
        await self._finish(job.id)

    async def _send(self, job: Job, pending: list[Pending]) -> None:
        common = {"sender_id": job.sender_id, "task_id": job.task_id, "validity_period": job.validity}
        requests = []
        if job.kind != "batch":
            valid = []
            for r in pending:
                try:
                    requests.append(
                        self.client.send_request(to=r.number, message=r.message, type=job.type, **common)
                    )
                    valid.append(r)
                except InvalidRequestError as exc:
                    # Checked at draft time; kept for rows stored by older code.
                    self.store.fail_unsent(job.id, r.idx, "INVALID", exc.message)
            pending = valid
        idx_at = [r.idx for r in pending]  # helper position -> recipient index
        last_progress = 0.0

        async def prepare(positions: Sequence[int]) -> None:
            self.store.store_rows(job.id, [idx_at[p] for p in positions])

        async def before_send(positions: Sequence[int]) -> None:
            self.store.mark_in_flight(job.id, [idx_at[p] for p in positions])
            self._hit("after_mark_in_flight")

        async def on_results(outcomes: Sequence[Outcome]) -> None:
            nonlocal last_progress
            self._hit("before_store_results")
            for o in outcomes:
                o.index = idx_at[o.index]
            self.store.record_outcomes(job.id, outcomes)
            now = time.monotonic()
            if now - last_progress >= 0.5:
                last_progress = now
                await self._notify("job_progress", job, self.store.summary(job.id))

        hooks = Hooks(before_send=before_send, on_results=on_results, prepare=prepare)
        if job.kind == "batch":
            await batch_send_all(
                self.client,
                [r.number for r in pending],
                [r.message for r in pending],
                hooks=hooks,
                type=job.type or MessageType.NOTIFY,
                **common,
            )
        elif requests:
            await fan_out(self.client, requests, hooks=hooks)

    async def _finish(self, job_id: str) -> None:
        summary = self.store.summary(job_id)
        self.store.set_job(job_id, state=JobState.DONE, finished_at=time.time())
        job = self.store.get_job(job_id)
        assert job is not None
        await self._notify("job_finished", job, summary, self.store.recipients(job_id))
        self._resolve(job_id, summary)
        if not self._running - {job_id}:  # no other job sending: a quiet moment for the checkpoint
            self.store.checkpoint()

    def _resolve(self, job_id: str, summary: Summary) -> None:
        fut = self._future(job_id)
        if not fut.done():
            fut.set_result(summary)
        while len(self._done) > KEEP_FINISHED:  # oldest first; a long-running bot must not keep them all
            oldest = next(iter(self._done))
            if not self._done[oldest].done():
                break
            del self._done[oldest]

    async def _notify(self, event: str, *args: object) -> None:
        try:
            await getattr(self.observer, event)(*args)
        except Exception:
            log.exception("reporting %s failed (the send itself is unaffected)", event)

    def _hit(self, point: str) -> None:
        if self._fault is not None:
            self._fault(point)
