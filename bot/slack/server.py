"""HTTP mode: Slack's requests at /slack/events and a health check at /healthz, on aiohttp's server."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.core.worker import Busy

log = logging.getLogger("bot.http")


def web_app(
    bolt: AsyncApp | None, health: Callable[[], Awaitable[dict[str, Any]]], busy: Busy | None = None
) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)

    async def events(request: web.Request) -> web.Response:
        started = time.monotonic()
        if busy is not None:
            busy.enter()
        try:
            response = await bolt.async_dispatch(await to_bolt_request(request))  # type: ignore[union-attr]
        finally:
            if busy is not None:
                busy.leave()
        log.info(
            "http %s %s status=%d ms=%.1f",
            request.method,
            request.path,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        return await to_aiohttp_response(response)

    async def healthz(request: web.Request) -> web.Response:
        status = await health()
        return web.json_response(status, status=200 if status.get("ok") else 503)

    if bolt is not None:
        app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", healthz)
    return app
