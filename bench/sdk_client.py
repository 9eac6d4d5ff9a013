"""The official SDK's async client (`alibabacloud_dysmsapi20180501`) as a baseline for bench.sms_client.

Runs in its own virtual environment (`bench/.sdk-venv`, made by bench.sms_client on first use), so that
the SDK and what it pulls in (requests, cryptography, its own aiohttp) never enter the bot's. It imports
nothing of this repository. It paces as our client does (a request may start every 1/rate seconds), and
prints one JSON line: wall seconds, process CPU per request in ms, accepted, and errors by kind.

    bench/.sdk-venv/bin/python bench/sdk_client.py --url URL --key-id ID --secret S --mode single -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from urllib.parse import urlsplit

from alibabacloud_dysmsapi20180501 import models
from alibabacloud_dysmsapi20180501.client import Client
from alibabacloud_tea_openapi import models as openapi_models
from alibabacloud_tea_util import models as util_models

MARGIN = 0.02  # the same margin as our limiter's default (SMS_RATE_MARGIN)


def numbers(n: int) -> list[str]:
    return [f"65{81000000 + i}" for i in range(n)]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--mode", choices=("single", "batch"), required=True)
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--connections", type=int, default=400)
    args = parser.parse_args()
    url = urlsplit(args.url)
    client = Client(
        openapi_models.Config(
            access_key_id=args.key_id,
            access_key_secret=args.secret,
            endpoint=url.netloc,
            protocol=url.scheme,
        )
    )
    runtime = util_models.RuntimeOptions(max_idle_conns=args.connections, autoretry=False)
    errors: Counter[str] = Counter()
    accepted = 0
    interval = (1 + MARGIN) / args.rate
    slots = asyncio.Semaphore(args.connections)

    async def single(i: int, to: str) -> None:
        nonlocal accepted
        async with slots:
            request = models.SendMessageToGlobeRequest(to=to, message=f"Outage: payments API degraded ({i})")
            try:
                resp = await client.send_message_to_globe_with_options_async(request, runtime)
                if resp.body.response_code == "OK":
                    accepted += 1
                else:
                    errors[str(resp.body.response_code)] += 1
            except Exception as exc:  # a baseline counts every kind of failure
                errors[type(exc).__name__] += 1

    async def batch(chunk: list[str]) -> None:
        nonlocal accepted
        request = models.BatchSendMessageToGlobeRequest(
            to=json.dumps(chunk),
            message=json.dumps([f"Hello customer {n}, your order has shipped." for n in chunk]),
            type="NOTIFY",
        )
        try:
            resp = await client.batch_send_message_to_globe_with_options_async(request, runtime)
            if resp.body.response_code == "OK":
                accepted += len(chunk)
            else:
                errors[str(resp.body.response_code)] += len(chunk)
        except Exception as exc:
            errors[type(exc).__name__ + ": " + str(exc)[:80]] += len(chunk)

    to = numbers(args.n)
    t0, cpu0 = time.perf_counter(), time.process_time()
    tasks = []
    units = (
        [[n] for n in to] if args.mode == "single" else [to[i : i + 1000] for i in range(0, len(to), 1000)]
    )
    for k, unit in enumerate(units):
        wait = t0 + k * interval - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        coro = single(k, unit[0]) if args.mode == "single" else batch(unit)
        tasks.append(asyncio.create_task(coro))
    await asyncio.gather(*tasks)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(
        json.dumps(
            {"wall": wall, "cpu_ms": cpu / len(units) * 1000, "accepted": accepted, "errors": dict(errors)}
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
