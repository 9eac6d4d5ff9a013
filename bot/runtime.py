"""Wiring: settings → storage, SMS client, worker, Slack app, HTTP server. Used by `python -m bot` and tests."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import SQLAlchemyError

from bot.config import Settings
from bot.core import db
from bot.core.access import AccessPolicy
from bot.core.deliveries import Deliveries
from bot.core.groups import GroupFile
from bot.core.service import SendService
from bot.core.store import Store, answering
from bot.core.worker import Busy, Worker
from bot.logs import SOCKET_LOGGER
from bot.slack.app import StartupError, authorize_once, build_app, web_client
from bot.slack.deps import Deps
from bot.slack.directory import SlackDirectory
from bot.slack.reporter import SlackReporter
from bot.slack.server import ReceiptsEndpoint, web_app
from bot.slack.state import SlackState
from bot.sms import AccountLimiter, Receipt, ReceiptQueue, SmsClient
from bot.sms.loop import loop_name

log = logging.getLogger("bot")

if TYPE_CHECKING:
    from bot.slack.socket_mode import SocketModeHandler
    from bot.sms.simulator import FakeProvider


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        fault: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        limiter: AccountLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.fault = fault
        self.limiter = limiter  # the account's limits (tests not about pacing: faster ones)
        self.clock = clock  # wall-clock time for jobs, leases, schedules and send windows (tests: their own)
        self.simulator: FakeProvider | None = None
        self.socket: SocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        s = self.settings
        sms_settings = s
        if s.dry_run:
            from bot.sms.simulator import dry_run_provider  # only a dry run loads the simulator

            self.simulator = dry_run_provider()
            sms_settings = self.simulator.settings_for(s, await self.simulator.start("127.0.0.1", 0))
        self.sms = SmsClient(sms_settings, limiter=self.limiter)
        self.store = Store(await open_database(s), clock=self.clock)
        # One pool of connections to Slack for every Web API call (posts, edits, views, lookups).
        self.slack_session = aiohttp.ClientSession()
        self.client = web_client(s.slack_bot_token.get_secret_value(), s.slack_api_url, self.slack_session)
        self.slack_state = SlackState(self.store)
        self.reporter = SlackReporter(
            self.client, self.store, self.slack_state, updates_per_minute=s.slack_updates_per_minute
        )
        self.busy = Busy()
        self.worker = Worker(
            self.store,
            self.sms,
            self.reporter,
            fault=self.fault,
            busy=self.busy,
            lease_seconds=s.worker_lease_seconds,
            poll_seconds=s.worker_poll_seconds,
            per_number_daily=s.per_number_daily,
            windows=s.window_rules(),
        )
        # Receipts: matched, asked about and reported by the sending replica only (one per deployment).
        self.queue = ReceiptQueue(s) if s.receipts_queue and not s.dry_run else None
        self.deliveries = Deliveries(
            self.store,
            self.sms,
            self.reporter,
            queue=self.queue,
            active=lambda: self.worker.is_sender,
            check_after=s.check_after(),
            query_rate=min(s.receipts_query_rate, s.query_rate),
            hold_seconds=s.receipts_hold_seconds,
        )
        token = s.receipts_token.get_secret_value()
        if not token and self.simulator is not None:
            import secrets  # a dry run's simulator pushes its receipts to the bot, as the real one would

            token = secrets.token_urlsafe(24)
        self.access = AccessPolicy(s.access_rules(), SlackDirectory(self.client), ttl=s.access_cache_seconds)
        self.service = SendService(
            self.store, self.worker, dry_run=s.dry_run, per_number_daily=s.per_number_daily
        )
        self.groups = GroupFile(s.contact_groups_file, s.default_region)
        book = self.groups.current()
        if book.error and not self.groups.path.exists():
            log.info("contact groups: %s Outage SMS need one (see groups.example.toml).", book.error)
        else:
            for problem in ([book.error] if book.error else []) + book.problems:
                log.warning("contact groups: %s", problem)
        self._watcher = asyncio.create_task(self.groups.watch(), name="groups-watcher")
        self.lag = LoopLag()
        self.lag.start()
        self.deps = Deps(
            settings=s, store=self.store, service=self.service, access=self.access, groups=self.groups
        )
        self.bolt = build_app(self.deps, self.client, await authorize_once(self.client))
        await self.worker.start()
        self.deliveries.start()
        if s.socket_mode:
            app_token = s.slack_app_token.get_secret_value()
            try:  # the Socket Mode client retries a rejected token forever: check it once, first
                await self.client.apps_connections_open(app_token=app_token)
            except SlackApiError as exc:
                error = exc.response.get("error", "unknown_error")
                raise StartupError(
                    f"SLACK_APP_TOKEN was rejected by Slack ({error}): it must be an app-level token with "
                    "connections:write, and Socket Mode must be enabled for the app."
                ) from None
            # Its own logger: connections opened, dropped and renewed are logged (at INFO, never below).
            from bot.slack.socket_mode import SocketModeHandler  # Socket Mode only

            self.socket = SocketModeHandler(
                self.bolt,
                app_token,
                self.busy,
                logger=logging.getLogger(SOCKET_LOGGER),
                ping_interval=s.slack_ping_seconds,
            )
            await self.socket.connect_async()
        self.receipts_endpoint = (
            ReceiptsEndpoint(token, self._accept_pushed, s.receipts_max_body) if token else None
        )
        self._runner = web.AppRunner(
            web_app(
                None if s.socket_mode else self.bolt,
                self.health,
                self.busy,
                signing_secret=s.slack_signing_secret.get_secret_value(),
                receipts=self.receipts_endpoint,
            ),
            access_log=None,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{'127.0.0.1' if s.host in ('0.0.0.0', '') else s.host}:{port}"  # noqa: S104
        if self.simulator is not None:
            self.simulator.receipts_url = f"{self.url}/receipts/{token}"
        mode = (
            f"Socket Mode (health check at {self.url}/healthz)"
            if s.socket_mode
            else f"HTTP mode at {self.url}/slack/events"
        )
        log.info(
            "SMS Ops running in %s%s on %s",
            mode,
            " (dry run: simulated provider)" if s.dry_run else "",
            loop_name(),
        )

    async def _accept_pushed(self, items: list[Receipt]) -> int:
        answering()  # a push waits for its answer: on SQLite, ahead of background work
        return await self.deliveries.accept(items, "push")

    async def health(self) -> dict[str, Any]:
        db_ok = True
        try:
            await asyncio.wait_for(self.store.ping(), 2.0)
        except Exception:
            db_ok = False
        # Socket Mode: Slack can reach this replica only through its connection (HTTP mode: always True).
        slack = await self.socket.client.is_connected() if self.socket is not None else True
        ok = db_ok and self.worker.alive and slack
        return {
            "ok": ok,
            "database": db_ok,
            "worker": self.worker.alive,
            "slack": slack,
            "sender": self.worker.is_sender,
            "dry_run": self.settings.dry_run,
            # the worst delay of a 10 ms timer since the previous health check: how long the event loop
            # was held (a Slack request arriving then waited as long)
            "loop_lag_ms": round(self.lag.read() * 1000, 1),
            # delivery receipts since start: stored, matched, duplicates, foreign (dropped), queried;
            # held: waiting in the inbox for their recipient's answer
            "receipts": dict(self.deliveries.counts),
            # the push endpoint's answer times, from the request's arrival (when RECEIPTS_TOKEN is set)
            "receipt_pushes": self.receipts_endpoint.percentiles() if self.receipts_endpoint else {},
        }

    async def aclose(self) -> None:
        if not hasattr(self, "worker"):
            if hasattr(self, "slack_session"):
                await self.slack_session.close()
            if hasattr(self, "store"):
                await self.store.close()
            if self.simulator is not None:
                await self.simulator.stop()
            return
        if getattr(self, "_watcher", None) is not None:
            self._watcher.cancel()
            self.lag.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close_async()
        await self.deliveries.stop()
        if self.queue is not None:
            await self.queue.aclose()
        await self.worker.stop()
        await self.reporter.aclose()  # after the worker: the jobs it finished while stopping are reported
        await self.slack_session.close()
        await self.sms.aclose()
        if self.simulator is not None:
            await self.simulator.stop()
        await self.store.close()


class LoopLag:
    """A probe of the event loop: how late a 10 ms timer fires. The worst since the last `read`."""

    PERIOD = 0.01

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def read(self) -> float:
        """Seconds: the worst lateness since the previous read."""
        worst, self.worst = self.worst, 0.0
        return worst

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(self.PERIOD)
            self.worst = max(self.worst, loop.time() - began - self.PERIOD)


async def open_database(s: Settings) -> db.Engine:
    """The engine, with the schema brought to this code's head (or checked, without auto-upgrade)."""
    url = s.sqlalchemy_url()
    where = "DATABASE_URL" if s.database_url else "DATABASE_PATH"
    try:
        engine = db.create_engine(url)
    except db.DatabaseError as exc:
        raise StartupError(str(exc)) from None
    try:
        if s.database_auto_upgrade:
            before, after = await db.upgrade(engine)
            if before != after:
                log.info("database schema upgraded from %s to %s", before or "unversioned", after)
        else:
            await db.check(engine)
    except db.DatabaseError as exc:
        await db.dispose(engine)
        raise StartupError(f"{where}: {exc}") from None
    except (OSError, SQLAlchemyError) as exc:
        await db.dispose(engine)
        reason = getattr(exc, "orig", None) or exc
        raise StartupError(
            f"{where}: cannot use the database at {db.describe(url)} ({type(reason).__name__}: {reason})."
        ) from None
    return engine


async def serve(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        await runtime.start()
    except StartupError as exc:
        await runtime.aclose()
        raise SystemExit(f"error: {exc}") from None
    # Everything alive now (libraries, phone metadata, settings) lives as long as the process: moved out
    # of the collector's reach, a full collection no longer walks it. Measured in bench.receipts, such a
    # collection held the event loop 50-90 ms, several times a send; after, 10-25 ms.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping: unfinished jobs resume at the next start")
        await runtime.aclose()
