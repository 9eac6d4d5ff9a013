"""Outage SMS: a 2,000-member contact group from the confirmation to the last provider answer stored.

Physical limit: 2,000 single sends at 2,000/s plus one round trip (50 ms) = 1.05 s. The bot runs as
`python -m bot` processes; the fake provider runs in its own process and throttles anything faster;
every recipient's state is persisted as in production (in flight after the grant, the outcome after).
With several replicas the form goes to one replica and the confirmation to another.

    .venv/bin/python -m bench.outage
    .venv/bin/python -m bench.outage --replicas 2 --database postgresql
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.test_outage import ONCALL, open_outage, outage_values

from .cluster import LATENCY, arguments, cluster, temporary

N = 2000


async def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    with temporary() as tmp:
        members = ",\n".join(
            f'  {{ name = "P{i}", number = "+65 8{100 + i // 10000:03d} {i % 10000:04d}" }}' for i in range(N)
        )
        groups = Path(tmp) / "groups.toml"
        groups.write_text(f"[groups.everyone]\nmembers = [\n{members}\n]\n")
        env = {"ACCESS_OUTAGE": ONCALL, "CONTACT_GROUPS_FILE": str(groups), "BULK_DAILY_SEGMENTS": "1000000"}
        async with cluster(args, Path(tmp), **env) as c:
            form_on, confirm_on = c.replicas[-1], c.replicas[0 if len(c.replicas) == 1 else -2]
            form = await open_outage(form_on)
            values = outage_values(
                groups=["everyone"],
                service="Payments API",
                status="Investigating",
                details="Card payments fail",
            )
            body = (await form_on.submit_view(form, values, user=ONCALL, view_id="VB")).json()
            typed = {
                "sms-bulk-typed-count": {
                    "sms-bulk-typed-count-input": {"type": "plain_text_input", "value": str(N)}
                }
            }
            await c.loop_lag()  # from here on
            t0 = time.time()
            p0 = time.perf_counter()
            answer = (await confirm_on.submit_view(body["view"], typed, user=ONCALL, view_id="VBC")).json()
            ack = time.perf_counter() - p0
            assert answer == {"response_action": "clear"}, answer
            wall, summary = await c.finish_the_job(t0)
            lag = await c.loop_lag()
            counts = c.provider.counts
            where = c.describe()
    limit = N / 2000 + LATENCY
    print(
        f"[{where}] outage: confirmation acked in {ack * 1000:.0f} ms; {summary.accepted:,} of {N:,} accepted "
        f"in {wall:.2f} s from confirmation to the last answer; physical limit {limit:.2f} s; "
        f"ratio {wall / limit:.2f}x; throttling answers {counts['throttled']}; "
        f"worst event-loop lag {lag:.0f} ms (target 20)"
    )


if __name__ == "__main__":
    asyncio.run(main())
