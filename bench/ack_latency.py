"""Ack latency of `/sms <number> <message>`: 200 slash commands sent concurrently to the HTTP endpoint.

The bot runs as deployed: `python -m bot` (HTTP server, signature check, Bolt, parsing, access, job
insert, JSON logs written to a pipe), on SQLite, against the fake Slack Web API (in this process) and
the fake provider (50 ms latency, its own process); the sends it queues run in the same bot process
while the acks are measured. Requests come from a separate process.
Slack's limit is 3 s; the target is p99 < 100 ms.

For a burst it also gives the **CPU** the bot's process used while the load ran (all its threads, from
Linux's per-thread counters), per request, beside the floor server's: the burst is bound by the
processor, so this is the bot's own work, without the waiting. The sends start after the last ack (the
worker waits for a quiet moment), so they are not in it.

The floor is measured in the same run: the same requests from the same load process, to an aiohttp
server in this process that reads each body and answers 200 at once. It is what the load process,
loopback and aiohttp's own server cost on this machine, with nothing of the bot's.

`--baseline REV` measures another revision of this repository side by side in the same run: its bot
(`python -m bot` from a temporary git worktree) under this same load, alternating `--rounds` times;
which side runs first alternates too (round 1 the baseline, round 2 this tree, ...).

    .venv/bin/python -m bench.ack_latency
    .venv/bin/python -m bench.ack_latency --baseline 29db38b --rounds 3
    .venv/bin/python -m bench.ack_latency --steady 20     # 20 commands a second instead of a burst
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from bot.sms import loop
from bot.sms.simulator import ProviderProcess
from tests.fake_slack import FakeSlack
from tests.harness import sign
from tests.processes import BotProcess, reap, wait_provider

from .baseline import worktree

N = 200


def _load(url: str, bodies: list[str], rate: float, server: int, out: multiprocessing.Queue) -> None:
    """Post every body: all at once (`rate` 0), or the i-th at i / `rate` seconds. Puts the latencies and
    the CPU seconds process `server` used from just before the first request to just after the last
    answer (None where that cannot be read)."""
    import aiohttp

    async def go() -> tuple[list[float], float | None]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=N)) as session:
            cpu = _cpu_seconds(server)
            start = time.perf_counter()

            async def one(i: int, body: str) -> float:
                headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                return time.perf_counter() - t0

            latencies = await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
            after = _cpu_seconds(server)  # at once: the server's work after its last answer is not in it
            return latencies, None if cpu is None or after is None else after - cpu

    out.put(asyncio.run(go()))


def _post_all(url: str, bodies: list[str], rate: float, server: int) -> tuple[list[float], float | None]:
    """From a process of its own (see `_load`): the latencies, and the CPU seconds of process `server`."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    proc = ctx.Process(target=_load, args=(url, bodies, rate, server, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


def _cpu_seconds(pid: int) -> float | None:
    """CPU time the threads of process `pid` have used (Linux's nanosecond counters); None elsewhere."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _bodies(response_url: Callable[[str], str]) -> list[str]:
    return [
        urlencode(
            {
                "command": "/sms",
                "text": f"+65 8100 {i:04d} Your parcel ships today",
                "user_id": "U0AGENT",
                "channel_id": "C0SUPPORT",
                "team_id": "T0001",
                "response_url": response_url(str(i)),
                "trigger_id": f"t{i}",
            }
        )
        for i in range(N)
    ]


async def floor(rate: float) -> tuple[list[float], float | None]:
    """The same load against a server that only reads each request and answers it: the latencies, and the
    CPU seconds this process (the server; the thread that waits for the load uses next to none) used."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response()

    app = web.Application()
    app.router.add_post("/slack/events", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        bodies = _bodies(lambda key: f"http://127.0.0.1:9/response/{key}")
        url = f"http://127.0.0.1:{port}/slack/events"
        return await asyncio.get_running_loop().run_in_executor(
            None, _post_all, url, bodies, rate, os.getpid()
        )
    finally:
        await runner.cleanup()


def _percentiles(latencies: list[float]) -> tuple[float, float, float]:
    ms = sorted(x * 1000 for x in latencies)
    return statistics.median(ms), ms[int(len(ms) * 0.99) - 1], ms[-1]


async def main(rate: float = 0.0, tree: Path | None = None, event_loop: str = "auto") -> str:
    """One run of the bot (of `tree`, else this one; on `event_loop`) and its floor; returns the line of
    figures."""
    provider = ProviderProcess(latency=0.05)
    provider.reset(latency=0.05, record=False)
    slack = FakeSlack()
    await slack.start()
    env = {"EVENT_LOOP": event_loop, **({"PYTHONPATH": str(tree)} if tree else {})}
    try:
        with tempfile.TemporaryDirectory(prefix="sms-ops-bench-") as tmp:
            bot = await BotProcess(
                database=f"sqlite:///{tmp}/bench.sqlite3", provider_url=provider.url, slack_url=slack.url,
                cwd=Path(tmp), WORKER_LEASE_SECONDS="15", WORKER_POLL_SECONDS="0.5", SEND_WINDOW="off", **env,
            ).start()  # fmt: skip
            try:
                await bot.wait_sender()
                bodies = _bodies(slack.response_url)
                url = bot.url + "/slack/events"
                assert bot.proc is not None
                latencies, bot_cpu = await asyncio.get_running_loop().run_in_executor(
                    None, _post_all, url, bodies, rate, bot.proc.pid
                )
                await wait_provider(provider, N, limit=60)  # every send reached the provider
                auth_calls = len(slack.called("auth.test"))
                await bot.stop()
            finally:
                await reap()
    finally:
        await slack.stop()
        provider.close()
    floor_latencies, floor_cpu = await floor(rate)  # after the bot's run: nothing of it left before
    base50, base99, _ = _percentiles(floor_latencies)
    p50, p99, most = _percentiles(latencies)
    cpu = (
        f"; CPU while the load ran: the bot {bot_cpu * 1000:.0f} ms ({bot_cpu * 1000 / N:.2f} ms a "
        f"request), the floor's server {floor_cpu * 1000:.0f} ms ({floor_cpu * 1000 / N:.2f} ms)"
        if bot_cpu is not None and floor_cpu is not None and not rate
        else ""
    )
    how = (
        f"{N} /sms commands at {rate:g}/s (target p99 5 ms)"
        if rate
        else f"{N} concurrent /sms commands (target p99 100 ms)"
    )
    return (
        f"{how}: ack p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {most:.1f} ms "
        f"(Slack's limit 3,000 ms: p99 = {p99 / 3000:.3f} of it); floor p50 {base50:.1f} ms, p99 {base99:.1f} ms "
        f"(the bot's p99 is {p99 / base99:.1f}× it){cpu}; all {N} sends reached the provider; "
        f"auth.test calls: {auth_calls}"
    )


async def side_by_side(baseline: str, rounds: int, rate: float, event_loop: str) -> None:
    with worktree(baseline) as tree:
        sides = [(f"baseline {baseline}", tree), ("this tree", None)]
        for k in range(rounds):
            # The order alternates: the second run of a round tends to come out slower, whichever it is.
            for name, where in sides if k % 2 == 0 else sides[::-1]:
                print(f"round {k + 1}, {name}: {await main(rate, where, event_loop)}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="a git revision to measure side by side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="the bot's EVENT_LOOP (and this process's)",
    )
    parser.add_argument(
        "--steady", type=float, metavar="RATE", default=0.0, help="commands per second instead of a burst"
    )
    args = parser.parse_args()
    if args.baseline:
        loop.run(side_by_side(args.baseline, args.rounds, args.steady, args.loop), args.loop)
    else:
        print(loop.run(main(args.steady, event_loop=args.loop), args.loop))
