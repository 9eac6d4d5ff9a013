"""Bulk sends, measured end to end through the real bot (fake Slack, fake provider in its own process).

1. A 10,000-line CSV attached to the bulk form: time to Slack's answer (the ack), and time until the
   confirmation is shown (download, validation of every number, rendering, segments, draft stored).
2. 10,000 recipients from the confirmation to the last provider answer: physical limit 10 calls at
   1/s = 9 s plus one round trip (50 ms); throttling answers; Slack progress updates per minute.

    .venv/bin/python -m bench.bulk
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bot.sms.simulator import ProviderProcess
from tests.harness import Bot
from tests.test_bulk import LEAD, bulk_values, confirm, csv_list, open_form

N = 10_000
LATENCY = 0.05


async def main() -> None:
    provider = ProviderProcess(latency=LATENCY)
    provider.reset(latency=LATENCY, record=False)
    with tempfile.TemporaryDirectory() as tmp:
        async with Bot(provider, Path(tmp), ACCESS_BULK=LEAD, BULK_DAILY_SEGMENTS=1_000_000) as bot:
            file = bot.slack.add_file("customers.csv", csv_list(N))
            form = await open_form(bot)
            t0 = time.perf_counter()
            resp = await bot.submit_view(
                form,
                bulk_values(file=file, message="Hi {name}, your order shipped."),
                user=LEAD,
                view_id="VBENCH",
            )
            ack = time.perf_counter() - t0
            assert resp.json()["response_action"] == "push"
            (update,) = await bot.slack.wait_for("views.update", 1, limit=30)
            shown = time.perf_counter() - t0
            view = update.params["view"]
            assert view["submit"]["text"] == f"Send {N:,} SMS", view

            answers: list[float] = []
            record = bot.runtime.store.record_outcomes

            def recording(job_id, outcomes):  # the moment each provider answer is stored
                answers.append(time.perf_counter())
                return record(job_id, outcomes)

            bot.runtime.store.record_outcomes = recording
            t1 = time.perf_counter()
            await confirm(bot, view, typed=str(N))
            confirm_ack = time.perf_counter() - t1
            (job_id,) = await bot.runtime.worker.wait_submitted(1)
            summary = await bot.runtime.worker.wait(job_id)
            wall = answers[-1] - t1
            updates = len(bot.slack.called("chat.update"))
    counts = provider.counts
    provider.close()
    limit = (N // 1000 - 1) + LATENCY
    print(
        f"validation: {N:,}-line CSV acked in {ack * 1000:.0f} ms; confirmation shown after {shown:.2f} s "
        f"(Slack's limit for the ack: 3 s)"
    )
    print(
        f"send: confirmation acked in {confirm_ack * 1000:.0f} ms; "
        f"{summary.accepted:,} accepted of {N:,} in {wall:.2f} s from confirmation to the last answer; "
        f"physical limit {limit:.2f} s; ratio {wall / limit:.3f}x; throttling answers {counts['throttled']}; "
        f"Slack chat.update calls {updates} ({updates / wall * 60:.0f}/min)"
    )


if __name__ == "__main__":
    asyncio.run(main())
