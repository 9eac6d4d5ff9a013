"""Consent: texts are one-way, and marketing texts carry the operator's footer (MKT_FOOTER)."""

from __future__ import annotations

import json

import pytest

from bot.config import load_settings
from bot.core.consent import ONE_WAY, check_footer, with_footer

from .conftest import run
from .harness import Bot
from .test_bulk import LEAD, bulk_values, confirm, review, text_of
from .test_slack_app import modal_values

FOOTER = "Opt out: https://example.com/stop"


def test_a_footer_goes_on_marketing_texts_once():
    assert with_footer("Sale today", "MKT", FOOTER) == f"Sale today\n{FOOTER}"
    assert with_footer(f"Sale today\n{FOOTER}", "MKT", FOOTER) == f"Sale today\n{FOOTER}"
    assert with_footer("Your code is 1234", "OTP", FOOTER) == "Your code is 1234"
    assert with_footer("Outage", "NOTIFY", FOOTER) == "Outage"
    assert with_footer("Sale", "MKT", "") == "Sale"


@pytest.mark.parametrize("footer", ["Reply STOP to opt out", "txt STOP", "Respond NO to unsubscribe"])
def test_a_footer_that_asks_for_a_reply_is_refused(footer, monkeypatch):
    with pytest.raises(ValueError, match="one-way"):
        check_footer(footer)
    monkeypatch.setenv("MKT_FOOTER", footer)
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert str(info.value).startswith("error: setting MKT_FOOTER: must not ask for a reply")


def test_marketing_bulk_shows_and_sends_the_footer_and_counts_its_segments(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, MKT_FOOTER=FOOTER) as bot:
            await bot.command("bulk", user=LEAD)
            form = (await bot.slack.wait_for("views.open", 1))[-1].params["view"]
            message = "x" * 150  # one segment alone; two with the footer
            view = await review(bot, bulk_values(recipients="+65 8100 0001", message=message, type_="MKT"))
            await confirm(bot, view)
            await bot.job_done(1)
            notify = await review(
                bot, bulk_values(recipients="+65 8100 0002", message="Plain", type_="NOTIFY")
            )
            await confirm(bot, notify, view_id="VNOTIFY")
            await bot.job_done(2)
            return form, view

    form, view = run(go())
    assert ONE_WAY in text_of(form) and FOOTER in text_of(form)
    shown = text_of(view)
    assert FOOTER in shown and "2 segments" in shown
    mkt, plain = provider.sent("BatchSendMessageToGlobe")
    assert json.loads(mkt.params["Message"]) == [f"{'x' * 150}\n{FOOTER}"]
    assert json.loads(plain.params["Message"]) == ["Plain"]


def test_a_marketing_text_from_the_send_form_ends_with_the_footer(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, MKT_FOOTER=FOOTER) as bot:
            await bot.command("")
            (opened,) = await bot.slack.wait_for("views.open")
            view = opened.params["view"]
            await bot.submit_view(view, modal_values("+852 5123 4567", "Spring sale", type_="MKT"))
            await bot.job_done(1)
            return view

    view = run(go())
    assert "cannot reply by SMS" in json.dumps(view, ensure_ascii=False)
    (sent,) = provider.sent()
    assert sent.params["Message"] == f"Spring sale\n{FOOTER}" and sent.params["Type"] == "MKT"


def test_a_number_gets_at_most_the_daily_cap(provider, tmp_path):
    """SMS_PER_NUMBER_DAILY: a single send over it is refused (a redelivered command still finds its job);
    a bulk confirmation leaves the number out and says so; a job re-checks when it starts."""

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, SMS_PER_NUMBER_DAILY=2) as bot:
            for i in (1, 2):
                await bot.command("+65 8100 0001 hello", user=LEAD, trigger=f"T-cap{i}")
                await bot.job_done(i)
            refused = await bot.command("+65 8100 0001 hello", user=LEAD, trigger="T-cap3")
            again = await bot.command("+65 8100 0001 hello", user=LEAD, trigger="T-cap2")  # a redelivery
            view = await review(bot, bulk_values(recipients="+65 8100 0001\n+65 8100 0002", message="Hi"))
            # confirmed later: meanwhile the other number reaches the cap too
            for i in (3, 4):
                await bot.command("+65 8100 0002 hello", user=LEAD, trigger=f"T-cap{i + 1}")
                await bot.job_done(i)
            await confirm(bot, view)
            job, summary = await bot.job_done(5)
            rows = await bot.recipients(job.id)
            return refused.text, again.text, view, summary, rows

    refused, again, view, summary, rows = run(go())
    assert "already had 2 texts today" in refused and "SMS_PER_NUMBER_DAILY" in refused
    assert "Already on its way" in again
    shown = text_of(view)
    assert "1 person will be texted" in shown and "1 number left out: already texted 2 times today" in shown
    assert (summary.accepted, summary.failed) == (0, 1) and rows[0].code == "DAILY_CAP"
    sent = [r.params["To"] for r in provider.sent()] + [
        n for r in provider.sent("BatchSendMessageToGlobe") for n in json.loads(r.params["To"])
    ]
    assert sent.count("6581000001") == 2 and sent.count("6581000002") == 2
