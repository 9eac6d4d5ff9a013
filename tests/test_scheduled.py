"""Scheduled sends: "Send at" in the forms, `/sms scheduled` with Cancel, and a scheduled job that
survives a restart and runs once with two processes on PostgreSQL."""

from __future__ import annotations

import time
from collections import Counter

from bot.core.store import JobKind, JobState, NewRecipient
from bot.slack.ids import ActionId, BlockId
from bot.sms.phone import parse_number

from .conftest import Clock, open_store, run
from .fake_slack import FakeSlack
from .harness import Bot
from .processes import BotProcess, reap, wait_done
from .test_bulk import LEAD, bulk_values, confirm, open_form, review, text_of
from .test_windows import utc


def send_at(values: dict, at: float) -> dict:
    return {
        **values,
        BlockId.BULK_SEND_AT: {
            ActionId.BULK_SEND_AT: {"type": "datetimepicker", "selected_date_time": int(at)}
        },
    }


def test_a_bulk_scheduled_from_the_form_waits_is_listed_and_can_be_cancelled(provider, tmp_path):
    clock = Clock(utc(24, 12))

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, clock=clock) as bot:
            listing = "+65 8100 0001\n+65 8100 0002"
            form = await open_form(bot)
            values = send_at(bulk_values(recipients=listing, message="Hello"), utc(24, 10))
            past = await bot.submit_view(form, values, user=LEAD)
            view = await review(bot, send_at(bulk_values(recipients=listing, message="Hello"), utc(24, 18)))
            await confirm(bot, view)
            (_, told), *_ = await bot.slack.wait_for_webhooks(1)
            await bot.command("scheduled", user=LEAD)
            hooks = await bot.slack.wait_for_webhooks(2)
            listed = hooks[1][1]
            await bot.command("scheduled", user="U0AGENT")  # may not make bulk sends: sees their own only
            (*_, (_, own)) = await bot.slack.wait_for_webhooks(3)
            (job_id,) = await bot.runtime.worker.wait_submitted(1)
            job = await bot.runtime.store.get_job(job_id)
            nothing_yet = len(provider.sent("BatchSendMessageToGlobe"))
            await bot.click(ActionId.JOB_CANCEL, job_id, user="U0STRANGER")
            await bot.click(ActionId.JOB_CANCEL, job_id, user=LEAD)
            summary = await bot.runtime.worker.wait(job_id)
            done = await bot.runtime.store.get_job(job_id)
            return past.json(), view, told, listed, own, job, nothing_yet, summary, done

    past, view, told, listed, own, job, nothing_yet, summary, done = run(go())
    assert "You have no scheduled sends." in text_of(own["blocks"])
    assert "That time has passed" in past["errors"][BlockId.BULK_SEND_AT]
    assert "Scheduled for <!date^" in text_of(view)
    assert "⏰ Scheduled: 2 SMS for <!date^" in told["text"]
    assert job.state == JobState.QUEUED and job.run_at == utc(24, 18)
    assert "Cancel" in text_of(listed["blocks"]) and job.id in text_of(listed["blocks"])
    assert nothing_yet == 0
    assert done.state == JobState.DONE and done.control_by == LEAD
    assert (summary.accepted, summary.cancelled) == (0, 2)
    assert provider.sent("BatchSendMessageToGlobe") == []


def test_a_scheduled_job_survives_a_restart_and_runs_once_on_two_replicas(
    provider, pg_server, pg_template, tmp_path, bot_processes
):
    database = pg_server.create_database(pg_template)
    people = [
        NewRecipient(parse_number(f"+65 8200 {i:04d}"), "Maintenance tonight at 22:00") for i in range(50)
    ]

    async def go():
        slack = FakeSlack()
        await slack.start()
        try:
            store = await open_store(database)

            async def start() -> BotProcess:
                return await BotProcess(
                    database=database, provider_url=provider.url, slack_url=slack.url, cwd=tmp_path
                ).start()

            first, second = await start(), await start()
            run_at = time.time() + 2.0
            due = time.monotonic() + (run_at - time.time())  # the provider stamps requests on this clock
            job, _ = await store.create_job(
                kind=JobKind.FANOUT, created_by="U1", recipients=people, run_at=run_at
            )
            first.kill()
            await first.stop()
            again = await start()
            finished = await wait_done(store, job.id)
            await second.stop()
            await again.stop()
            rows = await store.recipients(job.id)
            await store.close()
            return due, finished, rows
        finally:
            await slack.stop()
            await reap()

    due, finished, rows = run(go())
    received = provider.sent()
    assert Counter(r.params["To"] for r in received) == Counter(p.number.api for p in people)  # once each
    assert min(r.at for r in received) >= due - 0.05  # not before its time
    assert finished.started_at >= finished.run_at - 0.05
    assert all(r.state == "accepted" for r in rows)


def test_an_outage_page_can_be_scheduled_too(provider, tmp_path):
    from .test_outage import ONCALL, open_outage, outage_values, write_groups

    clock = Clock(utc(24, 12))

    async def go():
        groups = write_groups(tmp_path)
        async with Bot(
            provider, tmp_path, ACCESS_OUTAGE=ONCALL, CONTACT_GROUPS_FILE=groups, clock=clock
        ) as bot:
            form = await open_outage(bot)
            values = outage_values(
                groups=["payments"], service="API", status="Maintenance", details="tonight"
            )
            at = {
                BlockId.OUTAGE_SEND_AT: {
                    ActionId.OUTAGE_SEND_AT: {
                        "type": "datetimepicker",
                        "selected_date_time": int(utc(24, 22)),
                    }
                }
            }
            too_far = {
                BlockId.OUTAGE_SEND_AT: {
                    ActionId.OUTAGE_SEND_AT: {
                        "type": "datetimepicker",
                        "selected_date_time": int(utc(24, 12) + 40 * 86400),
                    }
                }
            }
            refused = (
                await bot.submit_view(form, {**values, **too_far}, user=ONCALL, view_id="VOUT0")
            ).json()
            pushed = (await bot.submit_view(form, {**values, **at}, user=ONCALL, view_id="VOUT1")).json()
            await bot.submit_view(pushed["view"], {}, user=ONCALL, view_id="VOC1")
            (job_id,) = await bot.runtime.worker.wait_submitted(1)
            waiting = await bot.runtime.store.get_job(job_id)
            sent_before = len(provider.sent())
            clock.now = utc(24, 22) + 1
            summary = await bot.runtime.worker.wait(job_id)
            return refused, pushed, waiting, sent_before, summary

    refused, pushed, waiting, sent_before, summary = run(go())
    assert "at most 30 days ahead" in refused["errors"][BlockId.OUTAGE_SEND_AT]
    assert "Scheduled for <!date^" in text_of(pushed["view"])
    assert waiting.run_at == utc(24, 22) and waiting.kind == JobKind.FANOUT and sent_before == 0
    assert summary.accepted == 2 and len(provider.sent()) == 2
