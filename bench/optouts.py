"""The bulk confirmation against a large opt-out list, through the real bot (`python -m bot` processes,
fake Slack, fake provider).

A 10,000-line CSV attached to the bulk form: time until the confirmation is shown, first with an empty
opt-out list (the baseline, in the same run), then with 100,000 numbers on it, 1,000 of them in the CSV
(the confirmation must say "1,000 suppressed"). Target: the confirmation within 1 s either way.

    .venv/bin/python -m bench.optouts
    .venv/bin/python -m bench.optouts --replicas 2 --database postgresql
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bot.core.optouts import OptOuts
from bot.sms.phone import parse_number
from tests.test_bulk import LEAD, bulk_values, csv_list, review, sg

from .cluster import arguments, cluster, temporary

N = 10_000
LISTED = 100_000
RUNS = 3


async def shown(replica, slack, name: str) -> tuple[float, str]:
    file = slack.add_file(name, csv_list(N))
    t0 = time.perf_counter()
    view = await review(replica, bulk_values(file=file, message="Hi {name}, your order shipped."))
    return time.perf_counter() - t0, json.dumps(view, ensure_ascii=False)


async def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    with temporary() as tmp:
        async with cluster(args, Path(tmp), ACCESS_BULK=LEAD, BULK_DAILY_SEGMENTS="100000000") as c:
            form_on = c.replicas[-1]
            baseline = []
            for k in range(RUNS):
                seconds, view = await shown(form_on, c.slack, f"before-{k}.csv")
                assert "suppressed" not in view, view[:500]
                baseline.append(seconds)
            # 99,000 numbers nobody in the CSV has, and every tenth number of the CSV
            others = [f"+6590{i:06d}" for i in range(LISTED - N // 10)]
            ours = [parse_number(sg(i)).e164 for i in range(0, N, 10)]
            t0 = time.perf_counter()
            await OptOuts(c.store).add(others + ours, by="UBENCH", source="bench")
            seeded = time.perf_counter() - t0
            listed = []
            for k in range(RUNS):
                seconds, view = await shown(form_on, c.slack, f"after-{k}.csv")
                assert f"{N // 10:,} suppressed" in view, view[:500]
                listed.append(seconds)
            where = c.describe()
    print(f"[{where}] {LISTED:,} opt-outs stored in {seeded:.1f} s")
    print(
        f"[{where}] {N:,}-line CSV, confirmation shown: empty opt-out list "
        + ", ".join(f"{s:.2f}" for s in baseline)
        + f" s; with {LISTED:,} opt-outs ({N // 10:,} of them in the list) "
        + ", ".join(f"{s:.2f}" for s in listed)
        + f" s; median ratio {sorted(listed)[RUNS // 2] / sorted(baseline)[RUNS // 2]:.2f}x (target: < 1 s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
