"""Reports jobs to Slack: a parent message per customer number and channel, the outcome in its thread,
and, where the bot cannot post, the outcome to the sender alone (tell.py: response_url, then a direct
message) with how to invite it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.store import Job, RecipientRow, Store, Summary

from . import bulk_views, views
from .state import SlackState
from .tell import tell_person

log = logging.getLogger("bot.slack.reporter")


PROGRESS_EVERY = 2.0  # seconds between chat.update calls for one job (Slack: Tier 3, ~50/min)


class SlackReporter:
    def __init__(
        self,
        client: AsyncWebClient,
        store: Store,
        state: SlackState,
        *,
        progress_every: float = PROGRESS_EVERY,
    ) -> None:
        self.client = client
        self.store = store
        self.state = state
        self.progress_every = progress_every
        self._last_update: dict[str, float] = {}

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
            return
        now = time.monotonic()
        if now - self._last_update.get(job.id, 0.0) < self.progress_every:
            return
        post = await self.state.post(job.id)
        if not post.parent_ts or not job.channel_id:
            return
        self._last_update[job.id] = now
        with contextlib.suppress(SlackApiError):
            await self.client.chat_update(
                channel=job.channel_id,
                ts=post.parent_ts,
                text=f"Bulk SMS: {summary.accepted + summary.failed + summary.unknown:,}/{job.total:,} done",
                blocks=bulk_views.progress_blocks(job, summary, done=False),
            )

    async def _bulk_started(self, job: Job) -> None:
        if not job.channel_id or (await self.state.post(job.id)).parent_ts:  # resumed: posted already
            return
        try:
            resp = await self.client.chat_postMessage(
                channel=job.channel_id,
                text=f"Bulk SMS to {job.total:,} recipients by <@{job.created_by}>",
                blocks=bulk_views.progress_blocks(job, await self.store.summary(job.id), done=False),
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            log.info("cannot post bulk parent message in %s: %s", job.channel_id, error)
            await self.state.save_post(job.id, post_error=error)
            return
        ts = str(resp["ts"])
        await self.state.save_post(job.id, parent_ts=ts, thread_ts=ts)

    async def _bulk_finished(self, job: Job, summary: Summary, recipients: Sequence[RecipientRow]) -> None:
        self._last_update.pop(job.id, None)
        blocks = bulk_views.summary_blocks(job, summary, recipients)
        text = f"Bulk SMS done: {summary.accepted:,} accepted, {summary.failed:,} failed, {summary.unknown:,} unknown"
        post = await self.state.post(job.id)
        error = post.post_error or "channel_not_found"
        if post.parent_ts and job.channel_id:
            with contextlib.suppress(SlackApiError):
                await self.client.chat_update(
                    channel=job.channel_id,
                    ts=post.parent_ts,
                    text=text,
                    blocks=bulk_views.progress_blocks(job, summary, done=True),
                )
            try:
                await self.client.chat_postMessage(
                    channel=job.channel_id, thread_ts=post.parent_ts, text=text, blocks=blocks
                )
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
        error = post.post_error or "channel_not_found"
        if post.thread_ts and job.channel_id:
            try:
                await self.client.chat_postMessage(
                    channel=job.channel_id,
                    thread_ts=post.thread_ts,
                    text=f"SMS to {r.number.masked}: {r.state.value}",
                    blocks=views.outcome_message(
                        r,
                        user_id=job.created_by,
                        include_request=post.thread_existing,
                        dry_run=dry_run,
                    ),
                )
                return
            except SlackApiError as exc:
                error = str(exc.response.get("error", "unknown_error"))
                log.info("cannot post outcome in %s: %s", job.channel_id, error)
        await self.tell_sender(
            job,
            views.fallback_message(r, views.cannot_post_reason(error), dry_run),
            f"SMS to {r.number.masked}: {r.state.value}",
        )

    async def tell_sender(self, job: Job, blocks: list, text: str) -> None:
        """The thread could not carry the outcome: the sender alone, through the one fallback chain."""
        await tell_person(
            self.client, user_id=job.created_by, response_url=job.response_url, text=text, blocks=blocks
        )
