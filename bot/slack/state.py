"""What the Slack layer remembers, in tables of its own: the customer thread of each number in each
channel, and the messages it posted for each job (the parent and thread, or why it could not post).

Core never reads these. They live in the same database (one migration history, bot/core/migrations/)
and go through the store's transaction runner, so they are shared by every replica.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bot.core.store import Store

metadata = sa.MetaData()

slack_threads = sa.Table(
    "slack_threads",
    metadata,
    sa.Column("channel_id", sa.Text, primary_key=True),
    sa.Column("e164", sa.Text, primary_key=True),
    sa.Column("thread_ts", sa.Text, nullable=False),
)

slack_posts = sa.Table(
    "slack_posts",
    metadata,
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("parent_ts", sa.Text),  # the job's parent message (a single send's, or a bulk's progress)
    sa.Column("thread_ts", sa.Text),  # where its outcome and summary go
    sa.Column("post_error", sa.Text),  # why the bot could not post in the channel (e.g. not_in_channel)
    sa.Column("thread_existing", sa.Integer, nullable=False, server_default="0"),  # an earlier send's thread
    sa.Column("outcome_ts", sa.Text),  # a single send's outcome message (edited when its receipt comes)
)


@dataclass(frozen=True)
class Post:
    job_id: str
    parent_ts: str | None = None
    thread_ts: str | None = None
    post_error: str | None = None
    thread_existing: bool = False
    outcome_ts: str | None = None


class SlackState:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._upserts: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}

    def _upsert(self, table: sa.Table, keys: list[str], fields: Iterable[str]) -> Any:
        """The INSERT … ON CONFLICT DO UPDATE of `fields` into `table` (one row per `keys`), the values to
        be given to `execute`. Built once for each table, conflict target and set of fields, on first
        use: building its `excluded` row each time cost 0.15-0.25 ms of the event loop's time, several
        times a send."""
        fields = tuple(fields)
        cache_key = (table.name, tuple(keys), fields)  # the conflict target is part of the statement too
        stmt = self._upserts.get(cache_key)
        if stmt is None:
            insert = self.store.dialect_insert(table)
            changed = {k: insert.excluded[k] for k in fields if k not in keys}
            stmt = insert.on_conflict_do_update(index_elements=keys, set_=changed)
            self._upserts[cache_key] = stmt
        return stmt

    async def thread_for(self, channel_id: str, e164: str) -> str | None:
        t = slack_threads.c
        query = sa.select(t.thread_ts).where(t.channel_id == channel_id, t.e164 == e164)
        return await self.store.read(lambda conn: conn.execute(query).scalar())

    async def remember_thread(self, channel_id: str, e164: str, thread_ts: str) -> None:
        values = {"channel_id": channel_id, "e164": e164, "thread_ts": thread_ts}
        stmt = self._upsert(slack_threads, ["channel_id", "e164"], values)
        await self.store.write(lambda conn: conn.execute(stmt, values))

    async def post(self, job_id: str) -> Post:
        """What the bot posted for a job (an empty Post if nothing yet)."""
        query = sa.select(slack_posts).where(slack_posts.c.job_id == job_id)
        row = await self.store.read(lambda conn: conn.execute(query).first())
        if row is None:
            return Post(job_id)
        return Post(
            job_id, row.parent_ts, row.thread_ts, row.post_error, bool(row.thread_existing), row.outcome_ts
        )

    async def save_post(self, job_id: str, **fields: Any) -> None:
        if "thread_existing" in fields:
            fields["thread_existing"] = int(fields["thread_existing"])
        values = {"job_id": job_id, **fields}
        stmt = self._upsert(slack_posts, ["job_id"], values)
        await self.store.write(lambda conn: conn.execute(stmt, values))
