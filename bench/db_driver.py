"""The PostgreSQL driver, chosen by measurement: the store's own hot calls through asyncpg and psycopg 3
(both async, through SQLAlchemy), against one PostgreSQL server started here, alternating.

- create_job: one single send's job and recipient (what `/sms` writes before its ack), 300 in a row;
- mark 1,000 in flight (a batch chunk between the limiter's grant and the write), 10 in a row;
- claim a 10,000-recipient draft into its job (the bulk confirmation).

    .venv/bin/pip install 'psycopg[binary]'   # not a dependency: only this comparison uses it
    .venv/bin/python -m bench.db_driver
"""

from __future__ import annotations

import asyncio
import statistics
import time

from bot.core import db
from bot.core.store import JobKind, NewRecipient, Store
from bot.sms.phone import PhoneNumber
from tests.pg import PostgresServer

DRIVERS = {"asyncpg": "postgresql+asyncpg", "psycopg": "postgresql+psycopg"}


async def measure(url: str) -> dict[str, float]:
    engine = db.create_engine(url)
    await db.upgrade(engine)
    store = Store(engine)
    one = [NewRecipient(PhoneNumber("+6581000001", 65, "81000001", "SG"), "Hi", 1)]
    many = [
        NewRecipient(PhoneNumber(f"+6581{i:06d}", 65, f"81{i:06d}", "SG"), f"Hi {i}", 1)
        for i in range(10_000)
    ]
    for _ in range(20):
        await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=one)
    t = time.perf_counter()
    for _ in range(300):
        await store.create_job(kind=JobKind.SINGLE, created_by="U1", recipients=one)
    create = (time.perf_counter() - t) / 300
    draft = await store.create_draft("U1")
    await store.fill_draft(draft, {}, many)
    t = time.perf_counter()
    job_id, _ = await store.claim_draft_into_job(draft, kind=JobKind.BATCH, created_by="U1")
    claim = time.perf_counter() - t
    await store.claim_jobs("bench", time.time() + 600, limit=1000)
    marks = []
    for k in range(10):
        t = time.perf_counter()
        await store.mark_in_flight(job_id, range(k * 1000, (k + 1) * 1000), owner="bench", fence=2)
        marks.append(time.perf_counter() - t)
    await store.close()
    return {
        "create_job ms": create * 1000,
        "mark 1,000 ms": statistics.median(marks) * 1000,
        "claim 10,000 ms": claim * 1000,
    }


async def main() -> None:
    server = PostgresServer()
    try:
        for rnd in range(3):
            for name, scheme in DRIVERS.items():
                url = server.create_database().replace("postgresql://", f"{scheme}://")
                figures = await measure(url)
                print(
                    f"round {rnd + 1} {name:8s} " + "  ".join(f"{k} {v:6.2f}" for k, v in figures.items()),
                    flush=True,
                )
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
