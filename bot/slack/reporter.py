"""Reports jobs to Slack: a parent message per customer number and channel, the outcome in its thread,
and, where the bot cannot post, the outcome to the sender alone (tell.py: response_url, then a direct
message) with how to invite it."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.db import reason, unreachable
from bot.core.store import Job, JobState, RecipientRow, Store, Summary
from bot.core.worker import NotReported
from bot.sms import RateLimiter

from . import bulk_views, views
from .state import Post, SlackState
from .tell import Told, tell_person

log = logging.getLogger("bot.slack.reporter")


PROGRESS_EVERY = 2.0  # seconds between chat.update calls for one job
UPDATES_PER_MINUTE = 40.0  # chat.update for the whole workspace (Slack: Tier 3, about 50 a minute)
KEEP_RENDERED = 10_000  # jobs whose last shown delivery state is remembered (no update that changes nothing)
KEEP_SHOWN = 1_000  # running jobs whose progress message this process remembers (for a wait's notice)
EDIT_RETRY_FIRST = 1.0  # seconds before a failed receipt edit is tried again; doubling each time
EDIT_RETRY_MAX = 300.0
EDIT_ATTEMPTS = 20  # about an hour of Slack or the database away, then the core offers that edit again
# Slack errors that say "not now" (the SDK itself waits out `ratelimited`): an edit is tried again.
SLACK_NOT_NOW = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
WAITING_NOTE = (
    "⏸️ Waiting for the bot's database, which cannot be reached just now. Nothing is lost or sent twice: "
    "this send goes on by itself when it is back."
)


class SlackReporter:
    """Also the core's DeliveryObserver: receipts edit the messages already posted (a single send's
    outcome, a finished bulk's progress line and summary), coalesced per job (at most one edit every
    `progress_every` seconds) and within `updates_per_minute` chat.update calls for the workspace,
    however many receipts arrive."""

    def __init__(
        self,
        client: AsyncWebClient,
        store: Store,
        state: SlackState,
        *,
        progress_every: float = PROGRESS_EVERY,
        updates_per_minute: float = UPDATES_PER_MINUTE,
    ) -> None:
        self.client = client
        self.store = store
        self.state = state
        self.progress_every = progress_every
        self.updates = RateLimiter(updates_per_minute / 60.0, margin=0.0)
        self._last_update: dict[str, float] = {}
        self._dirty: dict[str, None] = {}  # jobs whose receipts changed, oldest first
        self._last_refresh: dict[str, float] = {}
        self._rendered: dict[str, tuple[Any, ...]] = {}
        self._flusher: asyncio.Task[None] | None = None
        # A running bulk's progress message as this process last showed it (channel, ts, text,
        # blocks): what the channel is shown while the job waits for the database, which the reporter
        # cannot read then.
        self._shown: dict[str, tuple[str, str, str, list[Any]]] = {}
        self._edit_failures: dict[str, int] = {}  # jobs whose last receipt edits failed, how many times
        self.edit_retry_first = EDIT_RETRY_FIRST

    async def _chat_update(self, **kwargs: Any) -> None:
        """chat.update within the workspace's budget (waits for its turn)."""
        await self.updates.acquire()
        await self.client.chat_update(**kwargs)

    async def job_started(self, job: Job, recipients: Sequence[RecipientRow]) -> None:
        if job.meta.get("bulk"):
            await self._bulk_started(job)
            return
        if job.total != 1 or not job.channel_id:
            return
        r = recipients[0]
        existing = await self.state.thread_for(job.channel_id, r.number.e164)
        if existing:
            await self.state.save_post(job.id, thread_ts=existing, thread_existing=True)
            return
        try:
            resp = await self.client.chat_postMessage(
                channel=job.channel_id,
                text=views.parent_text(job.created_by, r),
                blocks=views.parent_message(job.created_by, job, r, bool(job.meta.get("dry_run"))),
                unfurl_links=False,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            log.info("cannot post parent message in %s: %s", job.channel_id, error)
            await self.state.save_post(job.id, post_error=error)
            return
        ts = str(resp["ts"])
        await self.state.remember_thread(job.channel_id, r.number.e164, ts)
        await self.state.save_post(job.id, thread_ts=ts, parent_ts=ts)

    async def job_progress(self, job: Job, summary: Summary) -> None:
        if not job.meta.get("bulk"):
            if job.total == 1 and job.owner is None and summary.held:
                await self._single_held(job, summary)
            return
        now = time.monotonic()
        # A pause, or a wait for send windows, is shown at once; progress at most every few seconds.
        waiting = job.state == JobState.PAUSED or (job.owner is None and summary.held > 0)
        if now - self._last_update.get(job.id, 0.0) < self.progress_every and not waiting:
            return
        post = await self.state.post(job.id)
        if not post.parent_ts or not job.channel_id:
            return
        self._last_update[job.id] = now
        text = f"Bulk SMS: {summary.accepted + summary.failed + summary.unknown:,}/{job.total:,} done"
        blocks = bulk_views.progress_blocks(job, summary, done=False)
        with contextlib.suppress(SlackApiError):
            await self._chat_update(channel=job.channel_id, ts=post.parent_ts, text=text, blocks=blocks)
            self._show(job.id, job.channel_id, post.parent_ts, text, blocks)

    async def _single_held(self, job: Job, summary: Summary) -> None:
        """A marketing text waiting for its recipient's send window: said in its thread (else to the
        sender alone), so that nobody takes the wait for a stuck send."""
        text = views.held_line(summary.next_window)
        post = await self.state.post(job.id)
        if post.thread_ts and job.channel_id:
            try:
                await self.client.chat_postMessage(
                    channel=job.channel_id, thread_ts=post.thread_ts, text=text
                )
                return
            except SlackApiError as exc:
                log.info("cannot post the wait in %s: %s", job.channel_id, exc.response.get("error"))
        await tell_person(self.client, user_id=job.created_by, response_url=job.response_url, text=text)

    async def _bulk_started(self, job: Job) -> None:
        if not job.channel_id or (await self.state.post(job.id)).parent_ts:  # resumed: posted already
            return
        text = f"Bulk SMS to {views.counted(job.total, 'recipient')} by <@{job.created_by}>"
        blocks = bulk_views.progress_blocks(job, await self.store.summary(job.id), done=False)
        try:
            resp = await self.client.chat_postMessage(channel=job.channel_id, text=text, blocks=blocks)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            log.info("cannot post bulk parent message in %s: %s", job.channel_id, error)
            await self.state.save_post(job.id, post_error=error)
            return
        ts = str(resp["ts"])
        self._show(job.id, job.channel_id, ts, text, blocks)
        await self.state.save_post(job.id, parent_ts=ts, thread_ts=ts)

    def _show(self, job_id: str, channel: str, ts: str, text: str, blocks: list[Any]) -> None:
        self._shown.pop(job_id, None)
        self._shown[job_id] = (channel, ts, text, blocks)
        while len(self._shown) > KEEP_SHOWN:  # oldest first
            del self._shown[next(iter(self._shown))]

    async def _bulk_finished(self, job: Job, summary: Summary, recipients: Sequence[RecipientRow]) -> None:
        self._last_update.pop(job.id, None)
        self._shown.pop(job.id, None)
        blocks = bulk_views.summary_blocks(job, summary, recipients)
        text = f"Bulk SMS done: {summary.accepted:,} accepted, {summary.failed:,} failed, {summary.unknown:,} unknown"
        post = await self.state.post(job.id)
        if post.outcome_ts:  # its summary is in the thread already (a stop came before that was recorded)
            return
        error = post.post_error or "channel_not_found"
        if post.parent_ts and job.channel_id:
            with contextlib.suppress(SlackApiError):
                await self._chat_update(
                    channel=job.channel_id,
                    ts=post.parent_ts,
                    text=text,
                    blocks=bulk_views.progress_blocks(job, summary, done=True),
                )
            try:
                resp = await self.client.chat_postMessage(
                    channel=job.channel_id, thread_ts=post.parent_ts, text=text, blocks=blocks
                )
                await self.state.save_post(job.id, outcome_ts=str(resp["ts"]))
                self._remember(job.id, _shown(summary))
                await self._recheck(job.id)
                return
            except SlackApiError as exc:
                error = str(exc.response.get("error", "unknown_error"))
        reason = views.cannot_post_reason(error)
        await self.tell_sender(job, [*blocks, *views.fallback_context(reason)], text)

    async def job_finished(self, job: Job, summary: Summary, recipients: Sequence[RecipientRow]) -> None:
        if job.meta.get("bulk"):
            await self._bulk_finished(job, summary, recipients)
            return
        if job.total != 1:
            return
        r = recipients[0]
        dry_run = bool(job.meta.get("dry_run"))
        post = await self.state.post(job.id)
        if post.outcome_ts:  # its outcome is in the thread already (a stop came before that was recorded)
            return
        error = post.post_error or "channel_not_found"
        if post.thread_ts and job.channel_id:
            try:
                resp = await self.client.chat_postMessage(
                    channel=job.channel_id, thread_ts=post.thread_ts, **_outcome(job, post, r)
                )
                await self.state.save_post(job.id, outcome_ts=str(resp["ts"]))
                self._remember(job.id, (r.delivery,))
                await self._recheck(job.id)
                return
            except SlackApiError as exc:
                error = str(exc.response.get("error", "unknown_error"))
                log.info("cannot post outcome in %s: %s", job.channel_id, error)
        await self.tell_sender(
            job,
            views.fallback_message(r, views.cannot_post_reason(error), dry_run),
            f"SMS to {r.number.masked}: {views.delivery_word(r)}",
        )

    async def job_waiting(self, job: Job) -> None:
        """The send waits for the bot's database: the sender is told, and a bulk's progress message in
        the channel says so, as this process last showed it (the channel's messages are found through
        the database, which cannot be read now)."""
        text = (
            f"⏸️ The bot's database cannot be reached, so {_yours(job)} is waiting. Nothing is lost or sent "
            "twice: it goes on by itself when the database is back."
        )
        await tell_person(self.client, user_id=job.created_by, response_url=job.response_url, text=text)
        await self._show_again(job.id, WAITING_NOTE)

    async def job_going_on(self, job: Job) -> None:
        text = f"▶️ The bot's database is back, and {_yours(job)} goes on. The result comes as usual."
        await tell_person(self.client, user_id=job.created_by, response_url=job.response_url, text=text)
        await self._show_again(job.id, None)

    async def _show_again(self, job_id: str, note: str | None) -> None:
        """The progress message as last shown, with `note` under it (None: without)."""
        if job_id not in self._shown:  # posted by another process, or not a bulk: the sender alone was told
            return
        await self.updates.acquire()
        shown = self._shown.get(job_id)  # looked at after the wait: a progress or the finish may have come
        if shown is None:
            return
        channel, ts, text, blocks = shown
        with contextlib.suppress(SlackApiError):
            await self.client.chat_update(
                channel=channel,
                ts=ts,
                text=f"{text} (waiting for the bot's database)" if note else text,
                blocks=[*blocks, *views.fallback_context(note)] if note else blocks,
            )

    async def tell_sender(self, job: Job, blocks: list, text: str) -> None:
        """The thread could not carry the outcome: the sender alone, through the one fallback chain.
        Raises NotReported when that fails too: the worker reports the finish again later."""
        told = await tell_person(
            self.client, user_id=job.created_by, response_url=job.response_url, text=text, blocks=blocks
        )
        if told is Told.NOBODY:
            raise NotReported(f"neither the channel nor the sender of job {job.id} could be told")

    # ------------------------------------------------------------------ delivery receipts
    async def deliveries_changed(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self._dirty[job_id] = None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="slack-deliveries")

    async def _recheck(self, job_id: str) -> None:
        """A receipt may have been matched while the message was being posted: look once more."""
        await self.deliveries_changed([job_id])

    async def aclose(self, grace: float = 2.0) -> None:
        """Let pending edits go out for up to `grace` seconds, then stop."""
        if self._flusher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._flusher), grace)
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def _flush(self) -> None:
        while self._dirty:
            now = time.monotonic()
            ready = next(
                (j for j in self._dirty if now - self._last_refresh.get(j, -1e9) >= self.progress_every), None
            )
            if ready is None:
                soonest = min(self._last_refresh.get(j, now) for j in self._dirty) + self.progress_every
                await asyncio.sleep(max(0.01, soonest - now))
                continue
            del self._dirty[ready]
            try:
                edited = await self._refresh(ready)
            except Exception as exc:
                await self._edit_failed(ready, exc, now)
                continue
            self._edit_failures.pop(ready, None)
            if edited:  # the spacing is between edits: a look that changed nothing (e.g. right after
                self._last_refresh[ready] = now  # posting) does not delay the next
        while len(self._last_refresh) > KEEP_RENDERED:
            self._last_refresh.pop(next(iter(self._last_refresh)))

    async def _edit_failed(self, job_id: str, exc: Exception, now: float) -> None:
        """A receipt edit failed. If Slack or the database said "not now", it is tried again after a
        growing wait (else a single send's "Delivered" would never show: its one receipt has come), and
        after EDIT_ATTEMPTS the core offers it again (`Deliveries.offer_unshown`). Any other failure
        gives the edit up."""
        if isinstance(exc, SlackApiError):
            error = str(exc.response.get("error") or "")
            again = error in SLACK_NOT_NOW or exc.response.status_code >= 500
            why = f"Slack answered {error or exc.response.status_code}"
        elif unreachable(exc) or isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
            again, why = True, reason(exc) if unreachable(exc) else f"{type(exc).__name__}: {exc}"
        else:
            log.exception("updating job %s's messages with its receipts failed", job_id)
            again, why = False, ""
        attempts = self._edit_failures.pop(job_id, 0) + 1
        if not again:
            if why:
                log.info("cannot update job %s's messages: %s", job_id, why)
            try:  # nobody offers them again
                await self.store.receipts_shown(job_id, None)
            except Exception as gone:
                log.info("job %s's receipts stay offered: %s", job_id, reason(gone))
            return
        if attempts > EDIT_ATTEMPTS:
            log.info("cannot update job %s's messages now (%s); they are offered again later", job_id, why)
            return
        self._edit_failures[job_id] = attempts
        wait = min(self.edit_retry_first * 2 ** (attempts - 1), EDIT_RETRY_MAX)
        log.warning("cannot update job %s's messages now (%s); trying again in %.1f s", job_id, why, wait)
        self._last_refresh[job_id] = now + wait - self.progress_every  # when _flush next takes it
        self._dirty[job_id] = None

    def _remember(self, job_id: str, shown: tuple[Any, ...]) -> None:
        self._rendered[job_id] = shown
        while len(self._rendered) > KEEP_RENDERED:
            self._rendered.pop(next(iter(self._rendered)))

    async def _refresh(self, job_id: str) -> bool:
        """Edit what was posted for the job to show its receipts (nothing when nothing changed), and say
        so to the store once they are shown. Whether it edited."""
        job = await self.store.get_job(job_id)
        if job is None:
            return False
        look = await self._show_receipts(job)
        if look is not _Look.NOT_YET and job.receipts_unshown is not None:
            await self.store.receipts_shown(job.id, job.receipts_changed)
        return look is _Look.EDITED

    async def _show_receipts(self, job: Job) -> _Look:
        if not job.channel_id or job.state != JobState.DONE:
            # a running bulk's progress updates show its receipts, and its finish; a single send posts
            # its outcome at the end
            return _Look.NOTHING
        post = await self.state.post(job.id)
        if not post.outcome_ts and job.reported_at is None:
            # its finish is being told (or will be, see the worker), with the receipts as they are then;
            # what comes between is shown when the job is offered again, once its finish is told
            return _Look.NOT_YET
        if job.meta.get("bulk"):
            summary = await self.store.summary(job.id)
            if self._rendered.get(job.id) == _shown(summary):
                return _Look.NOTHING
            text = f"{summary.delivered:,} of {summary.accepted:,} delivered"
            if post.parent_ts:
                await self._chat_update(
                    channel=job.channel_id,
                    ts=post.parent_ts,
                    text=text,
                    blocks=bulk_views.progress_blocks(job, summary, done=True),
                )
            if post.outcome_ts:
                missed = await self.store.not_delivered(job.id)
                await self._chat_update(
                    channel=job.channel_id,
                    ts=post.outcome_ts,
                    text=text,
                    blocks=bulk_views.summary_blocks(job, summary, missed),
                )
            self._remember(job.id, _shown(summary))  # once shown: an edit that failed is made again
            return _Look.EDITED if post.parent_ts or post.outcome_ts else _Look.NOTHING
        if job.total != 1 or not post.outcome_ts:
            return _Look.NOTHING  # told to the sender alone: nothing in the channel to edit
        (r,) = await self.store.recipients(job.id)
        if self._rendered.get(job.id) == (r.delivery,):
            return _Look.NOTHING
        await self._chat_update(channel=job.channel_id, ts=post.outcome_ts, **_outcome(job, post, r))
        self._remember(job.id, (r.delivery,))
        return _Look.EDITED


class _Look(enum.Enum):
    """What a look at a job's receipts did."""

    EDITED = "edited"
    NOTHING = "nothing to edit"  # (or nothing that changed): the receipts count as shown
    NOT_YET = "not yet"  # its finish is not told yet: the receipts stay unshown (offered once it is)


def _yours(job: Job) -> str:
    """The job as its sender calls it: "your SMS", "your send to 2,000 recipients"."""
    return "your SMS" if job.total == 1 else f"your send to {views.counted(job.total, 'recipient')}"


def _outcome(job: Job, post: Post, r: RecipientRow) -> dict[str, Any]:
    """A single send's outcome message in its thread (as posted, and as edited when its receipt comes)."""
    return {
        "text": f"SMS to {r.number.masked}: {views.delivery_word(r)}",
        "blocks": views.outcome_message(
            r,
            user_id=job.created_by,
            include_request=post.thread_existing,
            dry_run=bool(job.meta.get("dry_run")),
        ),
    }


def _shown(summary: Summary) -> tuple[Any, ...]:
    return (summary.delivered, summary.undelivered, summary.reconciled, summary.unknown)
