"""What the Slack layer asks of the core: create jobs (idempotently) and hand them to the worker."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bot.sms.phone import PhoneNumber

from .consent import DailyCapReached
from .optouts import OptedOut, OptOuts, Override, find_in
from .store import Job, JobKind, NewRecipient, Store, day_start, job_with_key, texts_since
from .worker import Worker


@dataclass
class SendService:
    store: Store
    worker: Worker
    dry_run: bool = False
    per_number_daily: int = 0  # texts one number may get a day (0: no cap)

    async def send_single(
        self,
        *,
        user_id: str,
        channel_id: str | None,
        number: PhoneNumber,
        message: str,
        response_url: str | None = None,
        sender_id: str | None = None,
        type: str | None = None,
        source_key: str | None = None,
        override: Override | None = None,
    ) -> tuple[Job, bool]:
        """Record the intent (job + recipient) and queue it. Idempotent on `source_key`. Raises OptedOut
        when the number is opted out of texts of this type (unless `override`: an explicit decision,
        checked by the caller, to text a number opted out of all texts; never for marketing), and
        DailyCapReached when the number had its texts for today (a repeat of a recorded request does
        neither: it finds its job)."""
        now = self.store.clock()
        e164, cap = number.e164, self.per_number_daily
        meta: dict[str, object] = {"dry_run": self.dry_run}
        if override is not None:  # rare: a person confirmed "Send anyway"; the override is recorded
            optout = (await OptOuts(self.store).find([e164], type)).get(e164)
            if optout is not None:
                refusal = OptedOut(optout, type)
                if not refusal.overridable:
                    raise refusal
                meta["optout_override"] = {
                    "by": override.by,
                    "reason": override.reason[:500],
                    "opted_out_by": optout.added_by,
                    "opted_out_at": optout.added_at,
                }

        def check(conn: sa.Connection) -> Job | None:
            """Runs in the job's own transaction, which a burst of requests shares: no trip to the database
            of its own before the ack (200 such trips, one after another, cost a burst ≈ 90 ms)."""
            existing = job_with_key(conn, source_key) if source_key else None
            if existing is not None:
                return existing
            if override is None and (optout := find_in(conn, [e164], type).get(e164)) is not None:
                raise OptedOut(optout, type)
            if cap > 0 and (texts := texts_since(conn, [e164], day_start(now)).get(e164, 0)) >= cap:
                raise DailyCapReached(number.masked, texts, cap)
            return None

        job, created = await self.store.create_job(
            kind=JobKind.SINGLE,
            created_by=user_id,
            channel_id=channel_id,
            response_url=response_url,
            recipients=[NewRecipient(number, message)],
            sender_id=sender_id,
            type=type,
            source_key=source_key,
            meta=meta,
            check=check,
        )
        if created:
            self.worker.submit(job.id)
        return job, created
