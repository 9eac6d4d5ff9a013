"""Throughput of the shared SMS client against the provider's limits, beside two baselines.

(a) 2,000 single sends through `fan_out`, provider latency 50 ms: limit 2,000 at 2,000/s = 1.0 s.
(b) 10,000 recipients through `batch_send_all`: 10 calls at 1/s = 9 s between the first and the
    last call, plus one round trip.
The fake provider runs in its own process (as the real one is remote), enforcing the same limits.

Baselines, in the same run against the same provider:
- **bare aiohttp**: our signing and our limiter, one aiohttp session, nothing else of our client (no
  retries, no outcome split, no in-flight hooks): the least our client could cost over this library.
- **official SDK**: `alibabacloud_dysmsapi20180501`'s async client, paced the same way, in a virtual
  environment of its own (`bench/.sdk-venv`, made on first use; `--no-sdk` skips it).

    .venv/bin/python -m bench.sms_client
    .venv/bin/python -m bench.sms_client --rounds 5 --no-sdk   # (a) five times: the CPU figures' spread
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.sms import (
    RateLimiter,
    SmsClient,
    SmsSettings,
    Status,
    batch_send_all,
    fan_out,
    loop,
    parse_number,
    signing,
)
from bot.sms.client import API_VERSION
from bot.sms.loop import LoopChoice
from bot.sms.simulator import ProviderProcess

from .baseline import ROOT

LATENCY = 0.05
SINGLE_RATE, BATCH_RATE = 2000.0, 1.0  # the provider's limits (and the client's defaults)


def settings(provider: ProviderProcess) -> SmsSettings:
    return SmsSettings(
        _env_file=None,
        ALIBABA_CLOUD_ACCESS_KEY_ID=provider.access_key_id,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=provider.access_key_secret,
        SMS_ENDPOINT=provider.url,
    )


def numbers(n: int) -> list[str]:
    # Singapore mobiles 8100 0000 … 8100 9999 and on: valid, distinct.
    return [f"65{81000000 + i}" for i in range(n)]


async def single(provider: ProviderProcess, n: int) -> dict[str, float]:
    async with SmsClient(settings(provider)) as client:
        # Requests are built (and numbers validated) before the clock starts, as a job does at draft time.
        requests = [
            client.send_request(to=parse_number("+" + num), message=f"Outage: payments API degraded ({i})")
            for i, num in enumerate(numbers(n))
        ]
        t0, cpu0 = time.perf_counter(), time.process_time()
        outcomes = await fan_out(client, requests)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    limit = n / client.settings.single_rate + LATENCY
    accepted = sum(o.status == Status.ACCEPTED for o in outcomes)
    return {
        "wall": wall,
        "limit": n / client.settings.single_rate,
        "floor": limit,
        "accepted": accepted,
        "cpu_ms": cpu / n * 1000,
    }


async def batch(provider: ProviderProcess, n: int) -> dict[str, float]:
    # Numbers are validated once, when a draft is made (phonenumbers costs ≈ 80 µs a number); the job
    # hands the validated numbers to the helper, which does not parse them again.
    to = [parse_number("+" + num) for num in numbers(n)]
    messages = [f"Hello customer {i}, your order has shipped." for i in range(n)]
    async with SmsClient(settings(provider)) as client:
        t0 = time.perf_counter()
        outcomes = await batch_send_all(client, to, messages, type="NOTIFY")
        wall = time.perf_counter() - t0
    calls = -(-n // 1000)
    limit = (calls - 1) / client.settings.batch_rate + LATENCY
    accepted = sum(o.status == Status.ACCEPTED for o in outcomes)
    return {"wall": wall, "limit": limit, "floor": limit, "accepted": accepted}


async def bare_post(
    session: aiohttp.ClientSession, provider: ProviderProcess, action: str, body: bytes
) -> dict[str, Any]:
    """One signed POST of the baselines, straight on aiohttp: its answer's JSON."""
    headers = signing.sign(
        method="POST", host=urlsplit(provider.url).netloc, action=action, version=API_VERSION,
        access_key_id=provider.access_key_id, access_key_secret=provider.access_key_secret,
        body=body, content_type=signing.FORM_CONTENT_TYPE,
    )  # fmt: skip
    async with session.post(provider.url + "/", data=body, headers=headers) as resp:
        return await resp.json(content_type=None)


async def bare_single(provider: ProviderProcess, n: int) -> dict[str, float]:
    """Baseline (a): the same requests through bare aiohttp, signed by us and paced by our limiter."""
    limiter = RateLimiter(SINGLE_RATE)
    bodies = [
        signing.form_body({"To": num, "Message": f"Outage: payments API degraded ({i})"})
        for i, num in enumerate(numbers(n))
    ]
    accepted = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400)) as session:

        async def one(body: bytes) -> None:
            nonlocal accepted
            await limiter.acquire()
            answer = await bare_post(session, provider, "SendMessageToGlobe", body)
            accepted += answer.get("ResponseCode") == "OK"

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(b) for b in bodies))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"wall": wall, "accepted": accepted, "cpu_ms": cpu / n * 1000}


async def bare_batch(provider: ProviderProcess, n: int) -> dict[str, float]:
    """Baseline (b): batch calls of 1,000 through bare aiohttp, signed by us and paced by our limiter."""
    limiter = RateLimiter(BATCH_RATE)
    to = numbers(n)
    chunks = [to[i : i + 1000] for i in range(0, n, 1000)]
    accepted = 0
    async with aiohttp.ClientSession() as session:

        async def one(chunk: list[str]) -> None:
            nonlocal accepted
            body = signing.form_body({
                "To": json.dumps(chunk),
                "Message": json.dumps([f"Hello customer {c}, your order has shipped." for c in chunk]),
                "Type": "NOTIFY",
            })  # fmt: skip
            await limiter.acquire()
            answer = await bare_post(session, provider, "BatchSendMessageToGlobe", body)
            accepted += len(chunk) if answer.get("ResponseCode") == "OK" else 0

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in chunks))
        wall = time.perf_counter() - t0
    return {"wall": wall, "accepted": accepted}


SDK_VENV = ROOT / "bench" / ".sdk-venv"
SDK_PACKAGE = "alibabacloud_dysmsapi20180501==1.0.10"


def sdk_python() -> Path:
    """The SDK's own interpreter: a virtual environment made once (about half a minute), never the bot's."""
    python = SDK_VENV / "bin" / "python"
    if not python.exists():
        print(f"(making {SDK_VENV} for the official SDK baseline: {SDK_PACKAGE})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(SDK_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", SDK_PACKAGE]
        done = subprocess.run(pip, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"could not install {SDK_PACKAGE}:\n{done.stderr[-2000:]}")
    return python


def sdk(provider: ProviderProcess, mode: str, n: int, rate: float) -> dict[str, float]:
    """The official SDK's async client in its own process (see bench/sdk_client.py)."""
    out = subprocess.run(
        [
            str(sdk_python()), str(ROOT / "bench" / "sdk_client.py"), "--url", provider.url,
            "--key-id", provider.access_key_id, "--secret", provider.access_key_secret,
            "--mode", mode, "-n", str(n), "--rate", str(rate),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"]:
        print(f"    official SDK errors: {result['errors']}")
    if mode == "batch":
        result.pop("cpu_ms")  # per call, not per request: not comparable
    return result


def report(name: str, n: int, result: dict[str, float], provider: ProviderProcess, span_limit: float) -> None:
    """`span_limit`: the least time the provider's limit allows between the first and the last request."""
    counts = provider.counts
    span = counts["span_us"] / 1e6
    spread = (
        f"first → last request at the provider {span:.3f} s, limit {span_limit:.3f} s, ratio "
        f"{span / span_limit:.3f}x"
        if counts["requests"] > 1
        else f"{counts['requests']} request(s) reached the provider"
    )
    print(
        f"{name}: {n:,} recipients; {spread}; whole call {result['wall']:.2f} s; "
        f"accepted {int(result['accepted']):,}; throttled answers {counts['throttled']}; "
        f"provider requests {counts['requests']:,}"
        + (f"; client CPU {result['cpu_ms']:.3f} ms a request (budget 0.5)" if "cpu_ms" in result else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio", "both"], default="both", help="event loop(s), side by side"
    )
    parser.add_argument("--no-sdk", action="store_true", help="leave out the official SDK baseline")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of (a), alternating; the CPU figures' spread at the end"
    )
    args = parser.parse_args()
    loops: list[LoopChoice] = ["uvloop", "asyncio"] if args.loop == "both" else [args.loop]
    provider = ProviderProcess(latency=LATENCY)
    # As `python -m bot` does once started: what was loaded so far stays out of the collector's full walks
    # (one such walk paused a 2,000-send run for 47 ms here).
    gc.freeze()
    cpu: dict[str, list[float]] = {}
    try:
        span_limit = (args.single - 1) / SINGLE_RATE
        for _ in range(args.rounds):
            for choice in loops:
                for name, run in (("fan_out single sends", single), ("baseline: bare aiohttp", bare_single)):
                    provider.reset(latency=LATENCY, record=False)
                    result = loop.run(run(provider, args.single), choice)
                    report(f"(a) {name} [{choice}]", args.single, result, provider, span_limit)
                    cpu.setdefault(f"{name} [{choice}]", []).append(result["cpu_ms"])
        if args.rounds > 1:
            for name, values in cpu.items():
                print(
                    f"(a) {name}: client CPU a request over {args.rounds} rounds {min(values):.3f}-"
                    f"{max(values):.3f} ms (median {statistics.median(values):.3f}; target 0.35, budget 0.5)"
                )
        if not args.no_sdk:
            provider.reset(latency=LATENCY, record=False)
            result = sdk(provider, "single", args.single, SINGLE_RATE)
            report("(a) baseline: official SDK [asyncio]", args.single, result, provider, span_limit)
        span_limit = (-(-args.batch // 1000) - 1) / BATCH_RATE
        for choice in loops:
            for name, run in (("batch_send_all", batch), ("baseline: bare aiohttp", bare_batch)):
                provider.reset(latency=LATENCY, record=False)
                result = loop.run(run(provider, args.batch), choice)
                report(f"(b) {name} [{choice}]", args.batch, result, provider, span_limit)
        if not args.no_sdk:
            provider.reset(latency=LATENCY, record=False)
            result = sdk(provider, "batch", args.batch, BATCH_RATE)
            report("(b) baseline: official SDK [asyncio]", args.batch, result, provider, span_limit)
    finally:
        provider.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the client process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
