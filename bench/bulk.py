"""Bulk sends, measured end to end through the real bot (`python -m bot` processes, fake Slack, fake
provider in its own process with 50 ms latency).

1. A 10,000-line CSV attached to the bulk form: time until the confirmation is shown (download,
   validation of every number, rendering, segments, draft stored).
2. 10,000 recipients from the confirmation to the last provider answer stored: physical limit 10 calls
   at 1/s = 9 s plus one round trip (50 ms); throttling answers; Slack progress updates per minute;
   the confirmation's ack; the worst event-loop lag of any replica; the memory the bulk added to the
   sending replica (its peak resident set from the form to the end over its resident set before; with
   one replica it also checked the list).

`--recipients N` sends N instead (BULK_MAX_RECIPIENTS is raised to N where needed), e.g. 50,000 for the
confirmation's ack at five times the default maximum (target 50 ms).

With several replicas the form goes to one replica and the confirmation to another (a load balancer).

    .venv/bin/python -m bench.bulk
    .venv/bin/python -m bench.bulk --replicas 2 --database postgresql
    .venv/bin/python -m bench.bulk --recipients 50000
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.test_bulk import LEAD, bulk_values, confirm, csv_list, review

from .cluster import LATENCY, arguments, cluster, temporary

N = 10_000


async def main() -> None:
    args = arguments(__doc__.splitlines()[0], recipients=N)
    n = args.recipients
    env = {"ACCESS_BULK": LEAD, "BULK_DAILY_SEGMENTS": str(100 * n), "BULK_MAX_RECIPIENTS": str(max(n, N))}
    with temporary() as tmp:
        async with cluster(args, Path(tmp), **env) as c:
            form_on, confirm_on = c.replicas[-1], c.replicas[0 if len(c.replicas) == 1 else -2]
            file = c.slack.add_file("customers.csv", csv_list(n))
            rss_before = c.rss_mib()
            t0 = time.perf_counter()
            view = await review(form_on, bulk_values(file=file, message="Hi {name}, your order shipped."))
            shown = time.perf_counter() - t0
            assert view["submit"]["text"] == f"Send {n:,} SMS", view
            await c.loop_lag()  # from here on
            t1 = time.time()
            p1 = time.perf_counter()
            answer = await confirm(confirm_on, view, typed=str(n))
            confirm_ack = time.perf_counter() - p1
            assert answer == {"response_action": "clear"}, answer
            wall, summary = await c.finish_the_job(t1)
            lag = await c.loop_lag()
            added = c.rss_mib(peak=True) - rss_before
            updates = len(c.slack.called("chat.update"))
            counts = c.provider.counts
            where = c.describe()
    limit = (-(-n // 1000) - 1) + LATENCY
    print(f"[{where}] validation: {n:,}-line CSV, confirmation shown after {shown:.2f} s (form to view)")
    print(
        f"[{where}] send: confirmation acked in {confirm_ack * 1000:.0f} ms (target 50); "
        f"{summary.accepted:,} accepted of {n:,} in {wall:.2f} s from confirmation to the last answer; "
        f"physical limit {limit:.2f} s; ratio {wall / limit:.3f}x; throttling answers {counts['throttled']}; "
        f"Slack chat.update calls {updates} ({updates / wall * 60:.0f}/min); "
        f"worst event-loop lag {lag:.0f} ms (target 20); the bulk added {added:.0f} MiB to the sending "
        f"replica (its peak from the form to the end over its size before; target 20)"
    )


if __name__ == "__main__":
    asyncio.run(main())
