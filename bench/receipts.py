"""Delivery receipts under load, through the real bot (`python -m bot` processes, fake Slack, fake provider
in its own process with 50 ms latency).

A 10,000-recipient bulk and a 2,000-member outage are confirmed together; the fake provider pushes a
receipt for every accepted message 0.2 s after acceptance, 100 per push, every second receipt twice (about
2,000 receipts a second while the sends run), some not delivered. Measured: how long the bot takes to
answer each push (the provider's side of the exchange; the bot answers after storing), whether every
receipt is stored and matched once, the final counts, and the chat.update calls against the workspace
budget (SLACK_UPDATES_PER_MINUTE, 40).

    .venv/bin/python -m bench.receipts
    .venv/bin/python -m bench.receipts --replicas 2 --database postgresql
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import sqlalchemy as sa

from bot.core.schema import receipts as inbox
from bot.core.schema import recipients
from tests.processes import until, wait_done
from tests.test_bulk import LEAD, bulk_values, confirm, csv_list, review
from tests.test_outage import ONCALL, open_outage, outage_values

from .cluster import LATENCY, arguments, cluster, temporary

BULK, OUTAGE = 10_000, 2_000
TOKEN = "bench-receipts-token-0123456789"
UNDELIVERED = "13"  # numbers ending so are reported not delivered (1 in 100)


async def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    with temporary() as tmp:
        members = ",\n".join(f'  {{ name = "P{i}", number = "+65 9100 {i:04d}" }}' for i in range(OUTAGE))
        groups = Path(tmp) / "groups.toml"
        groups.write_text(f"[groups.everyone]\nmembers = [\n{members}\n]\n")
        env = {
            "ACCESS_OUTAGE": ONCALL,
            "ACCESS_BULK": LEAD,
            "CONTACT_GROUPS_FILE": str(groups),
            "BULK_DAILY_SEGMENTS": "1000000",
            "RECEIPTS_TOKEN": TOKEN,
            "SLACK_UPDATES_PER_MINUTE": "40",
        }
        async with cluster(args, Path(tmp), **env) as c:
            c.provider.reset(
                latency=LATENCY, record=False, receipts_url=f"{c.replicas[-1].process.url}/receipts/{TOKEN}",
                receipt_delay=0.2, push_batch=100, duplicate_every=2, shuffle=True,
                undelivered_suffixes=[UNDELIVERED],
            )  # fmt: skip
            on = c.replicas[-1]
            file = c.slack.add_file("customers.csv", csv_list(BULK))
            bulk_view = await review(on, bulk_values(file=file, message="Hi {name}, your order shipped."))
            form = await open_outage(on)
            values = outage_values(
                groups=["everyone"], service="Payments", status="Down", details="Cards fail"
            )
            outage_view = (await on.submit_view(form, values, user=ONCALL, view_id="VO")).json()["view"]
            typed = {"sms-bulk-typed-count": {"sms-bulk-typed-count-input": {"type": "plain_text_input"}}}
            typed["sms-bulk-typed-count"]["sms-bulk-typed-count-input"]["value"] = str(OUTAGE)
            idle = await baseline_pushes(f"{c.replicas[-1].process.url}/receipts/{TOKEN}")
            updates_before = len(c.slack.called("chat.update"))
            t0 = time.monotonic()
            await confirm(on, bulk_view, typed=str(BULK))
            await on.submit_view(outage_view, typed, user=ONCALL, view_id="VOC")
            jobs = await c.store.unfinished_jobs()
            for job in jobs:
                await wait_done(c.store, job.id, limit=120)
            sent = time.monotonic() - t0

            def matched_and_left(conn: sa.Connection) -> tuple[int, int]:
                matched = conn.execute(
                    sa.select(sa.func.count()).where(recipients.c.delivery.is_not(None))
                ).scalar_one()
                return matched, conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one()

            async def all_matched() -> int | None:
                matched, left = await c.store.read(matched_and_left)
                return matched if matched >= BULK + OUTAGE and left == 0 else None

            await until(all_matched, 120, "every receipt matched", every=0.2)
            settled = time.monotonic() - t0
            summaries = [await c.store.summary(job.id) for job in jobs]
            # the last coalesced edits: up to one per job and message, inside the budget
            await asyncio.sleep(10)
            calls = [u.at for u in c.slack.called("chat.update")[updates_before:]]
            counts = c.provider.counts
            push_ms = sorted(c.provider.push_ms)
            health = [await r.process.health() for r in c.replicas]
            where = c.describe()
    expected_undelivered = sum(1 for i in range(BULK) if f"{i % 10000:04d}".endswith(UNDELIVERED)) + sum(
        1 for i in range(OUTAGE) if f"{i:04d}".endswith(UNDELIVERED)
    )
    delivered = sum(s.delivered for s in summaries)
    undelivered = sum(s.undelivered for s in summaries)
    stored = sum(h["receipts"]["stored"] for h in health) - len(idle) * 100
    duplicates = sum(h["receipts"]["duplicates"] for h in health)
    window = max((sum(1 for t in calls if s <= t < s + 60) for s in calls), default=0)
    span = (calls[-1] - calls[0]) if len(calls) > 1 else 0.0
    p99 = push_ms[int(len(push_ms) * 0.99) - 1] if push_ms else float("nan")
    print(
        f"[{where}] receipts: {counts['receipts_pushed']:,} pushed in {len(push_ms):,} pushes "
        f"({counts['receipts_pushed'] / sent:,.0f}/s while sending for {sent:.1f} s), {counts['push_failures']} "
        f"failed pushes; push answered p50 {statistics.median(push_ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {push_ms[-1]:.1f} ms (target p99 < 100)"
    )
    inside = health[-1]["receipt_pushes"]
    print(
        f"[{where}] the same pushes as the bot timed them, from arrival to answer: p50 {inside['p50_ms']} ms, "
        f"p99 {inside['p99_ms']} ms, max {inside['max_ms']} ms (the rest is waiting to be read)"
    )
    print(
        f"[{where}] baseline, the same endpoint with no send running: {len(idle)} pushes of 100 at 20/s "
        f"answered p50 {statistics.median(idle):.1f} ms, p99 {idle[int(len(idle) * 0.99) - 1]:.1f} ms; "
        f"under load p99 is {p99 / idle[int(len(idle) * 0.99) - 1]:.1f}x that"
    )
    print(
        f"[{where}] stored {stored:,} (pushed {counts['receipts_pushed']:,}), {duplicates:,} duplicates ignored; "
        f"all {BULK + OUTAGE:,} recipients settled {settled:.1f} s after confirmation; delivered {delivered:,}, "
        f"not delivered {undelivered:,} (expected {BULK + OUTAGE - expected_undelivered:,} / "
        f"{expected_undelivered:,}): {'exact' if undelivered == expected_undelivered else 'MISMATCH'}"
    )
    print(
        f"[{where}] Slack chat.update: {len(calls)} calls over {span:.0f} s, at most {window} in any 60 s "
        f"(budget 40/min; Slack's Tier 3 about 50)"
    )


async def baseline_pushes(url: str, seconds: float = 3.0) -> list[float]:
    """Pushes of 100 receipts for a task the bot never had (stored, then dropped as not ours), 20 a second,
    from this process: the endpoint's answer time without the load of a send."""
    import httpx

    body = [
        {"To": f"6590000{i:03d}", "Status": "1", "MessageId": f"idle-{i}", "TaskId": "not-ours"}
        for i in range(100)
    ]
    times: list[float] = []
    async with httpx.AsyncClient(timeout=10) as http:
        start = time.monotonic()
        for k in range(int(seconds * 20)):
            await asyncio.sleep(max(0.0, start + k / 20 - time.monotonic()))
            t0 = time.perf_counter()
            resp = await http.post(url, json=body)
            times.append((time.perf_counter() - t0) * 1000)
            assert resp.json()["code"] == 0, resp.text
    return sorted(times)


if __name__ == "__main__":
    asyncio.run(main())
