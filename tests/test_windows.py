"""Send windows: marketing texts go out only in the recipient's daytime; the rest wait, across restarts.
Driven by a clock the test moves (hours pass at once; nothing sleeps)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot.core.windows import WindowCheck, WindowRules, opens_at, parse_overrides, parse_window, zones_for
from bot.sms.phone import parse_number

from .conftest import Clock, run
from .harness import Bot
from .test_bulk import LEAD, bulk_values, confirm, review, text_of
from .test_slack_app import modal_values


def utc(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC).timestamp()


SG, UK, HK = "+65 8123 4567", "+44 7911 123456", "+852 5123 4567"
NY, AU = "+1 212 555 0100", "+61 412 345 678"  # New York; an Australian mobile (eight candidate zones)


def test_windows_parse_and_decide_by_the_most_restrictive_zone():
    window = parse_window("08:00-21:00")
    rules = WindowRules(window, parse_overrides("US=08:00-20:00,MY=off"))
    assert parse_window("off") is None and rules.for_region("MY") is None
    assert str(rules.for_region("US")) == "08:00–20:00" and str(rules.for_region("SG")) == "08:00–21:00"
    for bad in ("8-21", "21:00-21:00"):
        with pytest.raises(ValueError):
            parse_window(bad)
    with pytest.raises(ValueError, match="two-letter"):
        parse_overrides("USA=08:00-20:00")
    check = WindowCheck(rules, utc(24, 12))  # 20:00 in Singapore, 12:00 in London, 07:00 in New York
    assert check.opens_at(parse_number(SG)) is None and check.opens_at(parse_number(UK)) is None
    assert check.opens_at(parse_number(NY)) == utc(24, 13)  # 08:00 in New York
    # Every Australian zone must be in its window: the last to open is UTC+6:30 (Cocos), 08:00 = 01:30 UTC
    au = zones_for(parse_number(AU))
    assert len(au) == 8 and opens_at(au, window, utc(24, 12)) == utc(25, 1, 30)
    # Inside everywhere at that moment, and not a minute earlier
    assert opens_at(au, window, utc(25, 1, 30)) is None and opens_at(au, window, utc(25, 1, 29)) == utc(
        25, 1, 30
    )
    # A window spanning midnight
    night = parse_window("22:00-06:00")
    assert opens_at(("Asia/Singapore",), night, utc(24, 15)) is None  # 23:00 there
    assert opens_at(("Asia/Singapore",), night, utc(24, 12)) == utc(24, 14)


def test_a_marketing_bulk_goes_to_each_recipient_inside_their_window_and_to_the_rest_when_it_opens(
    provider, tmp_path
):
    clock = Clock(utc(24, 12))
    listing = "\n".join([SG, UK, HK, NY, AU])

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, clock=clock) as bot:
            notify = await review(bot, bulk_values(recipients=NY, message="Your parcel ships today"))
            view = await review(bot, bulk_values(recipients=listing, message="Winter sale", type_="MKT"))
            await confirm(bot, view)
            job_ids = await bot.runtime.worker.wait_submitted(1)
            updates = []

            async def until_waiting(count: int) -> None:
                """Until a progress edit says `count` recipients wait for their window."""
                while True:
                    calls = await bot.slack.wait_for("chat.update", len(updates) + 1)
                    updates[:] = calls
                    if f"🌙 {count} waiting" in text_of(calls[-1].params["blocks"]):
                        return

            await until_waiting(2)
            first = [json.loads(r.params["To"]) for r in provider.sent("BatchSendMessageToGlobe")]
            clock.now = utc(24, 13, 0) + 1  # 08:00 in New York
            await until_waiting(1)
            second = [json.loads(r.params["To"]) for r in provider.sent("BatchSendMessageToGlobe")]
            await bot.restart(clock=clock)  # the wait survives a restart
            clock.now = utc(25, 1, 30) + 1
            summary = await bot.runtime.worker.wait(job_ids[0])
            return notify, view, first, second, summary

    notify, view, first, second, summary = run(go())
    shown = text_of(view)
    assert "3 go now, 2 wait" in shown and "SEND_WINDOW" in shown
    assert "wait*" not in text_of(notify)  # notifications are never held
    assert first == [["6581234567", "447911123456", "85251234567"]]
    assert second == [*first, ["12125550100"]]
    batches = [json.loads(r.params["To"]) for r in provider.sent("BatchSendMessageToGlobe")]
    assert batches == [*second, ["61412345678"]]
    assert summary.accepted == 5 and summary.held == 0


def test_a_single_marketing_text_outside_the_window_says_so_in_its_thread_and_goes_when_it_opens(
    provider, tmp_path
):
    """Texted from the send form at 07:00 in New York: the thread says it waits and until when (not a
    silent "sending"); it goes at 08:00 there, once."""
    clock = Clock(utc(24, 12))  # 07:00 in New York

    async def go():
        async with Bot(provider, tmp_path, clock=clock) as bot:
            await bot.command("")
            (opened,) = await bot.slack.wait_for("views.open")
            await bot.submit_view(opened.params["view"], modal_values(NY, "Winter sale", type_="MKT"))
            (job_id,) = await bot.runtime.worker.wait_submitted(1)
            posts = await bot.slack.wait_for("chat.postMessage", 2)
            sent_before = len(provider.sent())
            thread = (await bot.posted(job_id)).thread_ts
            clock.now = utc(24, 13) + 1  # 08:00 in New York
            summary = await bot.runtime.worker.wait(job_id)
            return posts, thread, sent_before, summary

    (parent, note), thread, sent_before, summary = run(go())
    assert "thread_ts" not in parent.params and thread and note.params["thread_ts"] == thread
    assert "Waiting for the recipient's send window" in note.params["text"]
    assert f"<!date^{int(utc(24, 13))}^" in note.params["text"]
    assert sent_before == 0
    assert summary.accepted == 1 and len(provider.sent()) == 1


def test_a_send_waiting_for_send_windows_pauses_at_once_and_resumes(provider, tmp_path):
    """Nobody runs a send that waits for its recipients' windows: Pause takes effect at the click and the
    progress message says so from there; after Resume the rest goes when the window opens."""
    from bot.core.store import JobState
    from bot.slack.ids import ActionId, BlockId

    clock = Clock(utc(24, 12))

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, clock=clock) as bot:
            view = await review(
                bot, bulk_values(recipients=f"{SG}\n{NY}", message="Winter sale", type_="MKT")
            )
            await confirm(bot, view)
            (job_id,) = await bot.runtime.worker.wait_submitted(1)
            updates: list = []
            while not updates or "🌙 1 waiting" not in text_of(updates[-1].params["blocks"]):
                updates = await bot.slack.wait_for("chat.update", len(updates) + 1)
            before = len(bot.slack.webhooks)
            await bot.click(ActionId.JOB_PAUSE, job_id, user=LEAD, block_id=BlockId.JOB_CONTROLS)
            hooks = (await bot.slack.wait_for_webhooks(before + 2))[before:]
            paused = await bot.runtime.store.get_job(job_id)
            clock.now = utc(24, 13) + 1  # New York's window is open, but the send is paused
            claimable = await bot.runtime.store.claim_jobs("probe", clock.now + 10, limit=5)
            await bot.click(ActionId.JOB_RESUME, job_id, user=LEAD, block_id=BlockId.JOB_CONTROLS)
            summary = await bot.runtime.worker.wait(job_id)
            return hooks, paused, claimable, summary

    hooks, paused, claimable, summary = run(go())
    told, shown = (payload for _, payload in hooks)
    assert "Pausing" in told["text"] and shown["replace_original"] is True
    assert "Paused by <@U0LEAD>" in text_of(shown["blocks"]) and "Resume" in text_of(shown["blocks"])
    assert paused.state == JobState.PAUSED and claimable == []
    batches = [json.loads(r.params["To"]) for r in provider.sent("BatchSendMessageToGlobe")]
    assert batches == [["6581234567"], ["12125550100"]] and summary.accepted == 2
