"""Sending to many recipients as fast as the provider allows, with a per-recipient outcome for each.

- `fan_out`: N single sends (SendMessageToGlobe), concurrently, paced by the account's single-send limiter.
- `batch_send_all`: N recipients in chunks of ≤ 1,000 (BatchSendMessageToGlobe), ≤ 1 call/s.

Both report progress, and take hooks that let a caller persist state:
- `before_send(indices)` is awaited after the rate limiter granted those recipients' requests and just
  before they are written: "in flight" then means "may have left this machine", never "waiting for its
  turn". Single sends granted while one call is under way are handed over together in the next call,
  so a fan-out at 2,000/s makes one call per few requests, not one per request; at most MARK_GROUP
  in one call, which bounds what a crash right after a call leaves marked but not written. If it
  raises, those requests are not sent and the whole send stops.
- `withdraw(indices)` is awaited when an attempt certainly did not reach the provider and a retry waits
  for its backoff: those recipients are no longer in flight until `before_send` says so again.
- `on_results(outcomes)` after answers arrive (in groups), `on_progress(done, total)` after that.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .client import MAYBE, SmsClient
from .errors import NotSentError, OutcomeUnknownError, SmsError
from .models import MAX_BATCH, BatchSendRequest, BatchSendResponse, SendRequest, SendResponse
from .phone import PhoneNumber, mask

log = logging.getLogger("bot.sms.pacing")


class Status(StrEnum):
    ACCEPTED = "accepted"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class Outcome:
    index: int
    to: str  # API form: dialing code and number, digits only
    status: Status
    message_id: str | None = None
    segments: int | None = None
    code: str | None = None
    error: str | None = None
    request_id: str | None = None
    country: str | None = None
    carrier: str | None = None
    retryable: bool = False
    # A batch answer's `MessageIdList` entry at this number's position among the accepted ones: how the
    # list lines up with `To` is documented nowhere, so it is only a candidate until a receipt or a
    # QueryMessage answer names the number (bot.sms.receipts).
    candidate_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "status": self.status.value,
            "message_id": self.message_id,
            "error": self.error,
            "code": self.code,
            "segments": self.segments,
        }


@dataclass
class Hooks:
    before_send: Callable[[Sequence[int]], Awaitable[None]] | None = None
    withdraw: Callable[[Sequence[int]], Awaitable[None]] | None = None
    on_results: Callable[[Sequence[Outcome]], Awaitable[None] | None] | None = None
    on_progress: Callable[[int, int], Awaitable[None] | None] | None = None
    _done: int = field(default=0, init=False)

    async def results(self, outcomes: Sequence[Outcome], total: int) -> None:
        self._done += len(outcomes)
        if self.on_results:
            await _maybe_await(self.on_results(outcomes))
        if self.on_progress:
            await _maybe_await(self.on_progress(self._done, total))


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


class HookFailed(Exception):
    """A caller's hook raised before a request was written: that request did not leave."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


# The most single sends `before_send` is handed at once. A crash between its call and the writes leaves
# that many "may have left" that did not: the next process reports them unknown and never sends them.
# Handing over all that were granted meanwhile made that one group as large as the caller's slowest
# call allowed: 45 recipients at 2,000/s, behind a 30 ms commit on a busy machine (the median group was
# 2, the median call 1.3 ms). Capped, a slow call holds the next grants back instead, and the calls
# after it, fast again, catch up: 16 recipients at 1.3 ms a call is 12,000/s.
MARK_GROUP = 16


class _Marks:
    """Hands granted indices to `before_send` in groups: the ones granted while a call is under way go
    together in the next call, at most `most` at once. Each `mark` returns once its index is recorded
    (or raises HookFailed)."""

    def __init__(self, hook: Callable[[Sequence[int]], Awaitable[None]], most: int = MARK_GROUP) -> None:
        self.hook = hook
        self.most = most
        self.waiting: list[tuple[int, asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None

    async def mark(self, index: int) -> None:
        if self.failed is not None:
            raise HookFailed(self.failed)
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append((index, fut))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        while self.waiting:
            group, self.waiting = self.waiting[: self.most], self.waiting[self.most :]
            try:
                await self.hook([i for i, _ in group])
            except BaseException as exc:
                self.failed = exc
                for _, fut in group + self.waiting:
                    if not fut.done():
                        fut.set_exception(HookFailed(exc))
                self.waiting = []
                if not isinstance(exc, Exception):
                    raise
                return
            for _, fut in group:
                if not fut.done():
                    fut.set_result(None)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


def outcome_from_error(index: int, to: str, exc: BaseException, *, ref: str | None = None) -> Outcome:
    """The outcome of a request that raised. An unexpected error (not an `SmsError`) is logged with a
    short reference that its outcome text shows, unless the caller logged it already under `ref`."""
    if isinstance(exc, NotSentError):
        return Outcome(
            index,
            to,
            Status.FAILED,
            code=exc.code,
            error=exc.message,
            request_id=exc.request_id,
            retryable=exc.retryable,
        )
    if isinstance(exc, OutcomeUnknownError):
        return Outcome(index, to, Status.UNKNOWN, code=exc.code, error=exc.message, request_id=exc.request_id)
    if ref is None:
        ref = secrets.token_hex(4)
        log.error(
            "unexpected error while sending to %s ref=%s: %s", mask(to), ref, type(exc).__name__, exc_info=exc
        )
    return Outcome(
        index,
        to,
        Status.UNKNOWN,
        error=f"An internal error happened while sending (reference {ref}); {MAYBE}",
    )


async def _withdrawing(withdraw: Callable[[Sequence[int]], Awaitable[None]], index: int) -> None:
    """A single send's `withdraw` hook before its retry: a failure stops the send like a failed mark
    (the retry is not written)."""
    try:
        await withdraw([index])
    except Exception as exc:
        raise HookFailed(exc) from exc


def outcome_from_send(index: int, resp: SendResponse, to: str) -> Outcome:
    detail = resp.number_detail
    return Outcome(
        index,
        to,
        Status.ACCEPTED,
        message_id=resp.message_id,
        segments=resp.segments,
        request_id=resp.request_id,
        country=detail.country if detail else None,
        carrier=detail.carrier if detail else None,
    )


async def fan_out(
    client: SmsClient,
    requests: Sequence[SendRequest],
    *,
    concurrency: int | None = None,
    hooks: Hooks | None = None,
) -> list[Outcome]:
    """Send every request as its own SendMessageToGlobe call, at the account's single-send rate.

    `concurrency` bounds requests in flight (default: the connection pool size); reaching 2,000/s with
    a 50–200 ms round trip needs 100–400 in flight. A failing hook stops the send: requests not yet
    written are not sent (and get no outcome), and the hook's exception is raised. That includes
    `withdraw` before a retry: its request stays as the caller last recorded it (in flight), unsent.
    """
    hooks = hooks or Hooks()
    total = len(requests)
    outcomes: list[Outcome | None] = [None] * total
    if not total:
        return []
    limit = concurrency or client.settings.max_connections
    sem = asyncio.Semaphore(limit)
    results: asyncio.Queue[Outcome | None] = asyncio.Queue()  # None: no more outcomes
    marks = _Marks(hooks.before_send) if hooks.before_send else None
    withdraw = hooks.withdraw
    stopped: list[BaseException] = []
    running = 0
    all_ended = asyncio.Event()

    async def one(i: int) -> None:
        nonlocal running
        req = requests[i]
        dispatch = (lambda: marks.mark(i)) if marks else None
        retry = (lambda: _withdrawing(withdraw, i)) if withdraw else None
        try:
            resp = await client.send(req, on_dispatch=dispatch, on_retry=retry)
            results.put_nowait(outcome_from_send(i, resp, req.to))
        except HookFailed as exc:  # not written: no outcome, and nothing more goes out
            stopped.append(exc.cause)
        except Exception as exc:  # every other failure becomes that recipient's outcome
            results.put_nowait(outcome_from_error(i, req.to, exc))
        finally:
            sem.release()
            running -= 1
            if running == 0:
                all_ended.set()

    async def drain() -> None:
        while True:
            group = [await results.get()]
            while not results.empty() and len(group) < 1000:
                group.append(results.get_nowait())
            last = group[-1] is None
            done = [o for o in group if o is not None]
            for o in done:
                outcomes[o.index] = o
            if done:
                await hooks.results(done, total)
            if last:
                return

    drainer = asyncio.create_task(drain())
    tasks: set[asyncio.Task[None]] = set()
    try:
        for i in range(total):
            await sem.acquire()
            if drainer.done() or stopped:  # a hook failed: send nothing more
                sem.release()
                break
            running += 1
            all_ended.clear()
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if running:
            ended = asyncio.ensure_future(all_ended.wait())
            await asyncio.wait([ended, drainer], return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
        if drainer.done():  # the results hook failed
            drainer.result()
        results.put_nowait(None)
        await drainer
        if stopped:
            raise stopped[0]
    except BaseException:
        # A hook failed (or we were cancelled): no request may still go out after this.
        drainer.cancel()
        if marks:
            marks.cancel()
        for task in list(tasks):
            task.cancel()
        raise
    return [o for o in outcomes if o is not None]


def batch_outcomes(start: int, numbers: Sequence[str], resp: BatchSendResponse) -> list[Outcome]:
    """Per-number outcomes of one accepted batch call (`FailedList` names the refused numbers)."""
    failed = {n.lstrip("+") for n in resp.failed_list}
    matched = sum(1 for n in numbers if n in failed)
    unattributed = len(failed) - len({n for n in numbers if n in failed})
    accepted_expected = len(numbers) - matched
    ambiguous = (
        unattributed > 0 and resp.success_count is not None and resp.success_count != accepted_expected
    )
    out = []
    accepted_ids = iter(resp.message_id_list)
    ids_line_up = not ambiguous and len(resp.message_id_list) == accepted_expected
    for k, number in enumerate(numbers):
        i = start + k
        if number in failed:
            out.append(
                Outcome(
                    i,
                    number,
                    Status.FAILED,
                    code="FAILED_LIST",
                    request_id=resp.request_id,
                    error="The provider did not accept this number (listed in FailedList).",
                )
            )
        elif ambiguous:
            out.append(
                Outcome(
                    i,
                    number,
                    Status.UNKNOWN,
                    request_id=resp.request_id,
                    error="The provider's FailedList could not be matched to the numbers sent; "
                    "check this number in the delivery receipts.",
                )
            )
        else:
            candidate = next(accepted_ids, None) if ids_line_up else None
            out.append(
                Outcome(i, number, Status.ACCEPTED, request_id=resp.request_id, candidate_id=candidate)
            )
    return out


async def batch_send_all(
    client: SmsClient,
    numbers: Sequence[str | PhoneNumber],
    messages: Sequence[str],
    *,
    chunk_size: int = MAX_BATCH,
    hooks: Hooks | None = None,
    keep: bool = True,
    **common: Any,
) -> list[Outcome]:
    """Send to every number through the batch API: chunks of ≤ `chunk_size`, ≤ 1 call/s.

    `numbers` are validated `PhoneNumber`s (not parsed again) or API-form strings, `messages` one per number, in
    the same order. `common` holds `sender_id`, `type`, `task_id`, `validity_period`. Chunks are
    dispatched in order as soon as the limiter allows, without waiting for the previous answer.
    Returns every outcome in order; with `keep=False`, none: they go to `hooks.on_results` only, and a
    large send does not hold one object per number until its end (Python's cycle collector walks each
    of them at every full collection: 30 ms for 50,000, with the event loop held meanwhile).
    """
    if len(numbers) != len(messages):
        raise ValueError("numbers and messages must be the same length")
    if not 1 <= chunk_size <= MAX_BATCH:
        raise ValueError(f"chunk_size must be 1 to {MAX_BATCH}")
    hooks = hooks or Hooks()
    total = len(numbers)
    outcomes: list[Outcome] = []
    lock = asyncio.Lock()

    failed = asyncio.Event()  # set when a chunk's hook raised: nothing more may go out

    async def one(start: int, dispatched: asyncio.Event) -> None:
        try:
            await chunk(start, dispatched)
        except BaseException:
            failed.set()
            raise

    async def chunk(start: int, dispatched: asyncio.Event) -> None:
        end = min(start + chunk_size, total)
        chunk_numbers = [n.api if isinstance(n, PhoneNumber) else n for n in numbers[start:end]]
        hook_failed: list[BaseException] = []
        try:
            req: BatchSendRequest = client.batch_request(
                to=list(numbers[start:end]), messages=list(messages[start:end]), **common
            )

            async def mark() -> None:
                if hooks.before_send:
                    try:
                        await hooks.before_send(range(start, end))
                    except BaseException as exc:
                        hook_failed.append(exc)
                        raise
                dispatched.set()

            async def withdraw() -> None:
                if hooks.withdraw:
                    try:
                        await hooks.withdraw(range(start, end))
                    except BaseException as exc:
                        hook_failed.append(exc)
                        raise

            resp = await client.batch_send(req, on_dispatch=mark, on_retry=withdraw)
            group = batch_outcomes(start, chunk_numbers, resp)
        except Exception as exc:
            if hook_failed:  # the caller's hook, before the request left: stop the send
                raise
            ref = secrets.token_hex(4)
            if not isinstance(exc, SmsError):
                log.error("unexpected error in batch chunk %d-%d ref=%s", start, end, ref, exc_info=exc)
            group = [outcome_from_error(start + k, n, exc, ref=ref) for k, n in enumerate(chunk_numbers)]
        finally:
            dispatched.set()
        async with lock:
            if keep:
                outcomes.extend(group)
            await hooks.results(group, total)

    tasks: list[asyncio.Task[None]] = []
    try:
        for start in range(0, total, chunk_size):
            dispatched = asyncio.Event()
            tasks.append(asyncio.create_task(one(start, dispatched)))
            waiters = [asyncio.ensure_future(dispatched.wait()), asyncio.ensure_future(failed.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if failed.is_set():
                break
        # Every chunk to its end, even after one stopped the send: an earlier chunk may be on the wire,
        # and its answer must be recorded, not cancelled.
        ended = await asyncio.gather(*tasks, return_exceptions=True)
        for result in ended:
            if isinstance(result, BaseException):
                raise result
    except BaseException:
        # A hook failed (or we were cancelled): no chunk may still go out after this.
        for task in tasks:
            task.cancel()
        raise
    outcomes.sort(key=lambda o: o.index)
    return outcomes
