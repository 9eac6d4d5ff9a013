"""Bulk sends end to end: form → checking → confirmation → one job → batches at ≤ 1/s → thread summary."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from bot.core.access import Capability
from bot.core.worker import SimulatedCrash
from bot.slack.ids import ActionId, BlockId, CallbackId
from bot.sms.simulator import Fault

from .conftest import Clock, run
from .harness import Bot, database_away_once

LEAD = "U0LEAD"
_views = itertools.count(1)


def sg(i: int) -> str:
    return f"+65 8{100 + i // 10000:03d} {i % 10000:04d}"


def csv_list(n: int, *, extra: str = "") -> bytes:
    # A note column makes even a 2,500-line list larger than one network read (64 KB).
    rows = ["number,name,note"] + [
        f"{sg(i)},Person {i},spring campaign customer since 2019" for i in range(n)
    ]
    return ("\n".join(rows) + "\n" + extra).encode()


def bulk_values(
    *,
    recipients: str = "",
    message: str = "",
    type_: str = "NOTIFY",
    sender: str | None = None,
    validity: str | None = None,
    file: dict | None = None,
) -> dict:
    return {
        BlockId.BULK_RECIPIENTS: {
            ActionId.BULK_RECIPIENTS: {"type": "plain_text_input", "value": recipients or None}
        },
        BlockId.BULK_FILE: {ActionId.BULK_FILE: {"type": "file_input", "files": [file] if file else []}},
        BlockId.BULK_MESSAGE: {ActionId.BULK_MESSAGE: {"type": "plain_text_input", "value": message or None}},
        BlockId.BULK_TYPE: {
            ActionId.BULK_TYPE: {"type": "radio_buttons", "selected_option": {"value": type_}}
        },
        BlockId.BULK_SENDER: {ActionId.BULK_SENDER: {"type": "plain_text_input", "value": sender}},
        BlockId.BULK_VALIDITY: {ActionId.BULK_VALIDITY: {"type": "number_input", "value": validity}},
    }


async def open_form(bot: Bot) -> dict:
    before = len(bot.slack.called("views.open"))
    await bot.command("bulk", user=LEAD)
    calls = await bot.slack.wait_for("views.open", before + 1)
    view = calls[-1].params["view"]
    assert view["callback_id"] == CallbackId.BULK_FORM
    return view


async def review(bot: Bot, values: dict) -> dict:
    """Submit the form; returns the view the pushed "checking" view was updated to."""
    form = await open_form(bot)
    before = len(bot.slack.called("views.update"))
    resp = await bot.submit_view(form, values, user=LEAD, view_id=f"VFORM{next(_views)}")
    body = resp.json()
    assert body["response_action"] == "push", body
    assert body["view"]["title"]["text"] == "Checking the list"
    updates = await bot.slack.wait_for("views.update", before + 1)
    assert updates[-1].params["external_id"] == body["view"]["external_id"]
    return updates[-1].params["view"]


async def confirm(bot: Bot, view: dict, typed: str | None = None, view_id: str = "VCONF") -> dict:
    values = {}
    if typed is not None:
        values = {
            BlockId.BULK_TYPED_COUNT: {
                ActionId.BULK_TYPED_COUNT: {"type": "plain_text_input", "value": typed}
            }
        }
    resp = await bot.submit_view(view, values, user=LEAD, view_id=view_id)
    return resp.json() if resp.text else {}


def text_of(view_or_blocks) -> str:
    return json.dumps(view_or_blocks, ensure_ascii=False)


def test_form_errors_are_inline_and_change_nothing(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD) as bot:
            form = await open_form(bot)
            cases = [
                (bulk_values(message="hi"), BlockId.BULK_RECIPIENTS, "Paste at least one number"),
                (bulk_values(recipients="+65 8100 0001"), BlockId.BULK_MESSAGE, "The message is empty"),
                (
                    bulk_values(recipients="number,name\n+65 8100 0001,Ana", message="Hi {nam}"),
                    BlockId.BULK_MESSAGE,
                    "no column “nam”",
                ),
                (
                    bulk_values(recipients="+65 8100 0001", message="Hi {name"),
                    BlockId.BULK_MESSAGE,
                    "unmatched brace",
                ),
                (
                    bulk_values(recipients="+65 8100 0001", message="hi", sender="bad id"),
                    BlockId.BULK_SENDER,
                    "letters and digits",
                ),
                (  # 30 nines: once an OverflowError and HTTP 500 at the confirmation
                    bulk_values(recipients="+65 8100 0001", message="hi", validity="9" * 30),
                    BlockId.BULK_VALIDITY,
                    "at most 259,200 seconds",
                ),
            ]
            for values, block, expected in cases:
                body = (await bot.submit_view(form, values, user=LEAD)).json()
                assert body["response_action"] == "errors"
                assert expected in body["errors"][block], body
            assert await bot.count("drafts") == 0

    run(go())
    assert provider.received == []


def test_bulk_end_to_end_from_a_csv_file(provider, tmp_path):
    n = 2500
    dupes = f"{sg(0)},Again\n+852 123,Short\n+86 138 0013 8000,Mainland\ncall me,Word\n"
    provider.reset(reject_numbers=["6581000007"])

    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_BULK=LEAD, SMS_PRICES="SG=0.02,*=0.05", pacing="real"
        ) as bot:
            content = csv_list(n, extra=dupes)
            assert len(content) > 128 * 1024
            file = bot.slack.add_file("customers.csv", content)
            view = await review(
                bot, bulk_values(file=file, message="Hi {name}, your order shipped.", type_="MKT")
            )
            shown = text_of(view)
            assert view["callback_id"] == CallbackId.BULK_CONFIRM and view["notify_on_close"] is True
            assert "2,500 people will be texted" in shown and "1 duplicate removed" in shown
            assert "3 numbers refused" in shown and "Chinese-mainland" in shown and "Too short" in shown
            assert "line 2505: Not a phone number" in shown  # a word has no digits to show masked
            assert "Hong Kong; line" in shown and ".;" not in shown
            assert "2,500 segments in all" in shown and "50.00 USD" in shown
            assert "+65 8100 ****" in shown and "Hi Person 0, your order shipped." in shown
            assert view["submit"]["text"] == "Send 2,500 SMS"
            assert "Type 2,500 to confirm" in shown

            wrong = await confirm(bot, view, typed="250")
            assert (
                wrong["response_action"] == "errors"
                and "Type 2,500" in wrong["errors"][BlockId.BULK_TYPED_COUNT]
            )
            assert bot.runtime.worker.submitted == []
            ok = await confirm(bot, view, typed="2,500")
            assert ok == {"response_action": "clear"}
            job, summary = await bot.job_done(1)
            assert (summary.accepted, summary.failed, summary.unknown) == (n - 1, 1, 0)

            posts = bot.slack.called("chat.postMessage")
            thread = posts[-1]
            posted = await bot.posted(job.id)
            assert thread.params["thread_ts"] == posted.parent_ts == posted.thread_ts and posted.parent_ts
            summary_text = text_of(thread.params["blocks"])
            assert "2,499 accepted" in summary_text and "1 failed" in summary_text
            assert "+65 8100 ****" in summary_text and "Send again to the 1 not reached" in summary_text
            updates = [c for c in bot.slack.called("chat.update") if c.params["ts"] == posted.parent_ts]
            assert updates and "2,499 accepted" in text_of(updates[-1].params["blocks"])
            return job

    job = run(go())
    calls = provider.sent("BatchSendMessageToGlobe")
    assert [len(json.loads(c.params["To"])) for c in calls] == [1000, 1000, 500]
    assert all(b.at - a.at >= 1.0 for a, b in itertools.pairwise(calls))
    assert provider.counts["throttled"] == 0
    sent_to = [x for c in calls for x in json.loads(c.params["To"])]
    sent_msg = [x for c in calls for x in json.loads(c.params["Message"])]
    assert sent_to == [sg(i).replace(" ", "").lstrip("+") for i in range(n)]
    assert sent_msg == [f"Hi Person {i}, your order shipped." for i in range(n)]  # same order as the numbers
    assert {c.params["Type"] for c in calls} == {"MKT"} and all(
        c.params["TaskId"] == job.task_id for c in calls
    )


def test_a_bulk_that_waits_for_the_database_says_so_in_the_channel(provider, tmp_path):
    """The database goes away as a bulk's first batch is about to leave: past the worker's notice time
    the progress message in the channel says the send waits for the database and goes on by itself
    (the reporter cannot read the channel's messages from the database then); once it goes on, the
    note goes, and the finish shows as usual."""
    from bot.slack.reporter import WAITING_NOTE

    # The provider answers after 0.3 s: the job's finish, which shows the summary in place of the
    # progress, comes well after the note is taken away (its order is not the test's point otherwise).
    provider.reset(latency=0.3)

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD) as bot:
            bot.runtime.worker.notice_after = 0.0  # the bot's own is NOTICE_AFTER seconds
            database_away_once(bot.runtime.store)
            view = await review(bot, bulk_values(recipients=f"{sg(1)}\n{sg(2)}", message="Hello"))
            assert await confirm(bot, view) == {"response_action": "clear"}
            job, summary = await bot.job_done(1)
            parent = (await bot.posted(job.id)).parent_ts
            hooks = await bot.slack.wait_for_webhooks(2)
            updates = [c.params for c in bot.slack.called("chat.update") if c.params["ts"] == parent]
            return summary, [u["blocks"] for u in updates], [b["text"] for _, b in hooks]

    summary, updates, told = run(go())
    assert summary.accepted == 2
    shown = [text_of(blocks) for blocks in updates]
    noted = [i for i, text in enumerate(shown) if WAITING_NOTE in text]
    assert len(noted) == 1 and "sending *2 SMS*" in shown[noted[0]]  # the progress, with the note under it
    (k,) = noted
    assert updates[k + 1] == updates[k][:-1]  # going on: the same progress, without the note
    assert all(WAITING_NOTE not in text for text in shown[k + 1 :]) and "2 accepted" in shown[-1]
    assert any(t.startswith("⏸️ The bot's database cannot be reached") for t in told)


def test_two_confirmations_of_one_draft_start_one_job(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD) as bot:
            view = await review(bot, bulk_values(recipients="+65 8100 0001\n+65 8100 0002", message="Hello"))
            first, second = await asyncio.gather(
                confirm(bot, view, view_id="VX"), confirm(bot, view, view_id="VX")
            )
            assert first == second == {"response_action": "clear"}
            await bot.job_done(1)
            assert len(bot.runtime.worker.submitted) == 1
            assert await bot.count("jobs") == 1

    run(go())
    assert len(provider.sent("BatchSendMessageToGlobe")) == 1


@pytest.mark.parametrize("scheduled", [False, True])
def test_a_confirmation_whose_copy_fails_is_told_and_the_sender_starts_it_after_the_hold(
    provider, tmp_path, scheduled
):
    """The confirmation is answered before the recipients are copied into the job. When that copy fails,
    the person is told (with a reference) that the send starts by itself, or goes out at its scheduled
    time; it does, once, when the hold ends (or then): the sending replica copies them as it starts the
    job."""
    from .test_scheduled import send_at

    clock = Clock(time.time())
    later = 600 if scheduled else 0

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, clock=clock) as bot:
            values = bulk_values(recipients="+65 8100 0001\n+65 8100 0002", message="Hello")
            view = await review(bot, send_at(values, clock.now + later) if scheduled else values)
            store = bot.runtime.store

            async def broken(job_id: str, owner: str) -> int:
                raise RuntimeError("the database went away")

            store.copy_draft_rows = broken  # type: ignore[method-assign]
            assert await confirm(bot, view) == {"response_action": "clear"}
            ((_, told),) = await bot.slack.wait_for_webhooks(1)
            (job,) = await store.unfinished_jobs()
            assert bot.runtime.worker.submitted == [] and await store.recipients(job.id) == []
            clock.now += later + 16  # WORKER_LEASE_SECONDS (15) later: the hold has ended
            summary = await asyncio.wait_for(bot.runtime.worker.wait(job.id), 10)
            return told["text"], summary

    told, summary = run(go())
    assert "could not start just now (reference " in told, told
    assert (
        ("goes out as scheduled" in told and "<!date^" in told) if scheduled else "starts by itself" in told
    )
    assert (summary.total, summary.accepted) == (2, 2)
    assert len(provider.sent("BatchSendMessageToGlobe")) == 1


def test_closing_the_confirmation_discards_the_draft(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD) as bot:
            view = await review(bot, bulk_values(recipients="+65 8100 0001", message="Hello"))
            closed = {
                "type": "view_closed",
                "user": {"id": LEAD},
                "team": {"id": "T0001"},
                "api_app_id": "A0001",
                "view": {**view, "id": "VC", "state": {"values": {}}},
                "is_cleared": False,
            }
            assert (await bot.interact(closed)).status_code == 200
            refused = await confirm(bot, view)
            assert refused["response_action"] == "update"
            assert "Nothing was sent. This draft was discarded" in text_of(refused["view"])
            assert bot.runtime.worker.submitted == []

    run(go())
    assert provider.received == []


def test_crash_mid_job_never_resends_and_reports_unknown(provider, tmp_path):
    n = 2500
    crashed = []

    def fault(point: str) -> None:
        if point == "before_store_results" and not crashed:
            crashed.append(point)
            raise SimulatedCrash("killed after the first chunk was sent, before its answer was stored")

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, fault=fault) as bot:
            file = bot.slack.add_file("list.csv", csv_list(n))
            view = await review(bot, bulk_values(file=file, message="Hi {name}"))
            await confirm(bot, view, typed=str(n))
            (job_id,) = await bot.runtime.worker.wait_submitted(1)
            while bot.runtime.worker.crashed is None:  # the crash is the worker's own event; await its future
                try:
                    await bot.runtime.worker.wait(job_id)
                except RuntimeError:
                    break
            assert bot.runtime.worker.crashed is not None
            await bot.restart()
            summary = await bot.runtime.worker.wait(job_id)
            assert (summary.unknown, summary.accepted) == (1000, 1500)
            thread = bot.slack.called("chat.postMessage")[-1]
            shown = text_of(thread.params["blocks"])
            assert "1,000 with an unknown outcome" in shown and "not resent" in shown

    run(go())
    sent = provider.numbers_sent()
    assert (
        len(sent) == n and len(set(sent)) == n
    )  # the in-flight chunk reached the provider once, never again
    assert max(Counter(sent).values()) == 1


def test_failures_throttling_503_and_timeouts_end_in_the_right_state(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, SMS_MAX_ATTEMPTS=2, SMS_READ_TIMEOUT=0.5) as bot:

            async def send(message: str) -> tuple:
                view = await review(
                    bot, bulk_values(recipients="+65 8100 0001\n+65 8100 0002", message=message)
                )
                before = len(bot.runtime.worker.submitted)
                await confirm(bot, view)
                return await bot.job_done(before + 1)

            provider.reset(reject_numbers=["6581000002"])
            _, s = await send("failed list")
            assert (s.accepted, s.failed) == (1, 1)
            assert "listed in FailedList" in text_of(
                bot.slack.called("chat.postMessage")[-1].params["blocks"]
            )
            provider.reset()
            provider.inject(Fault("throttle", action="BatchSendMessageToGlobe", retry_after_ms=10))
            _, s = await send("throttled once")
            assert s.accepted == 2
            provider.inject(
                Fault("unavailable", action="BatchSendMessageToGlobe", times=2, retry_after_ms=10)
            )
            _, s = await send("503 twice")
            assert s.failed == 2
            assert "temporarily unavailable" in text_of(
                bot.slack.called("chat.postMessage")[-1].params["blocks"]
            )
            provider.inject(Fault("timeout", action="BatchSendMessageToGlobe", delay=2))
            _, s = await send("timeout")
            assert s.unknown == 2
            assert "unknown outcome" in text_of(bot.slack.called("chat.postMessage")[-1].params["blocks"])

    run(go())


def test_retry_failed_resends_only_the_failed_through_the_confirmation(provider, tmp_path):
    provider.reset(reject_numbers=["6581000002", "6581000003"])

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD) as bot:
            view = await review(
                bot, bulk_values(recipients="+65 8100 0001\n+65 8100 0002\n+65 8100 0003", message="Hello")
            )
            await confirm(bot, view)
            job, _ = await bot.job_done(1)
            provider.reset()
            click = await bot.click(
                ActionId.BULK_SEND_AGAIN, job.id, user=LEAD, block_id=BlockId.BULK_SUMMARY_ACTIONS
            )
            assert click.status_code == 200
            opened = (await bot.slack.wait_for("views.open", 2))[-1].params["view"]
            assert "2 people will be texted" in text_of(opened) and opened["submit"]["text"] == "Send 2 SMS"
            await confirm(bot, opened, view_id="VRETRY")
            retry_job, s = await bot.job_done(2)
            assert s.accepted == 2 and retry_job.meta["retry_of"] == job.id

    run(go())
    batches = provider.sent("BatchSendMessageToGlobe")
    assert json.loads(batches[-1].params["To"]) == ["6581000002", "6581000003"]


def test_guardrails_are_checked_before_the_confirmation(provider, tmp_path):
    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_BULK=LEAD, BULK_MAX_RECIPIENTS=2, BULK_DAILY_SEGMENTS=3
        ) as bot:
            too_many = await review(
                bot, bulk_values(recipients="\n".join(sg(i) for i in range(3)), message="hi")
            )
            assert "BULK_MAX_RECIPIENTS" in text_of(too_many) and "submit" not in too_many
            budget = await review(bot, bulk_values(recipients=sg(1) + "\n" + sg(2), message="x" * 170))
            assert "BULK_DAILY_SEGMENTS" in text_of(budget) and "4 segments" in text_of(budget)
            nothing = await review(bot, bulk_values(recipients="+852 123\n+86 138 0013 8000", message="hi"))
            said = text_of(nothing)
            assert "Nothing valid is left" in said and "Hong Kong; line 2" in said and "mainland." in said
            assert ".;" not in said and ".." not in said

    run(go())
    assert provider.received == []


def test_bulk_needs_its_own_permission(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            await bot.command("bulk", user=LEAD)
            hooks = await bot.slack.wait_for_webhooks(1)
            assert "ACCESS_BULK" in hooks[0][1]["text"]
            assert bot.slack.called("views.open") == []

    run(go())


def test_a_bulk_is_sent_only_by_its_owner_and_only_while_they_have_access(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=f"{LEAD},U0OTHER") as bot:
            view = await review(bot, bulk_values(recipients="+65 8100 0001\n+65 8100 0002", message="Hi"))
            other = (await bot.submit_view(view, {}, user="U0OTHER", view_id="VC1")).json()
            assert other["response_action"] == "update", other
            assert "only they can send it" in text_of(other["view"]) and "Nothing was sent" in text_of(
                other["view"]
            )
            bot.runtime.access.rules[Capability.BULK] = ("U0OTHER",)  # the owner's access is removed
            owner = await confirm(bot, view, view_id="VC2")
            assert owner["response_action"] == "update" and "Nothing sent" in text_of(owner["view"]), owner
            form_view = bot.slack.called("views.open")[-1].params["view"]  # the form, still open
            again = bulk_values(recipients="+65 8100 0003", message="Hi")
            form = (await bot.submit_view(form_view, again, user=LEAD, view_id="VFORM-AGAIN")).json()
            assert form["response_action"] == "errors", form
            assert await bot.count("drafts") == 1  # the first one only
            assert await bot.count("jobs") == 0

    run(go())
    assert provider.received == []


async def submit_while_updates_fail(bot: Bot, times: int) -> None:
    """The bulk form submitted while Slack answers the next `times` views.update with not_found."""
    bot.slack.fail("views.update", "not_found", times=times)
    form = await open_form(bot)
    values = bulk_values(recipients="+65 8100 0001\n+65 8100 0002", message="Hi")
    await bot.submit_view(form, values, user=LEAD, view_id=f"VFORM-NF{times}")


def test_the_pushed_view_is_updated_even_when_slack_does_not_know_it_yet(provider, tmp_path):
    """views.update can reach Slack before the ack that pushed the view (`not_found`): retried."""

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD) as bot:
            await submit_while_updates_fail(bot, 2)
            updates = await bot.slack.wait_for("views.update", 3)
            assert updates[-1].params["view"]["callback_id"] == CallbackId.BULK_CONFIRM
            assert [c for c in bot.slack.called("chat.postMessage") if c.params.get("channel") == LEAD] == []

    run(go())


@pytest.mark.parametrize("response_url", ["live", "expired"])
def test_a_view_that_cannot_be_updated_is_replaced_by_a_message_to_the_person(
    provider, tmp_path, response_url
):
    """Told where they ran `/sms bulk` (its response_url), or in a direct message once that expired."""

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD) as bot:
            if response_url == "expired":
                bot.slack.expired_webhooks.add("1")
            await submit_while_updates_fail(bot, 50)
            if response_url == "live":
                (hook,) = await bot.slack.wait_for_webhooks(1, limit=15)
                text = hook[1]["text"]
            else:
                calls = await bot.slack.wait_for("chat.postMessage", 1, limit=15)
                (dm,) = [c for c in calls if c.params.get("channel") == LEAD]
                text = dm.params["text"]
            assert "nothing was sent" in text and "/sms bulk" in text, text
            assert len(bot.slack.called("views.update")) == 5  # the first try and four retries
            (draft,) = await bot.runtime.store.read(
                lambda conn: conn.execute(sa.text("SELECT state FROM drafts")).all()
            )
            assert draft.state == "discarded"
            assert await bot.count("jobs") == 0

    run(go())
    assert provider.received == []
