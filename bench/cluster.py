"""Benchmarks' set-up: the real bot as N processes (`python -m bot`) on SQLite or PostgreSQL, the fake Slack
in this process, the fake provider in its own process (50 ms latency). Slack's requests are signed and
sent to the processes' HTTP ports, as a load balancer would.

The end of a send is read from the database: the time the last outcome was stored (`updated_at`, the
bots' wall clock, on this machine).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from bot.core.schema import recipients
from bot.core.store import Store, Summary
from bot.sms.simulator import ProviderProcess
from tests.conftest import open_store
from tests.fake_slack import FakeSlack
from tests.pg import PostgresServer
from tests.processes import BotProcess, first_sender, reap, wait_done
from tests.test_replicas import Replica

from .footprint import rss_mib

LATENCY = 0.05


def arguments(description: str, recipients: int | None = None) -> argparse.Namespace:
    """The benchmarks' options; with `recipients`, a `--recipients` option of that default."""
    parser = argparse.ArgumentParser(description=description)
    if recipients is not None:
        parser.add_argument("--recipients", type=int, default=recipients, help="the job's size")
    parser.add_argument(
        "--replicas", type=int, default=1, help="bot processes (PostgreSQL for more than one)"
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    if args.replicas > 1 and args.database != "postgresql":
        parser.error("several replicas need --database postgresql")
    return args


@dataclass
class Cluster:
    provider: ProviderProcess
    slack: FakeSlack
    store: Store
    replicas: list[Replica]  # the sending replica first
    database: str

    def rss_mib(self, peak: bool = False) -> float:
        """Resident memory of the sending replica now (or its peak since it started), in MiB."""
        return rss_mib(self.replicas[0].process.proc.pid, peak)  # type: ignore[union-attr]

    def describe(self) -> str:
        return f"{len(self.replicas)} replica(s) on {self.database}"

    async def loop_lag(self) -> float:
        """Milliseconds: the worst event-loop lag of any replica since the previous call (each replica's
        `/healthz` reports its own and starts over). Target: ≤ 20 ms, whatever the job's size."""
        return max([(await r.process.health())["loop_lag_ms"] for r in self.replicas])

    async def finish_the_job(self, confirmed_at: float) -> tuple[float, Summary]:
        """Wait for the one job confirmed at wall-clock `confirmed_at`: the seconds from then to its last
        outcome stored, and its summary."""
        (job,) = await self.store.unfinished_jobs()
        await wait_done(self.store, job.id)
        return await self.last_stored(job.id) - confirmed_at, await self.store.summary(job.id)

    async def last_stored(self, job_id: str) -> float:
        return await self.store.read(
            lambda conn: conn.execute(
                sa.select(sa.func.max(recipients.c.updated_at)).where(recipients.c.job_id == job_id)
            ).scalar_one()
        )


@contextlib.asynccontextmanager
async def cluster(args: argparse.Namespace, tmp: Path, **env: str) -> AsyncIterator[Cluster]:
    provider = ProviderProcess(latency=LATENCY)
    provider.reset(latency=LATENCY, record=False)
    server = PostgresServer() if args.database == "postgresql" else None
    slack = FakeSlack()
    await slack.start()
    try:
        url = server.create_database() if server else f"sqlite:///{tmp}/bench.sqlite3"
        store = await open_store(url)
        procs = [
            await BotProcess(
                database=url, provider_url=provider.url, slack_url=slack.url, cwd=tmp,
                WORKER_LEASE_SECONDS="15", WORKER_POLL_SECONDS="0.5", **env,
            ).start()
            for _ in range(args.replicas)
        ]  # fmt: skip
        sender = await first_sender(procs)
        ordered = [sender] + [p for p in procs if p is not sender]
        yield Cluster(provider, slack, store, [Replica(p, slack) for p in ordered], args.database)
        for r in ordered:
            await r.stop()
        await store.close()
    finally:
        await reap()
        await slack.stop()
        provider.close()
        if server:
            server.close()


def temporary() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="sms-ops-bench-")
