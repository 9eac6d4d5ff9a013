"""Ack latency of `/sms <number> <message>`: 200 slash commands sent concurrently to the HTTP endpoint.

The bot runs for real (HTTP server, signature check, Bolt, parsing, access, job insert), against the
fake Slack Web API and the fake provider (50 ms latency, own process); the sends it queues run
in the same process while the acks are measured. Requests come from a separate process.
Slack's limit is 3 s; the target is p99 < 100 ms.

The floor is measured in the same run: the same requests from the same load process, to an aiohttp
server in this process that reads each body and answers 200 at once. It is what the load process,
loopback and aiohttp's own server cost on this machine, with nothing of the bot's.

`--baseline REV` measures another revision of this repository side by side in the same run (its own
`bench.ack_latency`, from a temporary git worktree, same interpreter), alternating `--rounds` times.

    .venv/bin/python -m bench.ack_latency
    .venv/bin/python -m bench.ack_latency --baseline 29db38b --rounds 3
    .venv/bin/python -m bench.ack_latency --steady 20     # 20 commands a second instead of a burst
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from bot.sms import loop
from bot.sms.simulator import ProviderProcess
from tests.harness import Bot, sign

from .baseline import ROOT, worktree

N = 200


def _load(url: str, bodies: list[str], rate: float, out: multiprocessing.Queue) -> None:
    """Post every body: all at once (`rate` 0), or the i-th at i / `rate` seconds."""
    import aiohttp

    async def go() -> list[float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=N)) as session:
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

            return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))

    out.put(asyncio.run(go()))


def _post_all(url: str, bodies: list[str], rate: float) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    proc = ctx.Process(target=_load, args=(url, bodies, rate, out))
    proc.start()
    latencies = out.get()
    proc.join()
    return latencies


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


async def floor(rate: float) -> list[float]:
    """The same load against a server that only reads each request and answers it."""
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
        return await asyncio.get_running_loop().run_in_executor(None, _post_all, url, bodies, rate)
    finally:
        await runner.cleanup()


def _percentiles(latencies: list[float]) -> tuple[float, float, float]:
    ms = sorted(x * 1000 for x in latencies)
    return statistics.median(ms), ms[int(len(ms) * 0.99) - 1], ms[-1]


async def main(rate: float = 0.0) -> None:
    provider = ProviderProcess(latency=0.05)
    provider.reset(latency=0.05, record=False)
    with tempfile.TemporaryDirectory() as tmp:
        async with Bot(provider, Path(tmp)) as bot:
            gc.freeze()  # as `python -m bot` does once started (bot/runtime.py, serve)
            bodies = _bodies(bot.slack.response_url)
            url = bot.runtime.url + "/slack/events"
            latencies = await asyncio.get_running_loop().run_in_executor(None, _post_all, url, bodies, rate)
            await bot.runtime.worker.wait_submitted(N)
            for job_id in bot.runtime.worker.submitted:
                await bot.runtime.worker.wait(job_id)
            auth_calls = len(bot.slack.called("auth.test"))
    provider.close()
    base50, base99, _ = _percentiles(await floor(rate))  # after the bot's run: nothing of it left before
    p50, p99, most = _percentiles(latencies)
    how = (
        f"{N} /sms commands at {rate:g}/s (target p99 5 ms)"
        if rate
        else f"{N} concurrent /sms commands (target p99 100 ms)"
    )
    print(
        f"{how}: ack p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {most:.1f} ms "
        f"(Slack's limit 3,000 ms: p99 = {p99 / 3000:.3f} of it); floor p50 {base50:.1f} ms, p99 {base99:.1f} ms "
        f"(the bot's p99 is {p99 / base99:.1f}× it); all {N} sends completed; auth.test calls: {auth_calls}"
    )


def side_by_side(baseline: str, rounds: int, extra: list[str]) -> None:
    import os
    import subprocess
    import sys

    with worktree(baseline) as tree:
        for k in range(rounds):
            for name, where in ((f"baseline {baseline}", tree), ("this tree", ROOT)):
                env = {**os.environ, "PYTHONPATH": str(where)}
                out = (
                    subprocess.run(
                        [sys.executable, "-m", "bench.ack_latency", *extra],
                        cwd=where,
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                print(f"round {k + 1}, {name}: {out}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="a git revision to measure side by side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    parser.add_argument(
        "--steady", type=float, metavar="RATE", default=0.0, help="commands per second instead of a burst"
    )
    args = parser.parse_args()
    if args.baseline:
        side_by_side(args.baseline, args.rounds, ["--steady", str(args.steady)] if args.steady else [])
    else:
        loop.run(main(args.steady), args.loop)  # the bot's own choice: uvloop where installed
