"""The database schema at head, as SQLAlchemy Core tables (the queries use these; Alembic's revisions in
`migrations/` are the history that gets a database here, and never import this module).

Core owns every table here; the Slack layer's own tables (customer threads, the messages it posted for
a job) are in bot/slack/state.py. `jobs.channel_id` and `jobs.response_url` say where a request came
from and how to answer its sender; they are set when the job is created and never change.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),  # JobKind
    sa.Column("state", sa.Text, nullable=False),  # JobState
    sa.Column("source_key", sa.Text, unique=True),  # idempotency key (a view id, a draft, a trigger)
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("channel_id", sa.Text),
    sa.Column("response_url", sa.Text),
    sa.Column("sender_id", sa.Text),
    sa.Column("type", sa.Text),
    sa.Column("task_id", sa.Text),
    sa.Column("validity", sa.Integer),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("meta", sa.Text, nullable=False, server_default="{}"),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    # The process that runs the job, until when (see `leases` and bot/core/worker.py).
    sa.Column("owner", sa.Text),
    sa.Column("lease_until", sa.Double),
    # What someone asked of the job while it runs: "pause" or "cancel" (None: carry on). The sending
    # replica reads it in the statement that marks each request in flight (Store.mark_for_send).
    sa.Column("control", sa.Text),
    sa.Column("control_by", sa.Text),  # the Slack user who paused, resumed or cancelled it last
    # Nobody claims the job before this moment: a send scheduled for later, or one whose remaining
    # recipients wait for their send window (None: now).
    sa.Column("run_at", sa.Double),
    # When the job's finish was told to someone (the observer: Slack). A finished job without it is
    # reported again by the sending replica (None also for jobs not finished yet).
    sa.Column("reported_at", sa.Double),
    # Delivery receipts matched for the job (a count), and when the first change the observer has not
    # shown yet was matched (None: all shown). The sending replica offers such jobs again.
    sa.Column("receipts_changed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("receipts_unshown", sa.Double),
    sa.Index("jobs_task_id", "task_id"),
    sa.Index("jobs_by_user", "created_by", "created_at"),
    sa.Index("jobs_unfinished", "state"),
    sa.Index("jobs_unreported", "reported_at"),
    sa.Index("jobs_receipts_unshown", "receipts_unshown"),
)

recipients = sa.Table(
    "recipients",
    metadata,
    sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("e164", sa.Text, nullable=False),
    sa.Column("country_code", sa.Integer, nullable=False),
    sa.Column("national", sa.Text, nullable=False),
    sa.Column("region", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # RecipientState
    sa.Column("message_id", sa.Text),
    sa.Column("segments", sa.Integer),
    sa.Column("code", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("request_id", sa.Text),
    sa.Column("country", sa.Text),
    sa.Column("carrier", sa.Text),
    sa.Column("retryable", sa.Integer, nullable=False, server_default="0"),
    sa.Column("est_segments", sa.Integer),
    sa.Column("updated_at", sa.Double, nullable=False),
    # What the provider said happened after accepting (bot.sms.receipts.Delivery; forward only).
    sa.Column("delivery", sa.Text),
    sa.Column("delivery_code", sa.Text),
    sa.Column("delivery_error", sa.Text),
    sa.Column("delivered_at", sa.Double),
    sa.Column("check_at", sa.Double),  # when the QueryMessage sweep next asks about it (None: never)
    sa.Column("checks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reconciled", sa.Integer, nullable=False, server_default="0"),  # was unknown until a receipt
    sa.Column("not_before", sa.Double),  # a marketing text held until its recipient's send window opens
    sa.Index("recipients_message_id", "message_id"),
    sa.Index("recipients_check_at", "check_at"),
    sa.Index("recipients_by_number", "e164", "updated_at"),
)

drafts = sa.Table(
    "drafts",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # DraftState
    sa.Column("payload", sa.Text, nullable=False),  # what the confirmation shows (JSON), not the list
    sa.Column("job_id", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
)

# A draft's validated recipients, one row each; copied into `recipients` when the draft is confirmed.
draft_rows = sa.Table(
    "draft_rows",
    metadata,
    sa.Column("draft_id", sa.Text, sa.ForeignKey("drafts.id"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("e164", sa.Text, nullable=False),
    sa.Column("country_code", sa.Integer, nullable=False),
    sa.Column("national", sa.Text, nullable=False),
    sa.Column("region", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("segments", sa.Integer),
)

# Named leases held by one process at a time: `sender` is the replica that talks to the provider.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("until", sa.Double, nullable=False),
)

# Receipts as they came (push, queue, QueryMessage), stored before a push is answered; deleted once
# matched to a recipient, or dropped as foreign (never ours, or unmatched for RECEIPTS_HOLD_SECONDS).
receipts = sa.Table(
    "receipts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.Text),
    sa.Column("task_id", sa.Text),
    sa.Column("to_number", sa.Text),
    sa.Column("delivery", sa.Text, nullable=False),
    sa.Column("code", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("done_at", sa.Double),
    sa.Column("segments", sa.Integer),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("received_at", sa.Double, nullable=False),
)

# Numbers that must not be texted (bot/core/optouts.py): scope "all", or "marketing" (MKT texts only).
suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("e164", sa.Text, primary_key=True),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("added_by", sa.Text, nullable=False),
    sa.Column("added_at", sa.Double, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Index("suppressions_by_time", "added_at"),
)
