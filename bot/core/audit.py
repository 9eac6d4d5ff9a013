"""The audit trail as CSV: who texted whom, what, when, and whether it landed (for incident reviews).

One row per recipient of every send created since a moment, sends oldest first and each send's
recipients in their order. Full numbers and texts: the file is for the people allowed to read it
(`ACCESS_AUDIT`), never a channel. The sends are read in pages of at most AUDIT_PAGE, and their
recipients in pages of at most AUDIT_PAGE (small sends together, a large one by ranges of its index),
each written to the file off the event loop, so neither memory nor any one turn of the loop grows with
the size of the trail.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import sqlalchemy as sa

from .schema import jobs, recipients
from .store import Store

AUDIT_PAGE = 5000
# The most sends one recipients statement names: a long `IN (...)` list is compiled on the event loop
# (PostgreSQL's driver is async): with 6,000 single sends, 5,000 ids at once held the loop for 85 ms;
# in groups of 500, the worst hold was 7-8 ms (SQLite: 6-9 ms).
AUDIT_GROUP = 500
# The most recipients one file holds: about 30 MB of CSV, which Slack's upload takes from memory.
AUDIT_MAX_ROWS = 200_000
COLUMNS = (
    "send_created_utc",
    "send_id",
    "kind",
    "sent_by",
    "channel",
    "type",
    "number",
    "message",
    "state",
    "code",
    "error",
    "message_id",
    "segments",
    "delivery",
    "delivery_code",
    "delivered_utc",
    "notes",  # what else the send records: an overridden opt-out (who, why), outage groups, a re-send
)
_JOB_COLUMNS = (
    jobs.c.id,
    jobs.c.kind,
    jobs.c.created_by,
    jobs.c.channel_id,
    jobs.c.type,
    jobs.c.created_at,
    jobs.c.meta,
)
_ROW_COLUMNS = (
    recipients.c.job_id,
    recipients.c.idx,
    recipients.c.e164,
    recipients.c.message,
    recipients.c.state,
    recipients.c.code,
    recipients.c.error,
    recipients.c.message_id,
    recipients.c.segments,
    recipients.c.delivery,
    recipients.c.delivery_code,
    recipients.c.delivered_at,
)


@dataclass(frozen=True)
class AuditExport:
    sends: int  # with a row in the file
    texts: int  # recipients written
    complete: bool = True  # False: stopped at `limit` recipients; the older sends' are all there


def _utc(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def notes(meta: dict[str, Any]) -> str:
    """The parts of a send's record an audit asks about, in words."""
    said = []
    override = meta.get("optout_override")
    if isinstance(override, dict):
        said.append(f"opt-out overridden by {override.get('by')}: “{override.get('reason') or ''}”")
    if meta.get("outage"):
        groups = ", ".join(str(g) for g in meta.get("groups") or [])
        said.append(("outage test" if meta.get("test") else "outage") + (f" to {groups}" if groups else ""))
    if meta.get("retry_of"):
        said.append(f"sent again from {meta['retry_of']}")
    return "; ".join(said)


def _write(writer: Any, job: tuple, rows: Iterable[tuple]) -> None:
    job_id, kind, by, channel, type_, created, meta = job
    try:
        loaded = json.loads(meta or "{}")
    except ValueError:
        loaded = {}
    head = (_utc(created), job_id, kind, by, channel or "", type_ or "")
    tail = (notes(loaded) if isinstance(loaded, dict) else "",)
    for _, _, e164, message, state, code, error, msg_id, segments, delivery, dcode, delivered in rows:
        writer.writerow(
            (*head, e164, message, state, code or "", error or "", msg_id or "", "" if segments is None else segments,
             delivery or "", dcode or "", _utc(delivered), *tail)
        )  # fmt: skip


def _write_all(writer: Any, pages: list[tuple[tuple, list[tuple]]]) -> None:
    for job, rows in pages:
        _write(writer, job, rows)


def _pages(sends: Sequence[tuple], totals: dict[str, int]) -> Iterable[list[tuple]]:
    """The sends in groups whose recipients fit in a page, at most AUDIT_GROUP of them; a send larger than
    a page alone."""
    group: list[tuple] = []
    size = 0
    for job in sends:
        total = totals[job[0]]
        if group and (size + total > AUDIT_PAGE or len(group) == AUDIT_GROUP):
            yield group
            group, size = [], 0
        group.append(job)
        size += total
    if group:
        yield group


async def export_audit(store: Store, since: float, out: TextIO, limit: int | None = None) -> AuditExport:
    """Write the trail of the sends created at or after `since` (epoch seconds) to `out` as CSV, at most
    `limit` (default AUDIT_MAX_ROWS) recipients."""
    limit = AUDIT_MAX_ROWS if limit is None else limit
    writer = csv.writer(out)
    await asyncio.to_thread(writer.writerow, COLUMNS)
    texts = 0
    written: set[str] = set()  # the sends with a row in the file
    after: tuple[float, str] | None = None  # the last send read: the next page starts after it
    while True:  # the period's sends, a page at a time
        query = sa.select(*_JOB_COLUMNS, jobs.c.total).where(jobs.c.created_at >= since)
        if after is not None:
            query = query.where(sa.tuple_(jobs.c.created_at, jobs.c.id) > sa.tuple_(*after))
        query = query.order_by(jobs.c.created_at, jobs.c.id).limit(AUDIT_PAGE)
        found = await store.read(lambda conn, q=query: [tuple(r) for r in conn.execute(q)])
        sends = [r[:-1] for r in found]
        totals = {r[0]: int(r[-1]) for r in found}
        for group in _pages(sends, totals):
            ids = [job[0] for job in group]
            last = -1
            while True:  # one statement for a group of small sends; a large send in ranges of its index
                page_query = (
                    sa.select(*_ROW_COLUMNS)
                    .where(recipients.c.job_id.in_(ids), recipients.c.idx > last)
                    .order_by(recipients.c.job_id, recipients.c.idx)
                    .limit(AUDIT_PAGE)
                )
                page = await store.read(lambda conn, q=page_query: [tuple(r) for r in conn.execute(q)])
                by_job: dict[str, list[tuple]] = {}
                for row in page:
                    by_job.setdefault(row[0], []).append(row)
                ordered = [(job, by_job.get(job[0], [])) for job in group]  # the sends' order, oldest first
                room = limit - texts
                cut = len(page) > room
                for k, (job, rows) in enumerate(ordered):  # past `limit`, the newest are left out
                    ordered[k] = (job, rows[: max(room, 0)])
                    room -= len(rows)
                await asyncio.to_thread(_write_all, writer, ordered)
                texts += sum(len(rows) for _, rows in ordered)
                written.update(job[0] for job, rows in ordered if rows)
                if cut:
                    return AuditExport(sends=len(written), texts=texts, complete=False)
                if len(page) < AUDIT_PAGE or len(ids) > 1:
                    break
                last = page[-1][1]
        if len(found) < AUDIT_PAGE:
            return AuditExport(sends=len(written), texts=texts)
        after = (found[-1][5], found[-1][0])
