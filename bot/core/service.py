"""What the Slack layer asks of the core: create jobs (idempotently) and hand them to the worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from bot.sms.phone import PhoneNumber

from .consent import DailyCapReached
from .optouts import OptedOut, OptOut, OptOuts, Override, find_in
from .store import Job, JobKind, NewRecipient, Store, day_start, jobs_with_keys, texts_since
from .worker import Worker


@dataclass(frozen=True)
class SingleSendCheck:
    """What a single send must pass before its job is created, decided in the transaction its job shares
    with every job created at the same time (a burst of /sms commands): no trip to the database of its
    own before the ack (200 such trips, one after another, cost a burst ≈ 90 ms), and three lookups for
    the whole group rather than three for each of its jobs."""

    source_key: str | None
    number: PhoneNumber
    type: str | None
    overridden: bool  # a person confirmed "Send anyway" over an opt-out of all texts (checked before)
    cap: int  # texts one number may get a day (0: no cap)
    since: float  # the day's start, for the cap

    @classmethod
    def decide(cls, conn: sa.Connection, checks: Sequence[SingleSendCheck]) -> list[Job | Exception | None]:
        """A recorded request finds its job (it is neither refused nor sent again); then a number opted
        out of texts of that type is refused, then one that had its texts for the day."""
        found = jobs_with_keys(conn, [c.source_key for c in checks if c.source_key])
        new = [c for c in checks if not (c.source_key and c.source_key in found)]
        optouts: dict[str | None, dict[str, OptOut]] = {}
        for of_type in {c.type for c in new if not c.overridden}:
            numbers = {c.number.e164 for c in new if c.type == of_type and not c.overridden}
            optouts[of_type] = find_in(conn, sorted(numbers), of_type)
        texts: dict[float, dict[str, int]] = {}
        for since in {c.since for c in new if c.cap > 0}:
            texts[since] = texts_since(
                conn, [c.number.e164 for c in new if c.cap > 0 and c.since == since], since
            )
        answers: list[Job | Exception | None] = []
        for c in checks:
            e164 = c.number.e164
            if c.source_key and c.source_key in found:
                answers.append(found[c.source_key])
            elif not c.overridden and (optout := optouts[c.type].get(e164)) is not None:
                answers.append(OptedOut(optout, c.type))
            elif c.cap > 0 and (sent := texts[c.since].get(e164, 0)) >= c.cap:
                answers.append(DailyCapReached(c.number.masked, sent, c.cap))
            else:
                answers.append(None)
        return answers


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

        check = SingleSendCheck(
            source_key=source_key,
            number=number,
            type=type,
            overridden=override is not None,
            cap=cap,
            since=day_start(now),
        )
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
