"""Several replicas: job leases, named leases (the sending replica), draft recipients as rows.

- `jobs.owner` / `jobs.lease_until`: the process that runs a job, renewed by its heartbeat.
- `leases`: one row per named lease (`sender`: the one replica that talks to the provider).
- `draft_rows` replaces `draft_recipients` (a JSON list per draft) and `job_sources` (a confirmed
  draft's recipients written lazily as they were sent): a confirmation now copies the draft's rows into
  `recipients` in one INSERT … SELECT. Jobs that were part-way through keep every recipient: the ones
  not yet written get their row here, queued.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ROW_COLUMNS = ("e164", "country_code", "national", "region", "message")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.Text))
        batch.add_column(sa.Column("lease_until", sa.Double))
    op.create_index("jobs_unfinished", "jobs", ["state"])
    op.create_table(
        "leases",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("until", sa.Double, nullable=False),
    )
    op.create_table(
        "draft_rows",
        sa.Column("draft_id", sa.Text, sa.ForeignKey("drafts.id"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("e164", sa.Text, nullable=False),
        sa.Column("country_code", sa.Integer, nullable=False),
        sa.Column("national", sa.Text, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("segments", sa.Integer),
    )
    bind = op.get_bind()
    now = time.time()
    recipients = sa.table(
        "recipients",
        *(sa.column(c) for c in ("job_id", "idx", *_ROW_COLUMNS, "state", "est_segments", "updated_at")),
    )
    draft_rows = sa.table(
        "draft_rows", *(sa.column(c) for c in ("draft_id", "idx", *_ROW_COLUMNS, "segments"))
    )

    # Jobs part-way through a confirmed draft: write the rows of the recipients not yet written.
    sources = bind.execute(
        sa.text(
            "SELECT s.job_id, s.stored, d.recipients FROM job_sources s "
            "LEFT JOIN draft_recipients d ON d.draft_id = s.draft_id"
        )
    ).fetchall()
    for job_id, stored, blob in sources:
        have = {
            r[0] for r in bind.execute(sa.text("SELECT idx FROM recipients WHERE job_id = :j"), {"j": job_id})
        }
        rows = [
            {"job_id": job_id, "idx": i, **_fields(r), "state": "queued", "est_segments": r.get("segments"),
             "updated_at": now}
            for i, r in enumerate(json.loads(blob or "[]"))
            if i >= stored and i not in have
        ]  # fmt: skip
        if rows:
            bind.execute(recipients.insert(), rows)

    # Open drafts keep their list, as rows.
    blobs = bind.execute(
        sa.text(
            "SELECT d.draft_id, d.recipients FROM draft_recipients d JOIN drafts x ON x.id = d.draft_id "
            "WHERE x.state IN ('open', 'checking')"
        )
    ).fetchall()
    for draft_id, blob in blobs:
        rows = [
            {"draft_id": draft_id, "idx": i, **_fields(r), "segments": r.get("segments")}
            for i, r in enumerate(json.loads(blob or "[]"))
        ]
        if rows:
            bind.execute(draft_rows.insert(), rows)
    op.drop_table("job_sources")
    op.drop_table("draft_recipients")


def _fields(r: dict) -> dict:
    return {
        "e164": r["e164"],
        "country_code": r["cc"],
        "national": r["national"],
        "region": r["region"],
        "message": r["message"],
    }
