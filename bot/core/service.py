"""What the Slack layer asks of the core: create jobs (idempotently) and hand them to the worker."""

from __future__ import annotations

from dataclasses import dataclass

from bot.sms.phone import PhoneNumber

from .consent import DailyCapReached, over_cap
from .optouts import OptedOut, OptOuts, Override
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
        override: Override | None = None,
    ) -> tuple[Job, bool]:
        """Record the intent (job + recipient) and queue it. Idempotent on `source_key`. Raises OptedOut
        when the number is opted out of texts of this type (unless `override`: an explicit decision,
        checked by the caller, to text a number opted out of all texts; never for marketing), and
        DailyCapReached when the number had its texts for today (a repeat of a recorded request does
        neither: it finds its job)."""
        existing = await self.store.job_by_key(source_key)
        if existing is not None:
            return existing, False
        meta: dict[str, object] = {"dry_run": self.dry_run}
        optout = (await OptOuts(self.store).find([number.e164], type)).get(number.e164)
        if optout is not None:
            refusal = OptedOut(optout, type)
            if override is None or not refusal.overridable:
                raise refusal
            meta["optout_override"] = {
                "by": override.by,
                "reason": override.reason[:500],
                "opted_out_by": optout.added_by,
                "opted_out_at": optout.added_at,
            }
        if self.per_number_daily > 0:
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
            meta=meta,
        )
        if created:
            self.worker.submit(job.id)
        return job, created
