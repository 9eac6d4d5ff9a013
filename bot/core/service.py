"""What the Slack layer asks of the core: create jobs (idempotently) and hand them to the worker."""

from __future__ import annotations

from dataclasses import dataclass

from bot.sms.phone import PhoneNumber

from .consent import DailyCapReached, over_cap
from .store import Job, JobKind, NewRecipient, Store
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
    ) -> tuple[Job, bool]:
        """Record the intent (job + recipient) and queue it. Idempotent on `source_key`. Raises
        DailyCapReached when the number had its texts for today (a repeat of a recorded request does not:
        it finds its job)."""
        if self.per_number_daily > 0:
            existing = await self.store.job_by_key(source_key)
            if existing is not None:
                return existing, False
            capped = await over_cap(self.store, [number.e164], self.per_number_daily)
            if capped:
                raise DailyCapReached(number.masked, capped[number.e164], self.per_number_daily)
        job, created = await self.store.create_job(
            kind=JobKind.SINGLE,
            created_by=user_id,
            channel_id=channel_id,
            response_url=response_url,
            recipients=[NewRecipient(number, message)],
            sender_id=sender_id,
            type=type,
            source_key=source_key,
            meta={"dry_run": self.dry_run},
        )
        if created:
            self.worker.submit(job.id)
        return job, created
