"""Listeners answered at their ack (bot/slack/acks.py), through Bolt's own dispatch, no HTTP server."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlencode

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.slack.acks import Listeners

from .conftest import run


def command(text: str) -> AsyncBoltRequest:
    body = urlencode(
        {
            "command": "/t",
            "text": text,
            "user_id": "U1",
            "team_id": "T1",
            "channel_id": "C1",
            "trigger_id": "x",
        }
    )
    return AsyncBoltRequest(body=body, headers={"content-type": ["application/x-www-form-urlencoded"]})


def app_with(listener, errors: list, reported: asyncio.Event | None = None, late=None) -> AsyncApp:
    async def authorize(**_):  # no call to Slack
        return AuthorizeResult(enterprise_id=None, team_id="T1", bot_token="xoxb-test", bot_id="B1")

    app = AsyncApp(
        name="acks",
        signing_secret="unused",
        process_before_response=True,
        request_verification_enabled=False,
        authorize=authorize,
    )

    async def on_error(error, body, response, client):
        errors.append((error, body.get("text"), response))
        if reported is not None:
            reported.set()

    app.error(on_error)  # as the bot's app does: one boundary for errors before and after the ack
    Listeners(app, on_error, late, deadline=0.2).command("/t")(listener)
    return app


class RecordedLate:
    """A `Late` that records what it was asked."""

    def __init__(self) -> None:
        self.deadlines: list[tuple[str, str]] = []
        self.heard: list[dict] = []
        self.told = asyncio.Event()

    async def deadline(self, body, client, listener):
        self.deadlines.append((body.get("text"), listener))
        return {"text": "still working"}

    async def said(self, body, client, ack):
        self.heard.append(ack)
        self.told.set()


def test_a_listener_that_misses_the_deadline_is_answered_for_and_what_it_says_later_is_passed_on():
    """Slack's 3 s: a listener held up before its ack (a database that hangs) is answered for at the
    deadline; it goes on, its own ack is handed to `Late.said`, and an error after it to the boundary."""

    async def go():
        errors: list = []
        reported = asyncio.Event()
        go_on = asyncio.Event()
        late = RecordedLate()

        async def listener(ack, command):
            await go_on.wait()
            await ack(f"got {command['text']}")
            raise RuntimeError("after the late ack")

        app = app_with(listener, errors, reported, late)
        response = await asyncio.wait_for(app.async_dispatch(command("slow")), 2)
        before = list(late.heard)
        go_on.set()
        await asyncio.wait_for(late.told.wait(), 2)
        await asyncio.wait_for(reported.wait(), 2)
        return response, before, late, errors

    response, before, late, errors = run(go())
    assert response.status == 200 and "still working" in response.body
    assert late.deadlines == [("slow", "listener")] and before == []
    assert late.heard == [{"text": "got slow"}]
    ((error, text, answer),) = errors
    assert str(error) == "after the late ack" and text == "slow" and answer is None


def test_slack_is_answered_at_the_ack_while_the_listener_goes_on():
    async def go():
        later = asyncio.Event()
        finished = asyncio.Event()
        errors: list = []

        async def listener(ack, command):
            await ack(text=f"got {command['text']}")
            await later.wait()  # work after the ack: Slack must not wait for it
            finished.set()

        app = app_with(listener, errors)
        response = await asyncio.wait_for(app.async_dispatch(command("hello")), 2)
        answered_first = not finished.is_set()
        later.set()
        await asyncio.wait_for(finished.wait(), 2)
        return response, answered_first, errors

    response, answered_first, errors = run(go())
    assert response.status == 200 and "got hello" in response.body
    assert answered_first and errors == []


def test_an_error_after_the_ack_reaches_the_error_boundary_and_one_before_it_answers_slack():
    async def go():
        errors: list = []
        reported = asyncio.Event()

        async def listener(ack, command):
            if command["text"] == "early":
                raise RuntimeError("before the ack")
            await ack()
            await asyncio.sleep(0)  # the answer goes to Slack first
            raise RuntimeError("after the ack")

        app = app_with(listener, errors, reported)
        late = await app.async_dispatch(command("late"))
        await asyncio.wait_for(reported.wait(), 2)
        early = await app.async_dispatch(command("early"))
        return late, early, errors

    late, early, errors = run(go())
    assert late.status == 200
    (after, text, response), (before, text2, response2) = errors
    assert str(after) == "after the ack" and text == "late" and response is None  # Slack had its answer
    assert str(before) == "before the ack" and text2 == "early" and response2 is not None
    # Bolt answers an error before the ack through the handler's response (ours sets 200; this one none)
    assert early.status == 500


def test_a_dropped_request_leaves_its_listener_running_and_its_error_reported():
    async def go():
        errors: list = []
        reported = asyncio.Event()
        started, go_on = asyncio.Event(), asyncio.Event()

        async def listener(ack, command):
            started.set()
            await go_on.wait()
            await ack()
            raise RuntimeError("after a dropped request")

        app = app_with(listener, errors, reported)
        request = asyncio.get_running_loop().create_task(app.async_dispatch(command("dropped")))
        await asyncio.wait_for(started.wait(), 2)
        request.cancel()  # the HTTP request went away before the ack
        await asyncio.gather(request, return_exceptions=True)
        go_on.set()
        await asyncio.wait_for(reported.wait(), 2)
        return errors

    ((error, text, response),) = run(go())
    assert str(error) == "after a dropped request" and text == "dropped" and response is None


def test_a_socket_mode_envelope_counts_as_a_request_being_answered_until_its_ack_is_sent():
    """As the HTTP server does for each request: the worker waits for `Busy` before claiming a job."""
    from slack_sdk.socket_mode.request import SocketModeRequest

    from bot.core.worker import Busy
    from bot.slack.socket_mode import SocketModeHandler

    async def go():
        busy = Busy()
        seen: list[int] = []
        sent: list[tuple[int, str]] = []

        async def listener(ack, command):
            seen.append(busy.active)
            await ack(text=f"got {command['text']}")

        class Connection:  # what the handler sends the ack through
            logger = logging.getLogger("test")

            async def send_socket_mode_response(self, response):
                sent.append((busy.active, response.envelope_id))

        handler = SocketModeHandler(app_with(listener, []), "xapp-1-A1-test", busy)
        try:
            payload = {"command": "/t", "text": "hi", "user_id": "U1", "team_id": "T1", "channel_id": "C1"}
            await handler.handle(
                Connection(), SocketModeRequest(type="slash_commands", envelope_id="e1", payload=payload)
            )
        finally:
            await handler.client.close()
        return seen, sent, busy.active

    seen, sent, after = run(go())
    assert seen == [1] and sent == [(1, "e1")] and after == 0
