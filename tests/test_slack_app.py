"""The Slack app end to end: signed requests over HTTP → the real bot → fake provider + fake Slack."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.access import Capability
from bot.core.db import DatabaseUnreachable
from bot.core.store import RecipientState
from bot.runtime import Runtime
from bot.slack import acks, bulk_views
from bot.slack.app import _said
from bot.slack.ids import ActionId, BlockId, CallbackId
from bot.sms.simulator import Fault

from .conftest import Clock, run
from .harness import Bot, database_away_once, sign

HK = "85251234567"
FULL_NUMBER_PIECES = ("51234567", "5123 4567", "5123-4567")


def no_full_number(obj) -> bool:
    text = json.dumps(obj, ensure_ascii=False)
    return not any(piece in text for piece in FULL_NUMBER_PIECES)


def test_send_now_posts_parent_and_thread_reply(provider, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    async def go():
        async with Bot(provider, tmp_path) as bot:
            resp = await bot.command("+852 5123 4567 Your parcel ships today")
            assert resp.status_code == 200
            assert "Sending to `+852 5123 ****`" in resp.text
            job, summary = await bot.job_done()
            assert summary.accepted == 1
            sent = provider.sent()
            assert [r.params["To"] for r in sent] == [HK] and sent[0].answered == "OK"  # signature verified
            assert sent[0].params["Message"] == "Your parcel ships today"
            posts = bot.slack.called("chat.postMessage")
            parent, reply = posts
            assert parent.params["channel"] == "C0SUPPORT" and "thread_ts" not in parent.params
            assert "+852 5123 ****" in json.dumps(parent.params["blocks"], ensure_ascii=False)
            assert "<@U0AGENT>" in json.dumps(parent.params["blocks"])
            posted = await bot.posted(job.id)
            assert reply.params["thread_ts"] == posted.thread_ts == posted.parent_ts and posted.thread_ts
            assert reply.params["channel"] == "C0SUPPORT"
            reply_text = json.dumps(reply.params["blocks"], ensure_ascii=False)
            assert "Accepted" in reply_text and (await bot.recipients(job.id))[0].message_id in reply_text
            assert "Hong Kong" in reply_text
            for call in bot.slack.calls:
                assert no_full_number(call.params)
            assert no_full_number(resp.text)

    run(go())
    for record in caplog.records:
        assert not any(piece in record.getMessage() for piece in FULL_NUMBER_PIECES), record.getMessage()


def test_later_sends_to_the_same_number_share_the_thread(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            await bot.command("+852 5123 4567 first")
            first, _ = await bot.job_done(1)
            await bot.command("+852-5123-4567 second")
            second, _ = await bot.job_done(2)
            first_thread = (await bot.posted(first.id)).thread_ts
            assert (await bot.posted(second.id)).thread_ts == first_thread and first_thread
            posts = bot.slack.called("chat.postMessage")
            assert len(posts) == 3  # one parent, two replies
            assert posts[2].params["thread_ts"] == first_thread
            assert "second" in json.dumps(posts[2].params["blocks"])
            await bot.command("+65 8123 4567 other customer")
            third, _ = await bot.job_done(3)
            assert (await bot.posted(third.id)).thread_ts != first_thread

    run(go())


def test_ack_returns_while_the_provider_holds_its_answer(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            provider.hold()
            try:
                resp = await bot.command("+852 5123 4567 hello")
                assert resp.status_code == 200
                (job_id,) = await bot.runtime.worker.wait_submitted(1)
                assert not bot.runtime.worker.finished(job_id)  # the provider has not answered yet
            finally:
                provider.release()
            _, summary = await bot.job_done()
            assert summary.accepted == 1

    run(go())


@pytest.mark.parametrize("headers", ["bad", "stale", "missing"])
def test_bad_or_stale_signature_is_401_and_sends_nothing(provider, tmp_path, headers):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            body = "command=%2Fsms&text=%2B852+5123+4567+hi&user_id=U1&channel_id=C1&trigger_id=t"
            signed = {
                "bad": sign(body, secret="wrong-secret"),
                "stale": sign(body, timestamp=1_600_000_000),
                "missing": {},
            }[headers]
            resp = await bot.post(body, signed)
            assert resp.status_code == 401
            assert bot.runtime.worker.submitted == []
            assert [c.method for c in bot.slack.calls] == ["auth.test"]  # the start-up token check only

    run(go())
    assert provider.received == []


MALFORMED: dict[str, tuple[bytes, str]] = {
    "not json": (b"{not json", "application/json"),
    "a json list": (b"[1, 2, 3]", "application/json"),
    "a json number": (b"42", "application/json"),
    "not utf-8": (b"command=%2Fsms&text=\xff\xfe\xfd", "application/x-www-form-urlencoded"),
    "payload not json": (b"payload=%7Bnope", "application/x-www-form-urlencoded"),
    "payload a list": (b"payload=%5B1%5D", "application/x-www-form-urlencoded"),
    "empty": (b"", "application/x-www-form-urlencoded"),
}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_no_input_gets_a_server_error_or_a_traceback(provider, tmp_path, caplog, signed):
    """Anyone who can reach /slack/events may send anything: unsigned → 401, signed but not a Slack
    payload → 400, one log line each, no traceback, nothing sent."""
    import hashlib
    import hmac
    import time

    from .harness import SIGNING_SECRET

    def headers(body: bytes, content_type: str, timestamp: str | None = None) -> dict[str, str]:
        ts = timestamp or str(int(time.time()))
        digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
        secret = digest.hexdigest() if signed else "0" * 64
        return {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={secret}",
        }

    async def go():
        async with Bot(provider, tmp_path) as bot:
            statuses = {}
            for name, (body, content_type) in MALFORMED.items():
                resp = await bot.http.post("/slack/events", content=body, headers=headers(body, content_type))
                statuses[name] = resp.status_code
            for timestamp in ("not-a-number", "0x1f", "-5", "1e9", "9" * 40):
                resp = await bot.http.post(
                    "/slack/events", content=b"a=b", headers=headers(b"a=b", "text/plain", timestamp)
                )
                statuses[f"timestamp {timestamp[:8]}"] = resp.status_code
            return statuses

    caplog.set_level(logging.INFO)
    statuses = run(go())
    expected = dict.fromkeys(MALFORMED, 400 if signed else 401)
    if signed:
        expected["empty"] = 404  # well formed, just nothing a listener handles: Bolt's answer
    assert {name: status for name, status in statuses.items() if not name.startswith("timestamp")} == expected
    assert {status for name, status in statuses.items() if name.startswith("timestamp")} == {401}
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records if r.exc_info]
    refused = [r.getMessage() for r in caplog.records if "status=4" in r.getMessage()]
    assert len(refused) == len(statuses)
    assert provider.received == []


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found"])
def test_cannot_post_tells_the_sender_and_how_to_invite(provider, tmp_path, error):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            bot.slack.fail("chat.postMessage", error)
            await bot.command("+852 5123 4567 hello", channel="D0DM")
            _, summary = await bot.job_done()
            assert summary.accepted == 1  # the SMS went out regardless
            hooks = await bot.slack.wait_for_webhooks(1)
            outcome = json.dumps(hooks[-1][1], ensure_ascii=False)
            assert "Accepted" in outcome and "/invite" in outcome
            assert hooks[-1][1]["response_type"] == "ephemeral"

    run(go())


def test_when_the_channel_and_the_response_url_fail_the_sender_gets_a_direct_message(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            bot.slack.fail("chat.postMessage", "channel_not_found", channel="C0SUPPORT")
            bot.slack.expired_webhooks.add("1")
            await bot.command("+852 5123 4567 hello", response_url="1")
            _, summary = await bot.job_done()
            assert summary.accepted == 1
            posts = await bot.slack.wait_for("chat.postMessage", 2)
            return posts[-1].params

    dm = run(go())
    assert dm["channel"] == "U0AGENT"  # the app's own DM with the sender
    outcome = json.dumps(dm, ensure_ascii=False)
    assert "Accepted" in outcome and "/invite" in outcome


def test_an_outcome_nobody_could_be_told_is_told_when_slack_answers_again(provider, tmp_path, caplog):
    """At the finish the channel, the response_url and the DM all fail: nobody learns the outcome then.
    The sending replica tells it once Slack answers again: a direct message."""
    from bot.core.worker import REPORT_EVERY

    clock = Clock(time.time())

    async def go():
        async with Bot(provider, tmp_path, clock=clock, WORKER_LEASE_SECONDS=4.5) as bot:
            bot.slack.fail("chat.postMessage", "not_in_channel", channel="C0SUPPORT")
            bot.slack.fail("chat.postMessage", "fatal_error", channel="U0AGENT")
            bot.slack.expired_webhooks.add("1")
            await bot.command("+852 5123 4567 hello", response_url="1")
            _, summary = await bot.job_done()
            nobody = [r.getMessage() for r in caplog.records if "could not tell" in r.getMessage()]
            before = len(bot.slack.called("chat.postMessage"))  # the refused parent and DM
            clock.now += 4.5 + REPORT_EVERY + 0.1  # its process's hold ends; the next look is due
            posts = await bot.slack.wait_for("chat.postMessage", before + 1)
            return summary, nobody, before, posts

    summary, nobody, before, posts = run(go())
    assert summary.accepted == 1 and len(nobody) == 1
    assert before == 2
    dm = posts[-1].params
    assert dm["channel"] == "U0AGENT" and "Accepted" in json.dumps(dm, ensure_ascii=False)


def test_a_finish_reported_again_after_its_outcome_was_posted_posts_nothing_more(provider, tmp_path):
    """The process posted the outcome in the thread and stopped before recording that the finish was
    told: the sending replica's report of it finds the outcome there and posts nothing."""

    async def go():
        async with Bot(provider, tmp_path) as bot:
            await bot.command("+852 5123 4567 hello")
            job, _ = await bot.job_done()
            before = len(bot.slack.called("chat.postMessage"))  # the parent and the outcome
            job, summary, recipients = await bot.runtime.store.finish_report(job.id)
            await bot.runtime.reporter.job_finished(job, summary, recipients)
            return before, len(bot.slack.called("chat.postMessage"))

    before, after = run(go())
    assert before == 2 and after == before


@pytest.mark.parametrize("response_url", ["live", "expired"])
def test_a_form_slack_will_not_open_is_explained_to_the_person(provider, tmp_path, caplog, response_url):
    """`expired_trigger_id` when the bot was too slow: no modal, and once no message either."""

    async def go():
        async with Bot(provider, tmp_path) as bot:
            if response_url == "expired":
                bot.slack.expired_webhooks.add("1")
            bot.slack.fail("views.open", "expired_trigger_id")
            resp = await bot.command("", response_url="1")
            assert resp.status_code == 200
            if response_url == "live":
                (hook,) = await bot.slack.wait_for_webhooks(1)
                return hook[1]
            dms = await bot.slack.wait_for("chat.postMessage", 1)
            return dms[-1].params

    told = run(go())
    text = told["text"]
    assert "could not open" in text and "three seconds" in text and "Run the command again" in text
    ref = text.rsplit("ref ", 1)[1].rstrip(")")
    assert any(ref in r.getMessage() for r in caplog.records)  # the same id is in the log
    if response_url == "expired":
        assert told["channel"] == "U0AGENT"
    assert provider.received == []


def test_rate_limited_post_is_retried(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            bot.slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=0)
            await bot.command("+852 5123 4567 hello")
            job, _ = await bot.job_done()
            posts = bot.slack.called("chat.postMessage")
            assert (
                len(posts) == 3 and (await bot.posted(job.id)).thread_ts
            )  # 429, then the parent, then the reply

    run(go())


def test_provider_refusal_and_unknown_outcome_are_said_plainly(provider, tmp_path):
    provider.reset(reject_numbers=[HK])

    async def go():
        async with Bot(provider, tmp_path) as bot:
            await bot.command("+852 5123 4567 hello")
            _, summary = await bot.job_done(1)
            assert summary.failed == 1
            reply = json.dumps(bot.slack.called("chat.postMessage")[-1].params["blocks"], ensure_ascii=False)
            assert (
                "*Not sent*: The provider says the phone number is not in a valid format (`MOBILE_NUMBER_ILLEGAL`)."
                in reply
            )
            provider.inject(Fault("internal"))
            await bot.command("+65 8123 4567 hello")
            _, summary = await bot.job_done(2)
            assert summary.unknown == 1
            reply = json.dumps(bot.slack.called("chat.postMessage")[-1].params["blocks"], ensure_ascii=False)
            assert "Outcome unknown" in reply and "not resent" in reply

    run(go())
    assert len(provider.sent()) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", "Send SMS from Slack"),
        ("frobnicate now", "Unknown subcommand `frobnicate`"),
        ("+852 123 hello", "Too short for a number in Hong Kong"),
        ("+86 138 0013 8000 hello", "Chinese-mainland numbers (+86) cannot be reached"),
        (
            "+852 5123 4567",
            "Nothing was sent. There is no message after the number. Write it like `/sms +852",
        ),
        ("+852 5123 4567   ", "There is no message after the number."),
        ("5123 4567 hi", "No country code"),
    ],
)
def test_command_replies(provider, tmp_path, text, expected):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            resp = await bot.command(text)
            assert resp.status_code == 200
            assert expected in resp.text
            assert bot.runtime.worker.submitted == []

    run(go())
    assert provider.received == []


def test_default_region_allows_local_numbers(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, SMS_DEFAULT_REGION="US") as bot:
            await bot.command("(415) 555-0100 hello")
            await bot.job_done()

    run(go())
    assert provider.sent()[0].params["To"] == "14155550100"


def modal_values(to: str, message: str, sender: str = "", type_: str | None = None) -> dict:
    values = {
        BlockId.SEND_TO: {ActionId.SEND_TO: {"type": "plain_text_input", "value": to}},
        BlockId.SEND_MESSAGE: {ActionId.SEND_MESSAGE: {"type": "plain_text_input", "value": message}},
        BlockId.SEND_SENDER: {ActionId.SEND_SENDER: {"type": "plain_text_input", "value": sender or None}},
        BlockId.SEND_TYPE: {
            ActionId.SEND_TYPE: {
                "type": "static_select",
                "selected_option": {"value": type_} if type_ else None,
            }
        },
    }
    return {str(k): {str(a): v for a, v in d.items()} for k, d in values.items()}


def test_modal_opens_validates_inline_and_sends_once(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            await bot.command("")
            (opened,) = await bot.slack.wait_for("views.open")
            view = opened.params["view"]
            assert view["callback_id"] == CallbackId.SEND_MODAL
            assert json.loads(view["private_metadata"])["channel_id"] == "C0SUPPORT"

            bad = await bot.submit_view(view, modal_values("+852 123", "x" * 200, sender="bad-id"))
            body = bad.json()
            assert body["response_action"] == "errors"
            assert "Too short" in body["errors"][BlockId.SEND_TO]
            assert "“-” is not allowed" in body["errors"][BlockId.SEND_SENDER]
            assert BlockId.SEND_MESSAGE not in body["errors"]  # a valid message is not shown as an error

            empty = await bot.submit_view(view, modal_values("+852 5123 4567", ""))
            assert "The message is empty" in empty.json()["errors"][BlockId.SEND_MESSAGE]

            good = modal_values("+852 5123 4567", "From the form", sender="Alicloud321", type_="NOTIFY")
            first, second = await asyncio.gather(
                bot.submit_view(view, good, view_id="V0SAME"), bot.submit_view(view, good, view_id="V0SAME")
            )
            assert first.status_code == second.status_code == 200
            assert first.text == "" and second.text == ""
            job, summary = await bot.job_done(1)
            assert summary.accepted == 1 and job.sender_id == "Alicloud321" and job.type == "NOTIFY"
            assert len(bot.runtime.worker.submitted) == 1

    run(go())
    (sent,) = provider.sent()
    assert sent.params["From"] == "Alicloud321" and sent.params["Type"] == "NOTIFY"


def test_access_lists(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_SEND="U0BOSS,S0ONCALL") as bot:
            bot.slack.group_members["S0ONCALL"] = ["U0MEMBER"]
            await bot.command(
                "+852 5123 4567 hi", user="U0AGENT"
            )  # group unknown yet: looked up after the ack
            hooks = await bot.slack.wait_for_webhooks(1)
            assert "not allowed" in hooks[0][1]["text"] and "ACCESS_SEND" in hooks[0][1]["text"]
            refused = await bot.command("+852 5123 4567 hi", user="U0AGENT")  # now cached: said in the ack
            assert "not allowed" in refused.text and "ACCESS_SEND" in refused.text
            assert bot.runtime.worker.submitted == []
            await bot.command("+852 5123 4567 hi", user="U0MEMBER")
            await bot.job_done(1)
            await bot.command("+852 5123 4567 hi", user="U0BOSS")
            await bot.job_done(2)

    run(go())
    assert len(provider.sent()) == 2


def test_history_is_masked_and_says_what_was_delivered(provider, tmp_path):
    """Acked at once; the list comes through the command's response_url: a single send's delivery state,
    a bulk send's delivered count."""
    from .test_bulk import LEAD, bulk_values, confirm, review

    provider.reset(undelivered_suffixes=["0002"])

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, RECEIPTS_CHECK_AFTER="0.2") as bot:
            await bot.command("+852 5123 4567 hello there", user=LEAD)
            await bot.job_done(1)
            await confirm(
                bot, await review(bot, bulk_values(recipients="+65 8100 0001\n+65 8100 0002", message="Hi"))
            )
            bulk_job, _ = await bot.job_done(2)
            while (await bot.runtime.store.summary(bulk_job.id)).waiting:  # the sweep asks the provider
                await bot.slack.wait_for("chat.update", len(bot.slack.called("chat.update")) + 1, limit=15)
            before = len(bot.slack.webhooks)
            resp = await bot.command("history", user=LEAD, response_url="hist")
            await bot.command("history", user="U0OTHER", response_url="other")
            hooks = await bot.slack.wait_for_webhooks(before + 2)
            (answer,) = [body for name, body in hooks if name.endswith("hist")]
            (other,) = [body for name, body in hooks if name.endswith("other")]
            return resp, json.dumps(answer, ensure_ascii=False), json.dumps(other)

    resp, answer, other = run(go())
    assert resp.status_code == 200 and not resp.text  # acked before anything that grows with a send's size
    assert "+852 5123 ****" in answer and "hello there" in answer and "delivered" in answer
    assert "2 recipients" in answer and "1 of 2 delivered, 1 not delivered" in answer
    assert no_full_number(answer)
    assert "not sent any SMS" in other


def test_history_of_one_number_lists_the_users_texts_to_it_in_any_send(provider, tmp_path):
    """`/sms history <number>`: that number's texts from this user, a single send's and its row in a bulk
    send alike (its own state), and no other number's; a number that does not parse is refused at the ack;
    nobody sees another person's sends."""
    from .test_bulk import LEAD, bulk_values, confirm, review

    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD) as bot:
            await bot.command("+852 5123 4567 first to the customer", user=LEAD)
            await bot.job_done(1)
            await bot.command("+65 8100 0009 to someone else", user=LEAD)
            await bot.job_done(2)
            await confirm(
                bot,
                await review(bot, bulk_values(recipients="+852 5123 4567\n+65 8100 0002", message="Hi all")),
            )
            await bot.job_done(3)
            before = len(bot.slack.webhooks)
            await bot.command("history +852 5123-4567", user=LEAD, response_url="one")
            await bot.command("history +852 5123 4567", user="U0OTHER", response_url="other")
            bad = await bot.command("history +852 5123", user=LEAD, response_url="bad")
            hooks = await bot.slack.wait_for_webhooks(before + 2)
            said = {name: json.dumps(body, ensure_ascii=False) for name, body in hooks[before:]}
            return said, bad.text

    said, bad = run(go())
    assert set(said) == {"one", "other"}  # the bad number got its answer at the ack, nothing after
    one = said["one"]
    assert "first to the customer" in one and "Hi all" in one and "(one of 2 recipients)" in one
    assert "to someone else" not in one and "+65" not in one
    assert "+852 5123 ****" in one and no_full_number(one)
    assert "not sent any SMS to `+852 5123 ****`" in said["other"]
    assert "Too short" in bad and "/sms history +852 5123 4567" in bad


def test_audit_log_records_every_attempt(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            await bot.command("+852 5123 4567 hello")
            job, _ = await bot.job_done()
            (r,) = await bot.recipients(job.id)
            assert (job.created_by, job.channel_id) == ("U0AGENT", "C0SUPPORT")
            assert r.number.e164 == "+" + HK and r.message == "hello" and r.state == RecipientState.ACCEPTED
            assert r.message_id and r.request_id and job.created_at and job.finished_at

    run(go())


TEXT = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda a, b: f"{a} {b}",
        st.sampled_from(["+852 5123 4567", "+86 1380013", "00852", "(415) 555"]),
        st.text(max_size=30),
    ),
)


def test_property_any_command_text_gets_a_send_or_a_specific_error(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            texts: list[str] = []

            @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
            @given(TEXT)
            def collect(text):
                texts.append(text)

            collect()
            sends = 0
            for text in texts:
                before = len(bot.runtime.worker.submitted)
                resp = await bot.command(text)
                assert resp.status_code == 200, text
                if "Sending to" in resp.text:
                    await bot.runtime.worker.wait_submitted(before + 1)
                    sends += 1
                elif resp.text:
                    assert any(
                        w in resp.text
                        for w in (
                            "Nothing was sent",
                            "Unknown subcommand",
                            "Send SMS from Slack",
                            "recent sends",
                            "not sent any",
                        )
                    ), resp.text
                    assert "Traceback" not in resp.text and "went wrong" not in resp.text
                else:  # an empty ack opens the form
                    assert not text.strip()
            for job_id in bot.runtime.worker.submitted:
                await bot.runtime.worker.wait(job_id)

    run(go())


def test_rejected_tokens_stop_start_up_with_one_line(provider, tmp_path):
    from bot.slack.app import StartupError

    async def go(fail_method: str, **settings):
        bot = Bot(provider, tmp_path, **settings)
        await bot.slack.start()
        bot.slack.fail(fail_method, "invalid_auth")
        runtime = Runtime(bot.settings())
        try:
            await runtime.start()
        except StartupError as exc:
            return str(exc)
        finally:
            await runtime.aclose()
            await bot.slack.stop()
        return "started"

    assert run(go("auth.test")) == "SLACK_BOT_TOKEN was rejected by Slack (invalid_auth)."
    socket = run(go("apps.connections.open", SLACK_APP_TOKEN="xapp-1-bad"))
    assert socket.startswith("SLACK_APP_TOKEN was rejected by Slack (invalid_auth)") and "\n" not in socket


def test_a_slash_command_delivered_twice_sends_once(provider, tmp_path):
    """Slack redelivers a command (same trigger id) when our answer was late or lost: one SMS, and the
    second delivery is told it is already on its way."""

    async def go():
        async with Bot(provider, tmp_path) as bot:
            first = await bot.command("+852 5123 4567 Your parcel ships today", trigger="T-ONCE")
            again = await bot.command("+852 5123 4567 Your parcel ships today", trigger="T-ONCE")
            await bot.job_done(1)
            return first.text, again.text, await bot.count("jobs")

    first, again, jobs = run(go())
    assert "Sending to `+852 5123 ****`" in first
    assert "Already on its way" in again and "+852 5123 ****" in again
    assert jobs == 1 and len(provider.sent()) == 1


def test_every_slack_request_is_served_first_by_the_store_in_either_mode(provider, tmp_path):
    """The 'someone is waiting' flag comes from a Bolt middleware, so a request dispatched without the HTTP
    server (as Socket Mode does) has it too, in the listener's own store calls."""
    from urllib.parse import urlencode

    from slack_bolt.request.async_request import AsyncBoltRequest

    from bot.core.store import ANSWERING

    from .harness import sign

    async def go():
        async with Bot(provider, tmp_path) as bot:
            seen: list[bool] = []
            create = bot.runtime.store.create_job

            async def recording(**kwargs):
                seen.append(ANSWERING.get())
                return await create(**kwargs)

            bot.runtime.store.create_job = recording
            body = urlencode(
                {"command": "/sms", "text": "+852 5123 4567 hi", "user_id": "U0AGENT", "channel_id": "C0SUPPORT",
                 "team_id": "T0001", "trigger_id": "T-DIRECT", "response_url": bot.slack.response_url("d")}
            )  # fmt: skip
            headers = {
                "content-type": ["application/x-www-form-urlencoded"],
                **{k.lower(): [v] for k, v in sign(body).items()},
            }
            response = await bot.runtime.bolt.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
            await bot.job_done(1)
            return response.status, seen

    status, seen = run(go())
    assert status == 200 and seen == [True]


def test_the_send_form_asks_for_access_again_when_submitted(provider, tmp_path):
    """Access removed while the form was open (or a form submitted by someone who never had it): refused
    in the form, nothing queued."""

    async def go():
        async with Bot(provider, tmp_path, ACCESS_SEND="U0AGENT") as bot:
            await bot.command("")
            (opened,) = await bot.slack.wait_for("views.open")
            view = opened.params["view"]
            good = modal_values("+852 5123 4567", "hello")
            intruder = (await bot.submit_view(view, good, user="U0INTRUDER", view_id="V1")).json()
            assert intruder["response_action"] == "errors"
            assert intruder["errors"][BlockId.SEND_TO].startswith("Nothing was sent. ")
            bot.runtime.access.rules[Capability.SEND] = ("U0SOMEONE",)  # removed while the form was open
            removed = (await bot.submit_view(view, good, view_id="V2")).json()
            assert removed["response_action"] == "errors"
            assert bot.runtime.worker.submitted == []
            assert await bot.count("jobs") == 0

    run(go())
    assert provider.received == []


def test_an_unexpected_error_in_a_command_answers_with_a_reference_that_is_in_the_log(
    provider, tmp_path, caplog
):
    async def go():
        async with Bot(provider, tmp_path) as bot:

            async def broken(*args, **kwargs):
                raise RuntimeError("the jobs table is on fire")

            bot.runtime.service.send_single = broken  # type: ignore[method-assign]  (before the ack)
            return await bot.command("+852 5123 4567 hello")

    resp = run(go())
    assert resp.status_code == 200
    text = resp.json()["text"]
    assert "Something went wrong" in text and "Traceback" not in text and "fire" not in text
    ref = text.split("reference ", 1)[1].split(")", 1)[0]
    assert any(f"ref={ref}" in r.getMessage() for r in caplog.records)


def test_a_database_out_of_reach_is_named_in_the_answer_with_its_reference(provider, tmp_path, caplog):
    """A command that cannot reach the database (a PostgreSQL restart) is answered at once, saying so
    and to try again, with a reference that is in the log: not "something went wrong". A connection
    refused elsewhere (Slack's, say) is not taken for the database's."""

    async def go():
        async with Bot(provider, tmp_path) as bot:

            async def refused(*args, **kwargs):
                raise DatabaseUnreachable("ConnectionRefusedError: Connect call failed ('127.0.0.1', 5432)")

            async def elsewhere(*args, **kwargs):
                raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 443)")

            bot.runtime.service.send_single = refused  # type: ignore[method-assign]  (before the ack)
            resp = await bot.command("+852 5123 4567 hello")
            jobs = await bot.count("jobs")
            bot.runtime.service.send_single = elsewhere  # type: ignore[method-assign]
            other = await bot.command("+852 5123 4567 hello")
            return resp, jobs, other

    resp, jobs, other = run(go())
    assert other.json()["text"].startswith("⚠️ Something went wrong on our side (reference ")
    assert resp.status_code == 200 and jobs == 0
    text = resp.json()["text"]
    assert (
        text.startswith("⚠️ The bot's database cannot be reached just now (reference ") and "5432" not in text
    )
    assert "Try again in a minute" in text
    ref = text.split("reference ", 1)[1].split(")", 1)[0]
    (logged,) = [r for r in caplog.records if f"ref={ref}" in r.getMessage()]
    assert logged.levelname == "WARNING" and logged.exc_info is None


def test_a_send_that_waits_for_the_database_is_told_to_its_sender_and_so_is_its_end(provider, tmp_path):
    """The database goes away as a send is about to leave: past the worker's notice time the sender
    is told, without the database, that the send waits and goes on by itself; then that it goes on;
    then the result comes as usual, in the thread."""

    async def go():
        async with Bot(provider, tmp_path) as bot:
            bot.runtime.worker.notice_after = 0.0  # the bot's own is NOTICE_AFTER seconds
            database_away_once(bot.runtime.store)
            ack = await bot.command("+852 5123 4567 hello")
            _, summary = await bot.job_done(1)
            hooks = await bot.slack.wait_for_webhooks(2)
            posts = [c.params for c in bot.slack.called("chat.postMessage")]
            return ack.text, summary, [body["text"] for _, body in hooks], posts

    ack, summary, said, posts = run(go())
    assert ack.startswith("⏳ Sending to ") and summary.accepted == 1 and len(provider.sent()) == 1
    waiting, going_on = said
    assert waiting.startswith("⏸️ The bot's database cannot be reached, so your SMS is waiting.")
    assert "goes on by itself" in waiting
    assert going_on == "▶️ The bot's database is back, and your SMS goes on. The result comes as usual."
    assert any("accepted" in str(p.get("text")) for p in posts)


def test_a_command_held_up_past_slacks_deadline_is_answered_and_its_own_answer_follows(
    provider, tmp_path, monkeypatch, caplog
):
    """A database that hangs holds a send's write before its ack: Slack (which gives up at 3 s) is
    answered at the deadline, saying so with a reference that is in the log; once the write goes
    through, the command's own answer reaches the person through its response_url, and the send goes."""
    monkeypatch.setattr(acks, "ACK_DEADLINE", 0.3)

    async def go():
        async with Bot(provider, tmp_path) as bot:
            go_on = asyncio.Event()
            send_single = bot.runtime.service.send_single

            async def held(*args, **kwargs):
                await go_on.wait()
                return await send_single(*args, **kwargs)

            bot.runtime.service.send_single = held  # type: ignore[method-assign]
            resp = await bot.command("+852 5123 4567 hello")
            jobs_then = await bot.count("jobs")
            go_on.set()
            _, summary = await bot.job_done(1)
            hooks = await bot.slack.wait_for_webhooks(1)
            return resp, jobs_then, summary, hooks

    resp, jobs_then, summary, hooks = run(go())
    assert resp.status_code == 200 and jobs_then == 0
    text = resp.json()["text"]
    assert text.startswith("⏳ The bot is taking longer than Slack waits (reference ")
    ref = text.split("reference ", 1)[1].split(")", 1)[0]
    assert any(f"ref={ref}" in r.getMessage() for r in caplog.records)
    ((_, later),) = hooks
    assert later["text"].startswith("⏳ Sending to `+852 5123 ****`")
    assert summary.accepted == 1


def test_what_a_late_ack_said_is_put_in_words():
    """A listener past its deadline acks after all: its text, a form's errors, or the view it would show,
    in words for the person."""
    view = bulk_views.info_view("", "Nothing sent", "❌ Nothing was sent. This draft expired.")
    assert _said({"text": "⏳ Sending to `+852 5123 ****`"}) == "⏳ Sending to `+852 5123 ****`"
    errors = {BlockId.SEND_TO: "Not a number: “hello”.", BlockId.SEND_MESSAGE: "The message is empty."}
    assert _said({"response_action": "errors", "errors": errors}) == (
        "The form was not taken: Not a number: “hello”. The message is empty."
    )
    assert _said({"response_action": "update", "view": view}) == "❌ Nothing was sent. This draft expired."
    assert _said({"response_action": "clear"}) == ""


def test_an_unexpected_error_in_a_submission_is_not_a_500_and_reaches_the_person(provider, tmp_path, caplog):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            await bot.command("")
            (opened,) = await bot.slack.wait_for("views.open")

            async def broken(*args, **kwargs):
                raise RuntimeError("no more job ids")

            bot.runtime.service.send_single = broken  # type: ignore[method-assign]
            resp = await bot.submit_view(opened.params["view"], modal_values("+852 5123 4567", "hi"))
            hooks = await bot.slack.wait_for_webhooks(1)
            return resp, hooks[-1][1]

    resp, told = run(go())
    assert resp.status_code == 200
    ref = told["text"].split("reference ", 1)[1].split(")", 1)[0]
    assert any(f"ref={ref}" in r.getMessage() for r in caplog.records)
    assert provider.received == []
