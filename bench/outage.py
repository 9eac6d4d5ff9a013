"""Outage SMS: a 2,000-member contact group from the confirmation to the last provider answer.

Physical limit: 2,000 single sends at 2,000/s plus one round trip (50 ms) = 1.05 s. The fake provider
runs in its own process and throttles anything faster; every recipient's state is persisted as in
production (in flight before the request, the outcome after).

    .venv/bin/python -m bench.outage
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bot.sms.simulator import ProviderProcess
from tests.harness import Bot
from tests.test_outage import ONCALL, open_outage, outage_values

N = 2000
LATENCY = 0.05


async def main() -> None:
    provider = ProviderProcess(latency=LATENCY)
    provider.reset(latency=LATENCY, record=False)
    with tempfile.TemporaryDirectory() as tmp:
        members = ",\n".join(
            f'  {{ name = "P{i}", number = "+65 8{100 + i // 10000:03d} {i % 10000:04d}" }}' for i in range(N)
        )
        groups = Path(tmp) / "groups.toml"
        groups.write_text(f"[groups.everyone]\nmembers = [\n{members}\n]\n")
        async with Bot(
            provider,
            Path(tmp),
            ACCESS_OUTAGE=ONCALL,
            CONTACT_GROUPS_FILE=str(groups),
            BULK_DAILY_SEGMENTS=1_000_000,
        ) as bot:
            form = await open_outage(bot)
            body = (
                await bot.submit_view(
                    form,
                    outage_values(
                        groups=["everyone"],
                        service="Payments API",
                        status="Investigating",
                        details="Card payments fail",
                    ),
                    user=ONCALL,
                    view_id="VB",
                )
            ).json()
            confirm = body["view"]
            answers: list[float] = []
            record = bot.runtime.store.record_outcomes

            def recording(job_id, outcomes):
                answers.append(time.perf_counter())
                return record(job_id, outcomes)

            bot.runtime.store.record_outcomes = recording
            t0 = time.perf_counter()
            values = {
                "sms-bulk-typed-count": {
                    "sms-bulk-typed-count-input": {"type": "plain_text_input", "value": str(N)}
                }
            }
            await bot.submit_view(confirm, values, user=ONCALL, view_id="VBC")
            (job_id,) = await bot.runtime.worker.wait_submitted(1)
            summary = await bot.runtime.worker.wait(job_id)
            wall = answers[-1] - t0
    counts = provider.counts
    provider.close()
    limit = N / 2000 + LATENCY
    print(
        f"outage: {summary.accepted:,} of {N:,} accepted in {wall:.2f} s from confirmation to the last answer; "
        f"physical limit {limit:.2f} s; ratio {wall / limit:.2f}x; throttling answers {counts['throttled']}"
    )


if __name__ == "__main__":
    asyncio.run(main())
