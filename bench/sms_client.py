"""Throughput of the shared SMS client against the provider's limits.

(a) 2,000 single sends through `fan_out`, provider latency 50 ms: limit 2,000 at 2,000/s = 1.0 s.
(b) 10,000 recipients through `batch_send_all`: 10 calls at 1/s = 9 s between the first and the
    last call, plus one round trip.
The fake provider runs in its own process (as the real one is remote), enforcing the same limits.

    .venv/bin/python -m bench.sms_client
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

from bot.sms import SmsClient, SmsSettings, Status, batch_send_all, fan_out, parse_number
from bot.sms.simulator import ProviderProcess

LATENCY = 0.05


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
        t0 = time.perf_counter()
        outcomes = await fan_out(client, requests)
        wall = time.perf_counter() - t0
    limit = n / client.settings.single_rate + LATENCY
    accepted = sum(o.status == Status.ACCEPTED for o in outcomes)
    return {"wall": wall, "limit": n / client.settings.single_rate, "floor": limit, "accepted": accepted}


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


def report(name: str, n: int, result: dict[str, float], provider: ProviderProcess) -> None:
    counts = provider.counts
    ratio = result["wall"] / result["limit"]
    print(
        f"{name}: {n:,} recipients in {result['wall']:.2f} s; physical limit {result['limit']:.2f} s; "
        f"ratio {ratio:.3f}x; accepted {int(result['accepted']):,}; throttled answers {counts['throttled']}; "
        f"provider requests {counts['requests']:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    provider = ProviderProcess(latency=LATENCY)
    try:
        provider.reset(latency=LATENCY, record=False)
        result = asyncio.run(single(provider, args.single))
        report("(a) fan_out single sends", args.single, result, provider)
        provider.reset(latency=LATENCY, record=False)
        result = asyncio.run(batch(provider, args.batch))
        report("(b) batch_send_all", args.batch, result, provider)
    finally:
        provider.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the client process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
