"""Receipts in Slack, end to end: the fake provider (its own process) pushes receipts over loopback to the
real bot's endpoint; the bot edits what it posted in the fake Slack."""

from __future__ import annotations

import json

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.deliveries import Deliveries
from bot.core.store import Job, JobKind, NewRecipient, RecipientState
from bot.slack.ids import ActionId, BlockId
from bot.slack.reporter import SlackReporter
from bot.slack.state import SlackState
from bot.sms import Delivery, Outcome, Receipt, Status
from bot.sms.phone import parse_number

from .conftest import open_store, run
from .fake_slack import FakeSlack
from .harness import Bot
from .test_bulk import LEAD, bulk_values, confirm, review, text_of
from .test_outage import ONCALL, open_outage, outage_values, submit_and_confirm, write_groups

TOKEN = "receipts-token-for-tests-0123"


async def pushing(bot: Bot, provider, **config) -> None:
    """The provider pushes its receipts to this bot from now on, a second after acceptance (well after
    the outcome is posted, so that the receipt edits it)."""
    provider.reset(receipts_url=f"{bot.runtime.url}/receipts/{TOKEN}", receipt_delay=1.0, **config)


def test_a_single_sends_outcome_is_edited_when_its_receipt_comes(provider, tmp_path):
    """Delivered, not delivered (in words), and an unknown outcome settled by the receipt: each thread's
    outcome message is edited in place, once; nothing is posted per receipt."""

    async def go():
        async with Bot(provider, tmp_path, RECEIPTS_TOKEN=TOKEN) as bot:
            await pushing(bot, provider, undelivered_suffixes=["0002"], unknown_suffixes=["0001"])
            for i, number in enumerate(["+852 5123 4567", "+65 8100 0002", "+65 8100 0001"], 1):
                await bot.command(f"{number} hello")
                await bot.job_done(i)
            updates = await bot.slack.wait_for("chat.update", 3, limit=15)
            jobs = [await bot.runtime.store.get_job(j) for j in bot.runtime.worker.submitted]
            posts = [await bot.posted(job.id) for job in jobs]
            rows = [(await bot.recipients(job.id))[0] for job in jobs]
            posted = len(bot.slack.called("chat.postMessage"))
            return updates, posts, rows, posted

    updates, posts, rows, posted = run(go())
    assert posted == 6  # a parent and an outcome per send: receipts edit, they do not post
    by_ts = {u.params["ts"]: json.dumps(u.params["blocks"], ensure_ascii=False) for u in updates}
    assert len(updates) == 3 and set(by_ts) == {p.outcome_ts for p in posts}
    delivered, undelivered, settled = (by_ts[p.outcome_ts] for p in posts)
    assert "✓ *Delivered* <!date^" in delivered and "Accepted" in delivered
    assert "✗ *Not delivered*: the carrier could not deliver it (UNDELIV)" in undelivered
    assert "Delivered" in settled and "unknown until the provider's receipt" in settled
    assert rows[2].state == RecipientState.ACCEPTED and rows[2].reconciled
    assert all("51234567" not in text for text in by_ts.values())


def test_a_receipt_edit_slack_refuses_for_now_is_made_again(provider, tmp_path, caplog):
    """Slack fails the edit that would show "Delivered" (a 503, then `service_unavailable`): the
    single send's one receipt has come, so nothing else would edit the message again. The edit is
    tried again after a growing wait, and shows the delivery."""

    async def go():
        async with Bot(provider, tmp_path, RECEIPTS_TOKEN=TOKEN) as bot:
            await pushing(bot, provider)
            bot.runtime.reporter.edit_retry_first = 0.1  # the bot's own is EDIT_RETRY_FIRST
            bot.slack.fail("chat.update", "service_unavailable", status=503)
            bot.slack.fail("chat.update", "service_unavailable")
            await bot.command("+852 5123 4567 hello")
            job, _ = await bot.job_done(1)
            updates = await bot.slack.wait_for("chat.update", 3, limit=15)
            return updates, await bot.posted(job.id)

    updates, post = run(go())
    assert [u.params["ts"] for u in updates] == [post.outcome_ts] * 3
    assert "✓ *Delivered* <!date^" in json.dumps(updates[-1].params["blocks"], ensure_ascii=False)
    waits = [r.getMessage() for r in caplog.records if "trying again in" in r.getMessage()]
    assert len(waits) == 2 and waits[0].endswith("trying again in 0.1 s") and waits[1].endswith("in 0.2 s")


def test_a_receipt_edit_cut_short_by_a_restart_is_made_by_the_next_process(provider, tmp_path):
    """Slack refuses the edit that would show "Delivered", and the process stops before trying again
    (those retries live in its memory). The next process finds in the database that the job's receipt
    was never shown, and edits the outcome."""

    async def go():
        async with Bot(provider, tmp_path, RECEIPTS_TOKEN=TOKEN) as bot:
            await pushing(bot, provider)
            bot.runtime.reporter.edit_retry_first = 60.0  # no second try before the stop
            bot.slack.fail("chat.update", "service_unavailable")
            await bot.command("+852 5123 4567 hello")
            job, _ = await bot.job_done(1)
            await bot.slack.wait_for("chat.update", 1, limit=15)  # the refused edit
            before = await bot.runtime.store.get_job(job.id)
            await bot.restart()
            updates = await bot.slack.wait_for("chat.update", 2, limit=15)
            await bot.runtime.reporter.aclose(grace=5)  # its look is over: what it recorded is in
            after = await bot.runtime.store.get_job(job.id)
            return updates, await bot.posted(job.id), before, after

    updates, post, before, after = run(go())
    assert before.receipts_unshown is not None and before.receipts_changed == 1
    assert [u.params["ts"] for u in updates] == [post.outcome_ts] * 2
    assert "✓ *Delivered* <!date^" in json.dumps(updates[-1].params["blocks"], ensure_ascii=False)
    assert after.receipts_changed == 1


def test_receipts_stay_offered_until_shown_in_the_thread_or_given_up(database):
    """A receipt is matched while the job's finish is not told yet (no outcome in the thread, nobody
    told): the finish shows the receipts as they are when it is told, and the job stays unshown, so
    that what comes between is shown; it is offered again once the finish is told, and that offer
    edits the outcome in the thread. An edit Slack refuses for good (the message is gone) is given
    up: not offered again."""

    async def go():
        slack = FakeSlack()
        await slack.start()
        store = await open_store(database)
        state = SlackState(store)
        client = AsyncWebClient("xoxb-test", base_url=slack.url + "/api/")
        reporter = SlackReporter(client, store, state, updates_per_minute=6000)
        deliveries = Deliveries(store, None, reporter)

        async def finished(number: str) -> Job:
            job, _ = await store.create_job(
                kind=JobKind.FANOUT,
                created_by="U1",
                channel_id="C1",
                recipients=[NewRecipient(parse_number(number), "hi")],
            )
            await store.mark_in_flight(job.id, [0])
            await store.record_outcomes(job.id, [Outcome(0, number, Status.ACCEPTED, message_id=job.id)])
            await store.complete_job(job.id)
            await state.save_post(job.id, thread_ts="1.1", parent_ts="1.1")
            return job

        async def receipt_for(job: Job) -> None:
            number = (await store.recipients(job.id))[0].number.e164[1:]
            await deliveries.accept(
                [Receipt(job.id, number, Delivery.DELIVERED, task_id=job.task_id)], "push"
            )
            await deliveries.match_now()
            await reporter.aclose(grace=5)  # its look at the job is over

        job = await finished("+65 8100 0001")
        await receipt_for(job)
        waiting = await store.get_job(job.id)
        untold = await deliveries.offer_unshown()  # until its finish is told
        await state.save_post(job.id, outcome_ts="1.2")  # the finish, told
        await store.mark_reported(job.id)
        await deliveries.offer_unshown()
        await reporter.aclose(grace=5)
        shown = await store.get_job(job.id)
        gone = await finished("+65 8100 0002")
        await state.save_post(gone.id, outcome_ts="2.2")
        await store.mark_reported(gone.id)
        slack.fail("chat.update", "message_not_found")
        await receipt_for(gone)
        offered = await deliveries.offer_unshown()
        gone = await store.get_job(gone.id)
        await store.close()
        await slack.stop()
        return waiting, untold, shown, gone, offered, slack.called("chat.update")

    waiting, untold, shown, gone, offered, updates = run(go())
    assert waiting.receipts_unshown is not None and untold == 0 and shown.receipts_unshown is None
    assert [u.params["ts"] for u in updates] == ["1.2", "2.2"]
    assert "Delivered" in json.dumps(updates[0].params["blocks"])
    assert gone.receipts_changed == 1 and gone.receipts_unshown is None and offered == 0


def test_a_bulk_summary_shows_delivery_and_sends_again_to_those_not_reached(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, RECEIPTS_TOKEN=TOKEN) as bot:
            await pushing(bot, provider, undelivered_suffixes=["0002"], expired_suffixes=["0003"])
            numbers = "\n".join(f"+65 8100 000{i}" for i in range(1, 6))
            view = await review(bot, bulk_values(recipients=numbers, message="Hello"))
            await confirm(bot, view)
            job, _ = await bot.job_done(1)
            posted = await bot.posted(job.id)

            def summary_edits():
                return [c for c in bot.slack.called("chat.update") if c.params["ts"] == posted.outcome_ts]

            while not any("Not delivered" in text_of(c.params["blocks"]) for c in summary_edits()):
                await bot.slack.wait_for("chat.update", len(bot.slack.called("chat.update")) + 1, limit=15)
            summary = await bot.runtime.store.summary(job.id)
            provider.reset()
            click = await bot.click(
                ActionId.BULK_SEND_AGAIN, job.id, user=LEAD, block_id=BlockId.BULK_SUMMARY_ACTIONS
            )
            assert click.status_code == 200
            opened = (await bot.slack.wait_for("views.open", 2))[-1].params["view"]
            await confirm(bot, opened, view_id="VAGAIN")
            again, _ = await bot.job_done(2)
            return summary, summary_edits()[-1], opened, again, job

    summary, edit, opened, again, job = run(go())
    assert (summary.delivered, summary.undelivered, summary.waiting) == (3, 2, 0)
    text = text_of(edit.params["blocks"])
    assert "3 of 5 delivered" in text and "2 not delivered" in text
    assert "+65 8100 ****" in text and "Send again to the 2 not reached" in text
    assert "2 people will be texted" in text_of(opened)
    assert again.meta["retry_of"] == job.id
    batches = provider.sent("BatchSendMessageToGlobe")
    assert json.loads(batches[-1].params["To"]) == ["6581000002", "6581000003"]


def test_an_outage_sent_again_to_those_not_reached_is_an_outage_again(provider, tmp_path):
    async def go():
        async with Bot(
            provider,
            tmp_path,
            ACCESS_OUTAGE=ONCALL,
            CONTACT_GROUPS_FILE=write_groups(tmp_path),
            RECEIPTS_TOKEN=TOKEN,
        ) as bot:
            await pushing(bot, provider, undelivered_suffixes=["4567"])  # both payments members
            form = await open_outage(bot)
            values = outage_values(groups=["payments"], service="API", status="Down", details="x")
            _, job, _ = await submit_and_confirm(bot, form, values)
            while (await bot.runtime.store.summary(job.id)).undelivered < 2:
                await bot.slack.wait_for("chat.update", len(bot.slack.called("chat.update")) + 1, limit=15)
            provider.reset()
            refused = await bot.click(
                ActionId.BULK_SEND_AGAIN, job.id, user=LEAD, block_id=BlockId.BULK_SUMMARY_ACTIONS
            )
            await bot.click(
                ActionId.BULK_SEND_AGAIN, job.id, user=ONCALL, block_id=BlockId.BULK_SUMMARY_ACTIONS
            )
            opened = (await bot.slack.wait_for("views.open", 2))[-1].params["view"]
            resp = await bot.submit_view(opened, {}, user=ONCALL, view_id="VOUTAGAIN")
            assert resp.status_code == 200
            again, summary = await bot.job_done(2)
            return refused, again, summary, bot.slack.webhooks

    refused, again, summary, webhooks = run(go())
    assert refused.status_code == 200 and any("ACCESS_OUTAGE" in json.dumps(w) for w in webhooks)
    assert again.kind == "fanout" and again.meta["outage"] and summary.accepted == 2
    sent = provider.sent("SendMessageToGlobe")
    assert sorted(r.params["To"] for r in sent) == ["6581234567", "85251234567"]


def test_a_message_whose_receipt_never_comes_is_settled_by_query_message(provider, tmp_path):
    """No push, no queue: the bot asks the provider (QueryMessage, through the account's limiter) at the
    first check time, and edits the thread with the answer."""

    async def go():
        async with Bot(provider, tmp_path, RECEIPTS_CHECK_AFTER="0.5,60") as bot:
            provider.reset(undelivered_suffixes=["4567"])  # and no receipts pushed anywhere
            await bot.command("+852 5123 4567 hello")
            job, _ = await bot.job_done(1)
            (edit,) = await bot.slack.wait_for("chat.update", 1, limit=15)
            row = (await bot.recipients(job.id))[0]
            return edit, row, bot.runtime.deliveries.counts

    edit, row, counts = run(go())
    assert "Not delivered" in json.dumps(edit.params["blocks"]) and counts["queried"] == 1
    assert row.delivery == "undelivered" and row.delivery_code == "UNDELIV"
    assert len(provider.sent("QueryMessage")) == 1
