"""The real bot (`python -m bot`) as processes of their own, to kill and restart: replicas, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bot.core.store import Job, JobState, Store

from .conftest import LOOP
from .harness import BOT_TOKEN, SIGNING_SECRET

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
STARTED: list[BotProcess] = []  # killed after each test that starts any (fixture `bot_processes`)


class BotProcess:
    """`python -m bot` (HTTP mode, or Socket Mode with SLACK_APP_TOKEN) against a fake Slack and a fake provider, on a shared database."""

    def __init__(self, *, database: str, provider_url: str, slack_url: str, cwd: Path, **env: str) -> None:
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
            "EVENT_LOOP": LOOP,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack_url + "/api/",
            "SLACK_UPDATES_PER_MINUTE": "60000",
            "HOST": "127.0.0.1",
            "PORT": "0",
            "DATABASE_URL": database,
            "SMS_ENDPOINT": provider_url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "testid",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "WORKER_LEASE_SECONDS": "4.5",
            "WORKER_POLL_SECONDS": "0.1",
            **env,
        }
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.url = ""
        self._reader: asyncio.Task[None] | None = None
        self._sender = asyncio.Event()

    async def start(self) -> BotProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=self.cwd, env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        STARTED.append(self)
        started = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(started))
        self.url = await asyncio.wait_for(started, 30)
        return self

    async def _read(self, started: asyncio.Future[str]) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            try:
                record = json.loads(line)
            except ValueError:
                record = {"msg": line.decode(errors="replace")}
            self.lines.append(record)
            message = str(record.get("msg", ""))
            if "HTTP mode at " in message and not started.done():
                started.set_result(message.split("HTTP mode at ", 1)[1].split("/slack/events")[0])
            if "health check at " in message and not started.done():  # Socket Mode
                started.set_result(message.split("health check at ", 1)[1].split("/healthz")[0])
            if "is now the sending replica" in message:
                self._sender.set()
        if not started.done():
            started.set_exception(RuntimeError("the bot exited: " + json.dumps(self.lines[-5:])))

    async def wait_sender(self, limit: float = 30) -> None:
        await asyncio.wait_for(self._sender.wait(), limit)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        if self._reader is not None:
            await self._reader
        return code

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url) as http:
            return (await http.get("/healthz")).json()


async def reap() -> None:
    """Inside the test's event loop: SIGKILL and wait for every bot process still running."""
    for bot in list(STARTED):
        if bot.proc is not None and bot.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                bot.proc.send_signal(signal.SIGKILL)
            await bot.proc.wait()
        if bot._reader is not None:
            await bot._reader


async def first_sender(bots: list[BotProcess], limit: float = 30) -> BotProcess:
    """The process that became the sending replica (the first to say so)."""
    waits = {asyncio.ensure_future(b.wait_sender(limit)): b for b in bots}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in pending:
        w.cancel()
    return waits[next(iter(done))]


def kill_leftovers() -> None:
    """SIGKILL every bot process a test started and left running (a failed assertion, a time-out)."""
    while STARTED:
        proc = STARTED.pop().proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)


async def until(check: Callable[[], Awaitable[T | None]], limit: float, what: str, every: float = 0.01) -> T:
    """Poll another process's progress (a shared database, a peer's counters): there is nothing in this
    process to await. Raises TimeoutError naming `what` after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} (after {limit:g} s)")
        await asyncio.sleep(every)


async def wait_provider(provider: Any, at_least: int, limit: float = 30) -> int:
    """Until the fake provider has received `at_least` requests; returns how many it had then."""
    async with httpx.AsyncClient(base_url=provider.url) as http:

        async def received() -> int | None:
            count = (await http.get("/_stats")).json()["requests"]
            return count if count >= at_least else None

        # Every 20 ms: each poll is a request the provider serves beside the SMS it is being measured on.
        return await until(received, limit, f"the provider did not receive {at_least} requests", every=0.02)


async def wait_done(store: Store, job_id: str, limit: float = 60) -> Job:
    """Until a job run by another process is done (its state is in the shared database)."""

    async def done() -> Job | None:
        job = await store.get_job(job_id)
        return job if job is not None and job.state == JobState.DONE else None

    return await until(done, limit, f"job {job_id} not done", every=0.05)
