"""Pause, resume and cancel a running send from its progress message."""

from __future__ import annotations

import json
import time

import pytest

from bot.core.store import JobKind, JobState, NewRecipient, RecipientState
from bot.slack.ids import ActionId, BlockId
from bot.sms.phone import parse_number

from .conftest import run
from .harness import Bot
from .processes import wait_provider
from .test_bulk import LEAD

# Bounds how soon after a click the last request left: runs alone, after the parallel pass (README,
# "Run the tests").
pytestmark = pytest.mark.serial

TOTAL = 3000


def recipients(n: int = TOTAL) -> list[NewRecipient]:
    return [NewRecipient(parse_number(f"+65 81{i:06d}"), f"Update {i}") for i in range(n)]


def buttons(blocks: list[dict]) -> dict[str, str]:
    """action_id → value of the job controls on a progress message."""
    found = [b for b in blocks if b.get("block_id") == BlockId.JOB_CONTROLS]
    return {e["action_id"]: e["value"] for b in found for e in b["elements"]}


async def start(bot: Bot, n: int = TOTAL):
    """An n-recipient fan-out at 500/s (3,000: 6 s in all), reported like a bulk send."""
    store = bot.runtime.store
    job, _ = await store.create_job(
        kind=JobKind.FANOUT,
        created_by=LEAD,
        channel_id="C0SUPPORT",
        recipients=recipients(n),
        meta={"bulk": True},
    )
    bot.runtime.worker.submit(job.id)
    (posted,) = await bot.slack.wait_for("chat.postMessage", 1)
    return job, posted.params["blocks"]


def test_pause_stops_new_requests_at_once_and_cancel_reports_the_rest_cancelled(provider, tmp_path):
    provider.reset(latency=0.2)  # about a hundred requests on the wire at any moment

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, SMS_SINGLE_RATE=500) as bot:
            job, blocks = await start(bot)
            assert buttons(blocks) == {ActionId.JOB_PAUSE: job.id, ActionId.JOB_CANCEL: job.id}
            stranger = await bot.click(
                ActionId.JOB_PAUSE, job.id, user="U0STRANGER", block_id=BlockId.JOB_CONTROLS
            )
            (_, refused), *_ = await bot.slack.wait_for_webhooks(1)
            await wait_provider(provider, 300)
            updates = len(bot.slack.called("chat.update"))
            clicked = time.monotonic()
            await bot.click(ActionId.JOB_PAUSE, job.id, user=LEAD, block_id=BlockId.JOB_CONTROLS)
            paused_update = None
            while paused_update is None:
                calls = await bot.slack.wait_for("chat.update", updates + 1)
                updates = len(calls)
                if "Paused by" in json.dumps(calls[-1].params["blocks"]):
                    paused_update = calls[-1].params["blocks"]
            paused = await bot.runtime.store.get_job(job.id)
            at_pause = await bot.recipients(job.id)
            # Someone else with the bulk permission cancels it while it is paused.
            await bot.click(ActionId.JOB_CANCEL, job.id, user=LEAD, block_id=BlockId.JOB_CONTROLS)
            summary = await bot.runtime.worker.wait(job.id)
            done = await bot.runtime.store.get_job(job.id)
            rows = await bot.recipients(job.id)
            posts = bot.slack.called("chat.postMessage")
            return stranger, refused, clicked, paused_update, paused, at_pause, summary, done, rows, posts

    stranger, refused, clicked, paused_update, paused, at_pause, summary, done, rows, posts = run(go())
    assert stranger.status_code == 200 and "Nothing was changed: only <@U0LEAD>" in refused["text"]
    last = max(r.at for r in provider.sent())  # the provider's clock is this machine's monotonic clock
    assert last - clicked < 1.0  # no request left later than a second after the click
    assert paused.state == JobState.PAUSED and paused.owner is None and paused.control_by == LEAD
    states = {r.state for r in at_pause}
    assert RecipientState.IN_FLIGHT not in states and RecipientState.UNKNOWN not in states  # nothing lost
    sent = len(provider.sent())
    accepted_at_pause = sum(r.state == RecipientState.ACCEPTED for r in at_pause)
    assert accepted_at_pause == sent and 300 <= sent < TOTAL
    assert buttons(paused_update) == {ActionId.JOB_RESUME: paused.id, ActionId.JOB_CANCEL: paused.id}
    assert done.state == JobState.DONE
    assert (summary.accepted, summary.cancelled, summary.failed, summary.unknown) == (
        sent,
        TOTAL - sent,
        0,
        0,
    )
    cancelled = [r for r in rows if r.code == "CANCELLED"]
    assert len(cancelled) == TOTAL - sent and all(r.error == "Cancelled (not sent)." for r in cancelled)
    thread = json.dumps(posts[-1].params["blocks"])
    assert f"{TOTAL - sent:,} cancelled (not sent)" in thread and "Cancelled* by <@U0LEAD>" in thread
    assert f"Send again to the {TOTAL - sent:,} not reached" in thread


def test_resume_sends_the_rest_exactly_once(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, SMS_SINGLE_RATE=500) as bot:
            job, _ = await start(bot, 800)
            await wait_provider(provider, 100)
            await bot.click(ActionId.JOB_PAUSE, job.id, user=LEAD, block_id=BlockId.JOB_CONTROLS)
            while (await bot.runtime.store.get_job(job.id)).state != JobState.PAUSED:
                await bot.slack.wait_for("chat.update", len(bot.slack.called("chat.update")) + 1)
            await bot.click(ActionId.JOB_RESUME, job.id, user=LEAD, block_id=BlockId.JOB_CONTROLS)
            summary = await bot.runtime.worker.wait(job.id)
            return summary

    summary = run(go())
    sent = [r.params["To"] for r in provider.sent()]
    assert summary.accepted == 800 and summary.cancelled == 0
    assert len(sent) == len(set(sent)) == 800
