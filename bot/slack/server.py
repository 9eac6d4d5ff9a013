"""The bot's HTTP server (aiohttp): Slack's requests at /slack/events (HTTP mode), the provider's delivery
receipts at /receipts/<RECEIPTS_TOKEN> (when set) and a health check at /healthz.

Whatever arrives at /slack/events is answered in one log line and never with a server error for bad
input: an unsigned (or badly signed) request gets 401, a signed one that is not a Slack payload 400."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.core.db import reason, unreachable
from bot.core.worker import Busy
from bot.sms import Receipt, ReceiptFormatError, parse_push

log = logging.getLogger("bot.http")


def reference() -> str:
    """A short id shown to a person and written to the log line of the same failure."""
    return secrets.token_hex(4)


def signed(secret: bytes, body: bytes, headers: Any, now: float) -> bool:
    """Slack's v0 signature over these exact bytes, made within five minutes. Anything malformed (no
    headers, a timestamp that is not a number, a body that is not UTF-8) is simply not signed; the
    HMAC is over the raw bytes, so a signed body that is not UTF-8 is still recognised as signed."""
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(now - int(timestamp)) > 300:
        return False
    digest = hmac.new(secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v0={digest}".encode(), signature.encode("utf-8", "replace"))


@dataclass(frozen=True)
class ReceiptsEndpoint:
    """POST /receipts/<token>: `accept` stores the receipts; the push is answered after it returns."""

    token: str
    accept: Callable[[list[Receipt]], Awaitable[int]]
    max_body: int = 1024 * 1024
    # milliseconds from a push's arrival to its answer, the latest ones (the health check's percentiles)
    answered_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def percentiles(self) -> dict[str, float]:
        times = sorted(self.answered_ms)
        if not times:
            return {}
        return {
            "pushes": len(times),
            "p50_ms": round(times[len(times) // 2], 1),
            "p99_ms": round(times[max(0, int(len(times) * 0.99) - 1)], 1),
            "max_ms": round(times[-1], 1),
        }


def _provider_answer(code: int, msg: str, status: int = 200) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def web_app(
    bolt: AsyncApp | None,
    health: Callable[[], Awaitable[dict[str, Any]]],
    busy: Busy | None = None,
    *,
    signing_secret: str = "",
    receipts: ReceiptsEndpoint | None = None,
) -> web.Application:
    app = web.Application(client_max_size=max(1024 * 1024, receipts.max_body if receipts else 0))
    secret = signing_secret.encode()

    async def events(request: web.Request) -> web.Response:
        started = time.monotonic()

        def done(status: int, note: str = "") -> None:
            ms = (time.monotonic() - started) * 1000
            level = logging.INFO if status < 400 else logging.WARNING
            log.log(level, "http %s %s status=%d ms=%.1f%s", request.method, request.path, status, ms, note)

        raw = await request.read()
        if not signed(secret, raw, request.headers, time.time()):
            done(401, " refused: no valid Slack signature")
            return web.Response(status=401, text="invalid signature")
        if busy is not None:
            busy.enter()
        try:
            bolt_request = AsyncBoltRequest(
                body=raw.decode("utf-8"),
                query=request.query_string,
                headers=request.headers,  # type: ignore[arg-type]
            )
            response = await bolt.async_dispatch(bolt_request)  # type: ignore[union-attr]
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # signed, but not a Slack payload
            ref = reference()
            done(400, f" ref={ref} malformed payload: {type(exc).__name__}")
            return web.Response(status=400, text=f"malformed request (ref {ref})")
        finally:
            if busy is not None:
                busy.leave()
        done(response.status)
        return await to_aiohttp_response(response)

    async def healthz(request: web.Request) -> web.Response:
        status = await health()
        return web.json_response(status, status=200 if status.get("ok") else 503)

    async def receipts_push(request: web.Request) -> web.Response:
        """The provider's receipt push: a JSON array. Answered `{"code": 0}` once stored (the provider
        pushes again after 1 and 5 minutes when the answer is anything else); an unknown path is 404
        and says nothing about the right one."""
        assert receipts is not None
        started = time.monotonic()
        if not hmac.compare_digest(request.match_info["token"].encode(), receipts.token.encode()):
            log.warning("receipts push refused: unknown path (status=404)")
            return web.Response(status=404, text="not found")
        if (request.content_length or 0) > receipts.max_body:
            log.warning("receipts push refused: %d bytes > RECEIPTS_MAX_BODY", request.content_length)
            return _provider_answer(1, "body too large", 413)
        chunks, size = [], 0
        try:
            async for chunk in request.content.iter_chunked(64 * 1024):  # the whole body, never more
                size += len(chunk)
                if size > receipts.max_body:
                    log.warning(
                        "receipts push refused: body > RECEIPTS_MAX_BODY (%d bytes)", receipts.max_body
                    )
                    return _provider_answer(1, "body too large", 413)
                chunks.append(chunk)
        except Exception:  # the connection dropped mid-body: nothing was stored, the provider pushes again
            return _provider_answer(1, "incomplete body", 400)
        raw = b"".join(chunks)
        try:
            items = parse_push(raw)
        except ReceiptFormatError as exc:
            log.warning("receipts push refused: %s", exc)
            return _provider_answer(1, f"not a receipt push: {exc}", 400)
        try:
            stored = await receipts.accept(items)
        except Exception as exc:  # not stored: say so, and the provider pushes again
            ref = reference()
            if unreachable(exc):  # not a bug: the pushes come again after 1 and 5 minutes
                log.warning(
                    "receipts push: %d receipt(s) not stored, the database cannot be reached (%s) ref=%s",
                    len(items), reason(exc), ref,
                )  # fmt: skip
            else:
                log.exception("receipts push: storing %d receipt(s) failed ref=%s", len(items), ref)
            return _provider_answer(1, f"not stored (ref {ref}); push again", 503)
        ms = (time.monotonic() - started) * 1000
        receipts.answered_ms.append(ms)
        log.debug("receipts push: %d stored of %d in %.1f ms", stored, len(items), ms)
        return _provider_answer(0, "stored")

    if bolt is not None:
        app.router.add_post("/slack/events", events)
    if receipts is not None and receipts.token:
        app.router.add_post("/receipts/{token}", receipts_push)
    app.router.add_get("/healthz", healthz)
    return app
