"""Answer Slack the moment a listener acks.

Bolt (with `process_before_response=False`) starts a listener in a task and then looks every 10 ms for
its ack: every request waits up to 10 ms after its ack, and a burst of 200 requests wakes 200 pollers
a hundred times a second. With `process_before_response=True` Bolt instead awaits the listener and
answers when it returns, so each listener is registered through `answer_on_ack`: it runs the listener
in a task of its own and returns as soon as the listener has acked (or has ended). What the listener
does after its ack goes on in that task; an error then is reported by the error boundary like any other
(logged with a reference the person is told), and an error before the ack is raised to Bolt, whose
error handler answers Slack.

Listener modules register through `Listeners`, so no listener can be registered without it.

**A deadline.** Slack gives up on an answer after 3 seconds and shows the person an error. A listener
writes to the database before it acks (a send is recorded before Slack is told it was taken), and a
database that hangs (a lock, a network cut) would hold that answer for as long. So a listener that has
not acked within ACK_DEADLINE is answered for (`Late.deadline`: a command gets a message saying so) and
goes on in its task; if it acks later, what it says is told to the person (`Late.said`), and an error
goes to the error boundary as after any ack.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from slack_bolt.async_app import AsyncApp
from slack_bolt.kwargs_injection.async_args import AsyncArgs
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("bot.slack.acks")

Listener = Callable[..., Awaitable[Any]]
ErrorBoundary = Callable[
    [Exception, dict[str, Any], BoltResponse | None, AsyncWebClient], Awaitable[BoltResponse | None]
]
# Seconds a listener has to ack before it is answered for: Slack waits 3, and the answer must travel.
ACK_DEADLINE = 2.5


class Late(Protocol):
    """What the person is told when a listener misses ACK_DEADLINE (bot/slack/app.py)."""

    async def deadline(self, body: dict[str, Any], client: AsyncWebClient, listener: str) -> dict[str, Any]:
        """The ack's arguments in `listener`'s place (a command's message; `{}` for an empty ack),
        having told the person otherwise where the ack cannot carry a message."""

    async def said(self, body: dict[str, Any], client: AsyncWebClient, ack: dict[str, Any]) -> None:
        """The listener acked after all, with `ack`'s arguments: tell the person what it said."""


def answer_on_ack(
    listener: Listener, on_error: ErrorBoundary, late: Late | None = None, deadline: float | None = None
) -> Listener:
    """`listener`, answered as soon as it acks, or for it at `deadline` seconds (ACK_DEADLINE unless
    given) when `late` says how (see the module's text)."""
    names = inspect.getfullargspec(listener).args
    running: set[asyncio.Task[Any]] = set()

    async def run(args: AsyncArgs) -> None:  # Bolt gives everything it has to a parameter named `args`
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[bool] = loop.create_future()  # True: acked; False: ended without an ack
        bolt_ack = args.ack
        overdue = False  # Slack was answered for the listener: its own ack comes too late for Slack

        async def ack(*a: Any, **k: Any) -> Any:
            if overdue:
                if late is not None and (a or k):
                    await late.said(args.body, args.client, {"text": a[0], **k} if a else k)
                return None
            try:
                return await bolt_ack(*a, **k)
            finally:
                if not answered.done():
                    answered.set_result(True)

        def ended(_task: asyncio.Task[Any]) -> None:
            if not answered.done():
                answered.set_result(False)

        values = {name: ack if name == "ack" else getattr(args, name) for name in names}
        task = loop.create_task(listener(**values))
        task.add_done_callback(ended)

        def see_to_its_end() -> None:  # an error after this point goes to the boundary
            running.add(task)  # the loop holds tasks weakly: kept until they end
            task.add_done_callback(lambda t: _ended(t, args, on_error, running))

        try:
            # One future, woken once, rather than a second task and asyncio.wait: fewer turns of the
            # loop between the ack and Slack's answer, in which other work could run first.
            async with asyncio.timeout(None if late is None else deadline or ACK_DEADLINE):
                acked = await answered
        except asyncio.CancelledError:  # the request itself was dropped: the listener goes on all the same
            see_to_its_end()
            raise
        except TimeoutError:  # no ack in time: Slack is answered now, and the listener goes on
            see_to_its_end()
            if answered.done() and not answered.cancelled() and answered.result():
                return  # it acked as the deadline came: its own answer stands
            overdue = True
            assert late is not None
            await bolt_ack(**await late.deadline(args.body, args.client, run.__name__))
            return
        if not acked:  # it ended without an ack: an error goes to Bolt's error handler
            task.result()
            return
        see_to_its_end()  # Slack gets its answer now

    run.__name__ = run.__qualname__ = getattr(listener, "__name__", "listener")  # Bolt's logs name it
    return run


def _ended(task: asyncio.Task[Any], args: AsyncArgs, on_error: ErrorBoundary, running: set[Any]) -> None:
    running.discard(task)
    if task.cancelled() or task.exception() is None:
        return
    report = asyncio.get_running_loop().create_task(_report(task.exception(), args, on_error))
    running.add(report)
    report.add_done_callback(running.discard)


async def _report(error: BaseException | None, args: AsyncArgs, on_error: ErrorBoundary) -> None:
    if not isinstance(error, Exception):
        return
    try:
        await on_error(error, args.body, None, args.client)  # None: Slack has its answer already
    except Exception:
        log.exception("reporting a listener's error failed")


class Listeners:
    """What listener modules register with: Bolt's decorators, each listener through `answer_on_ack`."""

    def __init__(
        self, app: AsyncApp, on_error: ErrorBoundary, late: Late | None = None, deadline: float | None = None
    ) -> None:
        self.app = app
        self.on_error = on_error
        self.late = late
        self.deadline = deadline

    def _through(self, register: Callable[[Listener], Any]) -> Callable[[Listener], Listener]:
        def decorate(listener: Listener) -> Listener:
            register(answer_on_ack(listener, self.on_error, self.late, self.deadline))
            return listener

        return decorate

    def command(self, *a: Any, **k: Any) -> Callable[[Listener], Listener]:
        return self._through(self.app.command(*a, **k))

    def action(self, *a: Any, **k: Any) -> Callable[[Listener], Listener]:
        return self._through(self.app.action(*a, **k))

    def view(self, *a: Any, **k: Any) -> Callable[[Listener], Listener]:
        return self._through(self.app.view(*a, **k))

    def view_closed(self, *a: Any, **k: Any) -> Callable[[Listener], Listener]:
        return self._through(self.app.view_closed(*a, **k))
