"""Reports jobs to Slack: a parent message per customer number and channel, the outcome in its thread,
and, where the bot cannot post, the outcome to the sender alone (response_url) with how to invite it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.core.store import Job, RecipientRow, Store, Summary

from . import views

log = logging.getLogger("bot.slack.reporter")


class SlackReporter:
    def __init__(self, client: AsyncWebClient, store: Store) -> None:
        self.client = client
        self.store = store

    async def job_started(self, job: Job, recipients: Sequence[RecipientRow]) -> None:
        if job.total != 1 or not job.channel_id:
            return
        r = recipients[0]
        existing = self.store.thread_for(job.channel_id, r.number.e164)
        if existing:
            self.store.set_job(job.id, thread_ts=existing, meta={**job.meta, "thread_existing": True})
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
            self.store.set_job(job.id, meta={**job.meta, "post_error": error})
            return
        ts = str(resp["ts"])
        self.store.remember_thread(job.channel_id, r.number.e164, ts)
        self.store.set_job(job.id, thread_ts=ts, parent_ts=ts)

    async def job_progress(self, job: Job, summary: Summary) -> None:
        return None

    async def job_finished(self, job: Job, summary: Summary, recipients: Sequence[RecipientRow]) -> None:
        if job.total != 1:
            return
        r = recipients[0]
        dry_run = bool(job.meta.get("dry_run"))
        error = str(job.meta.get("post_error") or "channel_not_found")
        if job.thread_ts and job.channel_id:
            try:
                await self.client.chat_postMessage(
                    channel=job.channel_id,
                    thread_ts=job.thread_ts,
                    text=f"SMS to {r.number.masked}: {r.state.value}",
                    blocks=views.outcome_message(
                        r,
                        user_id=job.created_by,
                        include_request=bool(job.meta.get("thread_existing")),
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
        if not job.response_url:
            log.warning("job %s: no way to tell the sender the outcome (no channel, no response_url)", job.id)
            return
        try:
            await AsyncWebhookClient(job.response_url).send(
                text=text, blocks=blocks, response_type="ephemeral"
            )
        except Exception:
            log.exception("job %s: could not reach the sender through response_url", job.id)
