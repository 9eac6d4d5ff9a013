"""Throughput of the shared SMS client against the provider's limits.

(a) 2,000 single sends through `fan_out`, provider latency 50 ms: limit 2,000 at 2,000/s = 1.0 s.
(b) 10,000 recipients through `batch_send_all`: 10 calls at 1/s = 9 s between the first and the
    last call, plus one round trip.
The fake provider runs in its own process (as the real one is remote), enforcing the same limits.

    .venv/bin/python -m bench.sms_client
"""

from __future__ import annotations

import argparse
import resource
import time

from bot.sms import SmsClient, SmsSettings, Status, batch_send_all, fan_out, loop, parse_number
from bot.sms.loop import LoopChoice
from bot.sms.simulator import ProviderProcess

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


def report(name: str, n: int, result: dict[str, float], provider: ProviderProcess, span_limit: float) -> None:
    """`span_limit`: the least time the provider's limit allows between the first and the last request."""
    counts = provider.counts
    span = counts["span_us"] / 1e6
    print(
        f"{name}: {n:,} recipients; first → last request at the provider {span:.3f} s, limit "
        f"{span_limit:.3f} s, ratio {span / span_limit:.3f}x; whole call {result['wall']:.2f} s; "
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
    args = parser.parse_args()
    loops: list[LoopChoice] = ["uvloop", "asyncio"] if args.loop == "both" else [args.loop]
    provider = ProviderProcess(latency=LATENCY)
    try:
        for choice in loops:
            provider.reset(latency=LATENCY, record=False)
            result = loop.run(single(provider, args.single), choice)
            span_limit = (args.single - 1) / SINGLE_RATE
            report(f"(a) fan_out single sends [{choice}]", args.single, result, provider, span_limit)
        for choice in loops:
            provider.reset(latency=LATENCY, record=False)
            result = loop.run(batch(provider, args.batch), choice)
            span_limit = (-(-args.batch // 1000) - 1) / BATCH_RATE
            report(f"(b) batch_send_all [{choice}]", args.batch, result, provider, span_limit)
    finally:
        provider.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the client process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
