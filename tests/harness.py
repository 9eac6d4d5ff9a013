"""The real bot (bot.runtime.Runtime) in-process, against the fake Slack and the fake provider."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from bot.config import Settings
from bot.runtime import Runtime
from bot.sms.limits import AccountLimiter, RateLimiter

from .fake_slack import FakeSlack, bare_masks

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
FAST_BATCH_RATE = 20  # batch calls a second where a test is not about pacing (the provider allows 1)
_trigger = itertools.count(1)


def sign(body: str, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def fast_batches(provider: Any, settings: Any) -> AccountLimiter:
    """The account's limits with batch calls at FAST_BATCH_RATE a second, and the fake provider's batch
    limit raised to match (kept by the test's own resets): for tests that are not about pacing."""
    provider.defaults["batch_rate"] = FAST_BATCH_RATE
    provider.configure(batch_rate=FAST_BATCH_RATE)
    return AccountLimiter(
        single=RateLimiter(settings.single_rate, margin=settings.rate_margin),
        batch=RateLimiter(FAST_BATCH_RATE, margin=settings.rate_margin, follow_sends=True),
        query=RateLimiter(settings.query_rate, margin=settings.rate_margin),
    )


def database_away_once(store: Any, method: str = "mark_for_send") -> None:
    """`store.<method>` finds the database unreachable at its first call (as after a restart), then
    works: the worker's wait for the database, without stopping a real server."""
    from bot.core.db import DatabaseUnreachable

    real = getattr(store, method)
    calls = {"n": 0}

    async def away_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise DatabaseUnreachable("ConnectionRefusedError: [Errno 111] Connection refused")
        return await real(*args, **kwargs)

    setattr(store, method, away_once)


class Bot:
    def __init__(self, provider: Any, tmp_path: Path, **overrides: Any) -> None:
        self.provider = provider
        self.tmp_path = tmp_path
        self.overrides = overrides
        self.slack = FakeSlack()
        self.fault = overrides.pop("fault", None)
        self.clock = overrides.pop("clock", time.time)  # a test's own wall clock (schedules, windows)
        # Batch calls at FAST_BATCH_RATE a second, the fake provider's limit raised to match, unless the
        # test is about pacing (`pacing="real"`: the provider's 1 a second).
        self.fast = overrides.pop("pacing", "fast") == "fast"

    def settings(self) -> Settings:
        values: dict[str, Any] = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.slack.url + "/api/",
            "SLACK_UPDATES_PER_MINUTE": 60000,  # no wait for chat.update (tests about pacing set their own)
            "HOST": "127.0.0.1",
            "PORT": 0,
            "DATABASE_PATH": str(self.tmp_path / "bot.sqlite3"),
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "testid",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret",
            "SMS_ENDPOINT": self.provider.url if self.provider else "http://127.0.0.1:9",
            "SMS_READ_TIMEOUT": 2.0,
        }
        if self.clock is time.time:
            # On the real clock, send windows would make a test depend on the time of day it runs: after
            # 13:00 UTC (21:00 in Singapore and Hong Kong) a marketing text to +65 or +852 is held. Tests
            # of windows move a clock of their own, and keep the default window.
            values["SEND_WINDOW"] = "off"
        values.update(self.overrides)
        return Settings(_env_file=None, **values)

    def limiter(self) -> AccountLimiter | None:
        if not self.fast or self.provider is None:
            return None
        return fast_batches(self.provider, self.settings())

    async def __aenter__(self) -> Bot:
        await self.slack.start()
        self.runtime = Runtime(self.settings(), fault=self.fault, clock=self.clock, limiter=self.limiter())
        await self.runtime.start()
        self.http = httpx.AsyncClient(base_url=self.runtime.url, timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.runtime.aclose()
        await self.slack.stop()
        # Every test through this harness checks that masked numbers reach Slack inside code spans.
        assert exc[0] is not None or not self.slack.bare_masks, self.slack.bare_masks

    async def restart(self, **changes: Any) -> None:
        """Stop the bot and start a new one on the same database (the fake Slack keeps its records)."""
        await self.http.aclose()
        await self.runtime.aclose()
        self.fault = changes.pop("fault", None)
        self.clock = changes.pop("clock", self.clock)
        self.overrides.update(changes)
        self.runtime = Runtime(self.settings(), fault=self.fault, clock=self.clock, limiter=self.limiter())
        await self.runtime.start()
        self.http = httpx.AsyncClient(base_url=self.runtime.url, timeout=10)

    # ------------------------------------------------------------------ signed requests
    async def post(self, body: str, headers: dict[str, str] | None = None) -> httpx.Response:
        resp = await self.http.post(
            "/slack/events",
            content=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                **(sign(body) if headers is None else headers),
            },
        )
        if resp.headers.get("content-type", "").startswith("application/json"):  # an ack's message or view
            self.slack.bare_masks += bare_masks(resp.json())
        return resp

    async def command(
        self,
        text: str,
        *,
        user: str = "U0AGENT",
        channel: str = "C0SUPPORT",
        response_url: str = "1",
        trigger: str | None = None,
    ) -> httpx.Response:
        body = urlencode(
            {
                "token": "legacy",
                "team_id": "T0001",
                "team_domain": "fake",
                "channel_id": channel,
                "channel_name": "support",
                "user_id": user,
                "user_name": "agent",
                "command": "/sms",
                "text": text,
                "api_app_id": "A0001",
                "is_enterprise_install": "false",
                "response_url": self.slack.response_url(response_url),
                "trigger_id": trigger or f"trigger-{next(_trigger)}",
            }
        )
        return await self.post(body)

    async def interact(self, payload: dict[str, Any]) -> httpx.Response:
        return await self.post(urlencode({"payload": json.dumps(payload)}))

    async def click(
        self,
        action_id: str,
        value: str,
        *,
        user: str = "U0AGENT",
        block_id: str = "actions",
        channel: str = "C0SUPPORT",
    ) -> httpx.Response:
        """A button click in a message (block_actions), signed."""
        return await self.interact(
            {
                "type": "block_actions",
                "user": {"id": user},
                "team": {"id": "T0001"},
                "api_app_id": "A0001",
                "trigger_id": f"trigger-{next(_trigger)}",
                "container": {"type": "message"},
                "channel": {"id": channel},
                "response_url": self.slack.response_url(f"click-{next(_trigger)}"),
                "actions": [{"action_id": action_id, "block_id": block_id, "type": "button", "value": value}],
            }
        )

    async def submit_view(
        self,
        view: dict[str, Any],
        values: dict[str, dict[str, Any]],
        *,
        user: str = "U0AGENT",
        view_id: str = "V0001",
    ) -> httpx.Response:
        payload = {
            "type": "view_submission",
            "team": {"id": "T0001", "domain": "fake"},
            "user": {"id": user, "username": "agent", "team_id": "T0001"},
            "api_app_id": "A0001",
            "trigger_id": f"trigger-{next(_trigger)}",
            "view": {**view, "id": view_id, "team_id": "T0001", "state": {"values": values}},
        }
        return await self.interact(payload)

    # ------------------------------------------------------------------ job helpers
    async def job_done(self, n: int = 1) -> Any:
        """Wait until the n-th job submitted since start has finished; returns (job, summary)."""
        import asyncio

        job_ids = await asyncio.wait_for(self.runtime.worker.wait_submitted(n), 10)
        summary = await asyncio.wait_for(self.runtime.worker.wait(job_ids[n - 1]), 30)
        return await self.runtime.store.get_job(job_ids[n - 1]), summary

    async def recipients(self, job_id: str) -> list[Any]:
        return await self.runtime.store.recipients(job_id)

    async def posted(self, job_id: str) -> Any:
        """What the bot posted in Slack for a job (the Slack layer's own record: parent, thread)."""
        return await self.runtime.slack_state.post(job_id)

    async def count(self, table: str) -> int:
        """Rows in a table of the bot's database."""
        import sqlalchemy as sa

        return await self.runtime.store.read(
            lambda conn: conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
        )
