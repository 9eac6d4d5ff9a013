"""A fake Slack on loopback: the Web API (records every call, answers like Slack, injects errors) and a
Socket Mode peer (`apps.connections.open`, a WebSocket per connection, `hello`, envelopes and their acks,
`disconnect`), as Slack's own servers speak them."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

_CODE = re.compile(r"`[^`\n]*`")


def bare_masks(payload: Any, *, message: bool = True) -> list[str]:
    """The texts in `payload` that Slack reads as mrkdwn and that show a masked number's asterisks
    (`+852 5123 ****`) outside a code span, where they could pair up as bold and lose characters.

    mrkdwn is a text object of type `mrkdwn` anywhere in it, and a message's own `text` when the message
    has no blocks (with blocks, that text is the notification's fallback: not rendered)."""
    found: list[str] = []
    if isinstance(payload, dict):
        text = payload.get("text")
        mrkdwn = payload.get("type") == "mrkdwn" or (
            message and "blocks" not in payload and payload.get("mrkdwn", True) is not False
        )
        if mrkdwn and isinstance(text, str) and "**" in _CODE.sub("", text):
            found.append(text)
        for value in payload.values():
            if isinstance(value, dict | list):
                found += bare_masks(value, message=False)
    elif isinstance(payload, list):
        for item in payload:
            found += bare_masks(item, message=False)
    return found


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.monotonic)  # when it arrived (benchmarks: calls per minute)


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.webhooks: list[tuple[str, dict[str, Any]]] = []
        self.bare_masks: list[str] = []  # mrkdwn texts with a masked number outside code (see bare_masks)
        self.errors: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.expired_webhooks: set[str] = set()  # response_url names that answer 404 expired_url
        self.group_members: dict[str, list[str]] = {}
        self.channel_members: dict[str, list[str]] = {}
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}  # file_id → bytes uploaded by the bot (files_upload_v2)
        self._ts = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.sockets: list[web.WebSocketResponse] = []  # open Socket Mode connections, oldest first
        self._retiring: set[web.WebSocketResponse] = set()  # told to go, or being closed: no new envelopes
        self.socket_opens = 0
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._envelopes = itertools.count(1)
        self._next_socket = itertools.count()

    # ------------------------------------------------------------------ control
    def fail(
        self,
        method: str,
        error: str,
        *,
        times: int = 1,
        status: int = 200,
        retry_after: int | None = None,
        channel: str | None = None,
    ) -> None:
        for _ in range(times):
            self.errors[method].append(
                {"error": error, "status": status, "retry_after": retry_after, "channel": channel}
            )

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1, limit: float = 10) -> list[Call]:
        async def ready() -> list[Call]:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.called(method)) >= count)
            return self.called(method)

        return await asyncio.wait_for(ready(), limit)

    async def wait_for_webhooks(self, count: int = 1, limit: float = 10) -> list[tuple[str, dict[str, Any]]]:
        async def ready() -> list[tuple[str, dict[str, Any]]]:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.webhooks) >= count)
            return self.webhooks

        return await asyncio.wait_for(ready(), limit)

    def add_file(self, name: str, content: bytes) -> dict[str, Any]:
        """Upload a file; returns the `files[]` entry a file_input's state carries."""
        self.files[name] = content
        url = f"{self.url}/files/{name}"
        return {
            "id": f"F{len(self.files):04d}",
            "name": name,
            "filetype": "csv",
            "size": len(content),
            "url_private": url,
            "url_private_download": url,
        }

    # ------------------------------------------------------------------ Socket Mode
    @property
    def live(self) -> list[web.WebSocketResponse]:
        """The connections Slack would deliver to: open, and not asked to go."""
        return [ws for ws in self.sockets if ws not in self._retiring and not ws.closed]

    async def wait_sockets(self, count: int, limit: float = 10) -> None:
        """Until `count` Socket Mode connections are live."""

        async def ready() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.live) >= count)

        await asyncio.wait_for(ready(), limit)

    async def envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        envelope_id: str | None = None,
        socket: int | None = None,
        limit: float = 10,
    ) -> dict[str, Any] | None:
        """Deliver one envelope (`slash_commands`, `interactive`, `events_api`) on one connection (by
        default the next in turn, as Slack spreads envelopes over an app's connections) and return the
        payload of the app's ack (None for a bare ack). The same `envelope_id` twice is a redelivery."""
        await self.wait_sockets(1)
        envelope_id = envelope_id or f"env-{next(self._envelopes)}"
        live = self.live
        ws = live[(next(self._next_socket) if socket is None else socket) % len(live)]
        ack = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = ack
        await ws.send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        try:
            return await asyncio.wait_for(ack, limit)
        finally:
            self._acks.pop(envelope_id, None)

    async def disconnect_sockets(self, reason: str = "refresh_requested") -> None:
        """Slack's server-initiated `disconnect` on every connection (the app should open a new one)."""
        for ws in self.live:
            self._retiring.add(ws)  # as Slack does: nothing more is delivered on a connection told to go
            await ws.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})

    async def drop_sockets(self) -> None:
        """Close every connection without warning, as a network failure would."""
        for ws in self.live:
            self._retiring.add(ws)
            await ws.close()

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.sockets) + 1,
                "connection_info": {"app_id": "A0001"},
            }
        )
        async with self._changed:
            self.sockets.append(ws)
            self._changed.notify_all()
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                ack = self._acks.get(data.get("envelope_id", ""))
                if ack is not None and not ack.done():
                    ack.set_result(data.get("payload"))
        finally:
            async with self._changed:
                self.sockets.remove(ws)
                self._retiring.discard(ws)
                self._changed.notify_all()
        return ws

    def response_url(self, name: str = "1") -> str:
        return f"{self.url}/webhook/{name}"

    # ------------------------------------------------------------------ server
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/webhook/{name}", self._webhook)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    async def _record(self, call: Any) -> None:
        async with self._changed:
            if isinstance(call, Call):
                self.calls.append(call)
                self.bare_masks += bare_masks(call.params)
            else:
                self.webhooks.append(call)
                self.bare_masks += bare_masks(call[1])
            self._changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.read()
        if request.content_type == "application/json":
            params = json.loads(raw or b"{}")
        else:
            params = dict(parse_qsl(raw.decode()))
        params.update(request.query)
        for key in ("blocks", "view"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") or params.get("token")
        queue = self.errors.get(method)
        if queue:
            injected = queue[0]
            if injected["channel"] in (None, params.get("channel")):
                queue.popleft()
                await self._record(Call(method, params, token))
                headers = (
                    {"Retry-After": str(injected["retry_after"])}
                    if injected["retry_after"] is not None
                    else {}
                )
                return web.json_response(
                    {"ok": False, "error": injected["error"]}, status=injected["status"], headers=headers
                )
        await self._record(Call(method, params, token))
        if method == "apps.connections.open":  # an app-level token opens a Socket Mode connection
            if not token or not token.startswith("xapp-"):
                return web.json_response({"ok": False, "error": "invalid_auth"})
            self.socket_opens += 1
            ws_url = self.url.replace("http://", "ws://") + f"/link?ticket={self.socket_opens}"
            return web.json_response({"ok": True, "url": ws_url})
        if not token or not token.startswith("xoxb-"):
            return web.json_response({"ok": False, "error": "not_authed"})
        return web.json_response(self._answer(method, params))

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://fake.slack.com/",
                "team": "Fake",
                "user": "sms-ops",
                "team_id": "T0001",
                "user_id": "UBOT",
                "bot_id": "BBOT",
            }
        if method == "chat.postMessage":
            ts = f"1700000000.{next(self._ts):06d}"
            return {"ok": True, "channel": params.get("channel"), "ts": ts, "message": {"ts": ts}}
        if method == "chat.update":
            return {"ok": True, "channel": params.get("channel"), "ts": params.get("ts")}
        if method in ("views.open", "views.push", "views.update"):
            return {"ok": True, "view": {"id": f"V{next(self._ts):06d}", **(params.get("view") or {})}}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._ts):06d}"
            return {"ok": True, "file_id": file_id, "upload_url": f"{self.url}/upload/{file_id}"}
        if method == "files.completeUploadExternal":
            files = params.get("files")
            files = json.loads(files) if isinstance(files, str) else files or []
            return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(params.get("users", "")).lstrip("U")}}
        if method == "usergroups.users.list":
            return {"ok": True, "users": self.group_members.get(params.get("usergroup", ""), [])}
        if method == "conversations.members":
            return {
                "ok": True,
                "members": self.channel_members.get(params.get("channel", ""), []),
                "response_metadata": {"next_cursor": ""},
            }
        return {"ok": True}

    async def _file(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer xoxb-test-token":
            return web.Response(status=403)
        content = self.files.get(request.match_info["name"])
        return web.Response(body=content) if content is not None else web.Response(status=404)

    async def _upload(self, request: web.Request) -> web.Response:
        """Step 2 of files_upload_v2: the file's bytes, kept as `uploads[file_id]`."""
        self.uploads[request.match_info["file_id"]] = await request.read()
        return web.Response(text="OK")

    async def _webhook(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in self.expired_webhooks:  # what Slack answers once a response_url is used up or 30 min old
            return web.Response(status=404, text="expired_url")
        await self._record((name, json.loads(await request.read())))
        return web.Response(text="ok")
