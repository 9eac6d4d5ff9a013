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
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.kwargs_injection.async_args import AsyncArgs
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("bot.slack.acks")

Listener = Callable[..., Awaitable[Any]]
ErrorBoundary = Callable[
    [Exception, dict[str, Any], BoltResponse | None, AsyncWebClient], Awaitable[BoltResponse | None]
]


def answer_on_ack(listener: Listener, on_error: ErrorBoundary) -> Listener:
    """`listener`, answered as soon as it acks (see the module's text)."""
    names = inspect.getfullargspec(listener).args
    running: set[asyncio.Task[Any]] = set()

    async def run(args: AsyncArgs) -> None:  # Bolt gives everything it has to a parameter named `args`
        acked = asyncio.Event()
        bolt_ack = args.ack

        async def ack(*a: Any, **k: Any) -> Any:
            try:
                return await bolt_ack(*a, **k)
            finally:
                acked.set()

        values = {name: ack if name == "ack" else getattr(args, name) for name in names}
        task = asyncio.get_running_loop().create_task(listener(**values))
        waiting = asyncio.get_running_loop().create_task(acked.wait())
        await asyncio.wait((task, waiting), return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done() and not acked.is_set():
            task.result()  # it ended without an ack: an error goes to Bolt's error handler, which answers
            return
        if task.done():
            await _after_ack(task, args, on_error)
            return
        running.add(task)  # kept until it ends (the loop holds tasks weakly)
        task.add_done_callback(
            lambda t: (running.discard(t), asyncio.ensure_future(_after_ack(t, args, on_error)))
        )

    run.__name__ = run.__qualname__ = getattr(listener, "__name__", "listener")
    run.answers_on_ack = True  # type: ignore[attr-defined]
    return run


async def _after_ack(task: asyncio.Task[Any], args: AsyncArgs, on_error: ErrorBoundary) -> None:
    if task.cancelled() or task.exception() is None:
        return
    error = task.exception()
    assert isinstance(error, Exception)
    try:
        await on_error(error, args.body, None, args.client)  # None: Slack has its answer already
    except Exception:
        log.exception("reporting a listener's error failed")


class Listeners:
    """What listener modules register with: Bolt's decorators, each listener through `answer_on_ack`."""

    def __init__(self, app: AsyncApp, on_error: ErrorBoundary) -> None:
        self.app = app
        self.on_error = on_error

    def _through(self, register: Callable[[Listener], Any]) -> Callable[[Listener], Listener]:
        @functools.wraps(register)
        def decorate(listener: Listener) -> Listener:
            register(answer_on_ack(listener, self.on_error))
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
