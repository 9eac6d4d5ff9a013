"""The Bolt app: listeners registered, dependencies injected, errors logged (never shown as traces)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.jitter import Jitter
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.db import reason, unreachable
from bot.core.store import answering

from .acks import Listeners
from .deps import Deps
from .listeners import register_listeners
from .server import reference
from .tell import tell_person

log = logging.getLogger("bot.slack")


class _SmallJitter(Jitter):
    """Up to a quarter more than the backoff's interval. The library's default adds up to a whole second
    to every retry: that spreads many clients' retries apart, but here one bot waits for its own view,
    which Slack has a few milliseconds later."""

    def recalculate(self, duration: float) -> float:
        return duration * (1 + random.random() / 4)


class PushedViewNotThereYet(AsyncRetryHandler):
    """`views.update(external_id=…)` of a view the bot pushed in its ack can reach Slack before the ack
    itself (measured: 2-8 ms early with a short list), and Slack answers `not_found`. Retried with
    backoff (the library's retry machinery): after 0.1, 0.2, 0.4 and 0.8 s, each up to a quarter more,
    1.5-1.9 s in all. Every `views.update` is made after its ack, so a view that is really gone only
    delays a background task, which then tells the person otherwise."""

    def __init__(self) -> None:
        super().__init__(
            max_retry_count=4, interval_calculator=BackoffRetryIntervalCalculator(0.1, jitter=_SmallJitter())
        )

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or not request.url.endswith("/views.update"):
            return False  # (a request's JSON body is not shown to retry handlers: any views.update)
        body = response.body if isinstance(response.body, dict) else {}
        return body.get("error") == "not_found"


def web_client(token: str, base_url: str, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The bot's Web API client. Give it a `session` to keep connections to Slack open between calls:
    without one, slack_sdk opens a new session, and a new connection (TLS included), for every call."""
    client = AsyncWebClient(token=token, base_url=base_url, session=session)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=3))
    client.retry_handlers.append(PushedViewNotThereYet())
    return client


class _DropTokenUnusedWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment and then warns that the client's token wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "will be unused" not in message and "will be ignored" not in message


async def unexpected(
    error: Exception, body: dict[str, Any], response: BoltResponse | None, client: AsyncWebClient
) -> BoltResponse | None:
    """The one error boundary of the listeners: the log gets the error with a short reference; the person
    gets the reference and that nothing more was done, never a stack trace; Slack gets HTTP 200, not 500.
    A slash command not yet acknowledged says it in its answer; anything else through tell.py."""
    ref = reference()
    if unreachable(error):  # not a bug: say what it is, and that trying again later is the remedy
        log.warning("listener failed ref=%s: the database cannot be reached (%s)", ref, reason(error))
        text = (  # a commit whose answer was lost may have taken effect: "most likely", not "nothing"
            f"⚠️ The bot's database cannot be reached just now (reference {ref}); this was most likely "
            "not taken. Try again in a minute (`/sms history` shows what went out); if it goes on, give "
            "this reference to whoever runs the bot."
        )
    else:
        log.error("listener failed ref=%s: %s: %s", ref, type(error).__name__, error, exc_info=error)
        text = (
            f"⚠️ Something went wrong on our side (reference {ref}); nothing more was done. Try again, or "
            "give this reference to whoever runs the bot."
        )
    if response is not None and body.get("command"):  # not yet acknowledged: this is the answer
        return BoltResponse(
            status=200,
            body=json.dumps({"response_type": "ephemeral", "text": text}),
            headers={"content-type": "application/json"},
        )
    await _tell_requester(client, body, text)
    return BoltResponse(status=200, body="") if response is not None else None


class LateAnswers:
    """What the person is told when a listener misses Slack's deadline (`acks.ACK_DEADLINE`): the bot is
    slow, most likely its database; the request goes on, and whatever it answers later is passed on."""

    def __init__(self) -> None:
        self._telling: set[asyncio.Task[Any]] = set()

    async def deadline(self, body: dict[str, Any], client: AsyncWebClient, listener: str) -> dict[str, Any]:
        ref = reference()
        log.warning("%s had not acked in time: Slack was answered for it ref=%s", listener, ref)
        text = (
            f"⏳ The bot is taking longer than Slack waits (reference {ref}); its database may be slow. "
            "Your request goes on: what it comes to will be posted here or in the channel's thread. "
            "Check `/sms history` before you send it again."
        )
        if body.get("command"):  # a command's answer can carry it
            return {"response_type": "ephemeral", "text": text}
        self._tell(body, client, text)  # a form closes, a click gets an empty answer: the message goes apart
        return {}

    async def said(self, body: dict[str, Any], client: AsyncWebClient, ack: dict[str, Any]) -> None:
        text = _said(ack)
        if text:
            self._tell(body, client, text)

    def _tell(self, body: dict[str, Any], client: AsyncWebClient, text: str) -> None:
        task = asyncio.get_running_loop().create_task(_tell_requester(client, body, text))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)


async def _tell_requester(client: AsyncWebClient, body: dict[str, Any], text: str) -> None:
    """`text` to the person whose request `body` is: its response_url, else a direct message."""
    user_id = body.get("user_id") or (body.get("user") or {}).get("id")
    if user_id:
        await tell_person(client, user_id=user_id, response_url=_response_url(body), text=text)


def _said(ack: dict[str, Any]) -> str:
    """The words of an ack's arguments: its text, a form's errors, or the text of the view it shows."""
    if ack.get("text"):
        return str(ack["text"])
    if ack.get("errors"):
        return "The form was not taken: " + " ".join(str(e) for e in ack["errors"].values())
    view = ack.get("view")
    view = view.to_dict() if hasattr(view, "to_dict") else view
    if isinstance(view, dict):
        return "\n".join(
            str((b.get("text") or {}).get("text") or "") for b in view.get("blocks") or [] if b.get("text")
        )
    return ""


def _response_url(body: dict[str, Any]) -> str | None:
    return (
        body.get("response_url")
        or next((r.get("response_url") for r in body.get("response_urls") or []), None)
        or _metadata_response_url(body)
    )


def _metadata_response_url(body: dict[str, Any]) -> str | None:
    """Our forms carry the response_url of the command that opened them in their private metadata."""
    try:
        value = json.loads((body.get("view") or {}).get("private_metadata") or "{}").get("response_url")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


async def authorize_once(client: AsyncWebClient) -> AuthorizeResult:
    """Check the bot token once at start-up (Bolt would call auth.test on every request until cached)."""
    try:
        resp = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        raise StartupError(f"SLACK_BOT_TOKEN was rejected by Slack ({error}).") from None
    except Exception as exc:
        raise StartupError(
            f"Cannot reach the Slack Web API at SLACK_API_URL ({type(exc).__name__}: {exc})."
        ) from None
    return AuthorizeResult.from_auth_test_response(bot_token=client.token, auth_test_response=resp)


def build_app(deps: Deps, client: AsyncWebClient, authorization: AuthorizeResult) -> AsyncApp:
    secret = deps.settings.slack_signing_secret.get_secret_value() or "socket-mode-does-not-sign"
    bolt_logger = logging.getLogger("slack_bolt.AsyncApp")
    bolt_logger.addFilter(_DropTokenUnusedWarning())

    async def authorize(**_: Any) -> AuthorizeResult:
        return authorization

    app = AsyncApp(
        # Named: without a name Bolt calls inspect.stack() to name the app after its caller's file, which
        # reads the source of every frame on the stack (≈ 0.2 s of start-up).
        name="sms-ops-bot",
        client=client,
        signing_secret=secret,
        # Bolt answers when the listener returns; each listener returns at its ack (bot/slack/acks.py).
        process_before_response=True,
        # HTTP mode: bot/slack/server.py checks Slack's signature over the raw bytes before anything is
        # parsed (and refuses with 401); Socket Mode is not signed. Checking again here would only cost.
        request_verification_enabled=False,
        logger=bolt_logger,
        authorize=authorize,
    )

    async def inject(context: Any, next: Any) -> None:
        context["deps"] = deps
        # Every request, HTTP or Socket Mode, runs in a task of its own: its store calls, and those of the
        # listener (which Bolt runs after this chain, in a task started from this one), go first on SQLite.
        answering()
        await next()

    app.use(inject)

    @app.error
    async def on_error(
        error: Exception, body: dict[str, Any], response: BoltResponse | None, client: AsyncWebClient
    ) -> BoltResponse | None:
        return await unexpected(error, body, response, client)

    register_listeners(Listeners(app, unexpected, LateAnswers()))
    return app
