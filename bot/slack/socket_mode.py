"""Socket Mode: Bolt's handler, each envelope counted as a request being answered.

Imported only when SLACK_APP_TOKEN is set: Bolt's Socket Mode adapters are not needed in HTTP mode."""

from __future__ import annotations

from typing import Any

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

from bot.core.worker import Busy


class SocketModeHandler(AsyncSocketModeHandler):
    """Each envelope is in `busy` until its ack is sent, as the HTTP server counts each request: the
    worker lets it go first before claiming or starting a job."""

    def __init__(self, app: AsyncApp, app_token: str, busy: Busy, **kwargs: Any) -> None:
        super().__init__(app, app_token, **kwargs)
        self.busy = busy

    async def handle(self, client: Any, req: Any) -> None:
        self.busy.enter()
        try:
            await super().handle(client, req)
        finally:
            self.busy.leave()
