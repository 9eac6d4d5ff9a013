"""Bulk sends: from a form to a validated draft, from a confirmed draft to exactly one job.

`quick_problems` is cheap (before answering Slack); `prepare` does the work that grows with the list
(after answering), yielding to the event loop as it goes, and ends in a draft or a specific problem.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.sms.encoding import MessageError, MessageInfo, analyse, validate_message
from bot.sms.models import MAX_VALIDITY_SECONDS, check_sender_id
from bot.sms.phone import PhoneNumber, mask
from bot.sms.recipients import (
    RecipientList,
    RecipientParser,
    TemplateError,
    check_template,
    csv_rows,
    parse_recipients,
    render,
    template_fields,
)

from .consent import over_cap, with_footer
from .optouts import OptOut, OptOuts
from .store import DraftRecord, DraftState, JobKind, NewRecipient, RecipientState, Store
from .windows import WindowCheck, WindowRules

SLICE = 256  # numbers validated between two yields to the event loop


@dataclass
class BulkForm:
    user_id: str
    channel_id: str
    response_url: str | None
    recipients_text: str
    template: str
    type: str = "NOTIFY"
    sender_id: str | None = None
    validity: int | None = None
    file_name: str | None = None
    file_text: str | None = None
    send_at: float | None = None  # scheduled for then (epoch seconds); None: now


@dataclass
class BulkLimits:
    max_recipients: int = 10_000
    daily_segments: int = 50_000
    confirm_threshold: int = 100
    prices: dict[str, float] = field(default_factory=dict)  # region → price per segment ("*" default)
    currency: str = "USD"
    default_region: str | None = None
    max_chars: int = 1500
    mkt_footer: str = ""  # appended to marketing texts (bot/core/consent.py)
    per_number_daily: int = 20  # texts one number may get a day (0: no cap)
    windows: WindowRules | None = None  # send windows for marketing texts (bot/core/windows.py)
    schedule_max_days: int = 30  # how far ahead "Send at" may be


@dataclass
class Draft:
    id: str
    user_id: str
    channel_id: str
    response_url: str | None
    template: str
    type: str
    sender_id: str | None
    validity: int | None
    recipients: list[NewRecipient]
    refused: list[dict[str, Any]]  # line, masked, reason
    duplicates: int
    total_segments: int
    encodings: dict[str, int]
    max_segments: int
    ucs2_trigger: str | None
    cost: float | None
    currency: str
    needs_typed_count: bool
    retry_of: str | None = None
    # batch: BatchSendMessageToGlobe at 1/s; fanout: single sends at the account rate
    kind: JobKind = JobKind.BATCH
    meta: dict[str, Any] = field(default_factory=dict)
    run_at: float | None = None  # scheduled for then; None: at once

    @property
    def count(self) -> int:
        return len(self.recipients)

    def samples(self, n: int = 3) -> list[tuple[str, str]]:
        return [(r.number.masked, r.message) for r in self.recipients[:n]]

    def head(self) -> dict[str, Any]:
        """What the confirmation needs later, without the recipients (stored as rows of their own)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("id", "recipients")}


class BulkProblem(Exception):
    """The list cannot become a draft; `message` says why and what to do. `field`: the form field it
    is about (the keys of `problems`), or None for the message field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Tally:
    """Recipients of a draft as they are added, with encodings, segments and the daily budget check."""

    def __init__(self) -> None:
        self.recipients: list[NewRecipient] = []
        self.encodings: Counter[str] = Counter()
        self.total = 0
        self.worst = 0
        self.trigger: str | None = None

    def add(self, number: PhoneNumber, message: str, info: MessageInfo) -> None:
        self.encodings[info.encoding] += 1
        self.total += info.segments
        self.worst = max(self.worst, info.segments)
        self.trigger = self.trigger or info.ucs2_trigger
        self.recipients.append(NewRecipient(number, message, info.segments))

    async def check_budget(self, store: Store, user_id: str, limits: BulkLimits) -> None:
        used = await store.segments_today(user_id)
        if used + self.total > limits.daily_segments:
            raise BulkProblem(
                f"This send needs {self.total:,} segment{'' if self.total == 1 else 's'}, and you have used {used:,} of your "
                f"{limits.daily_segments:,} segments today (setting BULK_DAILY_SEGMENTS). Send to fewer people, "
                "shorten the message, or ask an admin to raise the limit."
            )

    def draft(self, limits: BulkLimits, **fields: Any) -> Draft:
        return Draft(
            id="",
            recipients=self.recipients,
            total_segments=self.total,
            encodings=dict(self.encodings),
            max_segments=self.worst,
            ucs2_trigger=self.trigger,
            cost=estimate_cost(self.recipients, limits),
            currency=limits.currency,
            needs_typed_count=len(self.recipients) >= limits.confirm_threshold,
            **fields,
        )


def schedule_problem(send_at: float | None, now: float, limits: BulkLimits) -> str | None:
    """What is wrong with a "Send at" time, if anything (a minute's grace for the time the form took)."""
    if send_at is None:
        return None
    if send_at < now - 60:
        return "That time has passed. Choose a time in the future, or clear it to send at once."
    if send_at > now + limits.schedule_max_days * 86400:
        return f"Sends can be scheduled at most {limits.schedule_max_days} days ahead (setting SCHEDULE_MAX_DAYS)."
    return None


def quick_problems(form: BulkForm, limits: BulkLimits, now: float | None = None) -> dict[str, str]:
    """Cheap checks, answered inline on the form. Keys: recipients, message, sender, validity, type,
    send_at."""
    problems: dict[str, str] = {}
    scheduled = schedule_problem(form.send_at, time.time() if now is None else now, limits)
    if scheduled:
        problems["send_at"] = scheduled
    if not form.recipients_text.strip() and form.file_name is None:
        problems["recipients"] = "Paste at least one number (one per line), or attach a CSV file below."
    if not form.template.strip():
        problems["message"] = "The message is empty. Write the text to send."
    else:
        try:
            names = template_fields(form.template)
        except TemplateError as exc:
            problems["message"] = exc.reason
        else:
            if names and form.recipients_text.strip() and form.file_name is None:
                # Columns from the first lines only: cheap, and a header is always first.
                columns = parse_recipients("\n".join(form.recipients_text.splitlines()[:20])).columns
                missing = [n for n in names if n not in columns]
                if missing:
                    have = ", ".join(f"{{{c}}}" for c in columns)
                    problems["message"] = (
                        f"The message uses {{{missing[0]}}}, but the list has no column “{missing[0]}” "
                        f"(columns: {have}). Add a header row like `number,{missing[0]}`."
                    )
            if "message" not in problems and not names:
                try:
                    validate_message(form.template, limits.max_chars)
                except MessageError as exc:
                    problems["message"] = exc.reason
    if form.sender_id:
        try:
            check_sender_id(form.sender_id)
        except ValueError as exc:
            problems["sender"] = str(exc).capitalize() + "."
    if form.validity is not None and form.validity <= 0:
        problems["validity"] = "The validity period must be a positive number of seconds."
    elif form.validity is not None and form.validity > MAX_VALIDITY_SECONDS:
        problems["validity"] = (
            f"The validity period can be at most {MAX_VALIDITY_SECONDS:,} seconds (72 hours); "
            "leave it empty for the provider's default."
        )
    if form.type not in ("NOTIFY", "MKT"):
        problems["type"] = "Choose Notification or Marketing."
    return problems


async def prepare(form: BulkForm, limits: BulkLimits, store: Store, *, retry_of: str | None = None) -> Draft:
    """Validate the whole list into a stored draft, or raise BulkProblem. Yields to the loop as it goes."""
    text = form.file_text if form.file_text is not None else form.recipients_text
    source = f"“{form.file_name}”" if form.file_name else "the pasted list"
    listing = await _parse_in_slices(text, limits)
    try:
        check_template(form.template, listing.columns)
    except TemplateError as exc:
        raise BulkProblem(f"{exc.reason} ({source})") from None
    if not listing.recipients:
        reasons = "; ".join(r.describe().rstrip(".") for r in listing.refused[:3])
        detail = f" Refused: {reasons}." if reasons else ""
        raise BulkProblem(f"Nothing valid is left to send in {source}.{detail}")
    if len(listing.recipients) > limits.max_recipients:
        raise BulkProblem(
            f"{source} has more than {limits.max_recipients:,} valid numbers; the limit per send is "
            f"{limits.max_recipients:,} (setting BULK_MAX_RECIPIENTS). Split the list."
        )
    out = await left_out(store, [r.number for r in listing.recipients], form.type, limits, f"in {source}")
    tally = Tally()
    for i, r in enumerate(listing.recipients):
        if r.number.e164 in out:
            continue
        try:
            message = with_footer(render(form.template, r.fields), form.type, limits.mkt_footer)
            info = validate_message(message, limits.max_chars)
        except (TemplateError, MessageError) as exc:
            raise BulkProblem(f"The message for line {r.line} ({r.number.masked}): {exc.reason}") from None
        tally.add(r.number, message, info)
        if i % SLICE == SLICE - 1:
            await asyncio.sleep(0)
    await tally.check_budget(store, form.user_id, limits)
    waiting = await window_meta(tally.recipients, form.type, limits, form.send_at or store.clock())
    return tally.draft(
        limits,
        user_id=form.user_id,
        channel_id=form.channel_id,
        response_url=form.response_url,
        template=form.template,
        type=form.type,
        sender_id=form.sender_id,
        validity=form.validity,
        refused=[{"line": r.line, "masked": mask(r.text), "reason": r.reason} for r in listing.refused],
        duplicates=listing.duplicates,
        retry_of=retry_of,
        meta={**out.meta(limits), **waiting, **({"send_at": form.send_at} if form.send_at else {})},
        run_at=form.send_at,
    )


async def window_meta(
    recipients: Sequence[NewRecipient], type: str | None, limits: BulkLimits, at: float
) -> dict[str, Any]:
    """What the confirmation says about send windows: how many of a marketing send's recipients are
    outside theirs at `at` (now, or the scheduled time), and when the first and last of them open."""
    if type != "MKT" or limits.windows is None or not limits.windows.active:
        return {}
    check = WindowCheck(limits.windows, at)
    opens: list[float] = []
    for i, r in enumerate(recipients):
        t = check.opens_at(r.number)
        if t is not None:
            opens.append(t)
        if i % SLICE == SLICE - 1:
            await asyncio.sleep(0)
    if not opens:
        return {}
    return {"held": len(opens), "held_from": min(opens), "held_until": max(opens)}


@dataclass
class LeftOut:
    """Numbers a send leaves out: opted out (of texts of its type), or over the daily cap."""

    opted_out: dict[str, OptOut] = field(default_factory=dict)
    capped: dict[str, int] = field(default_factory=dict)
    masked_opted_out: list[str] = field(default_factory=list)
    masked_capped: list[str] = field(default_factory=list)

    def __contains__(self, e164: object) -> bool:
        return e164 in self.opted_out or e164 in self.capped

    def meta(self, limits: BulkLimits) -> dict[str, Any]:
        """What the confirmation says about them (masked, the first 20 of each)."""
        meta: dict[str, Any] = {}
        if self.masked_opted_out:
            meta |= {"opted_out": len(self.masked_opted_out), "opted_out_listed": self.masked_opted_out[:20]}
        if self.masked_capped:
            meta |= {
                "over_cap": len(self.masked_capped),
                "over_cap_listed": self.masked_capped[:20],
                "cap": limits.per_number_daily,
            }
        return meta


async def left_out(
    store: Store, numbers: Sequence[PhoneNumber], type: str | None, limits: BulkLimits, where: str
) -> LeftOut:
    """Which of `numbers` a send of `type` leaves out; BulkProblem when that is every one of them
    (`where` names the list in that message, e.g. "in the pasted list")."""
    e164s = [n.e164 for n in numbers]
    out = LeftOut(await OptOuts(store).find(e164s, type))
    rest = [e for e in e164s if e not in out.opted_out]
    out.capped = await over_cap(store, rest, limits.per_number_daily)
    for n in numbers:
        if n.e164 in out.opted_out:
            out.masked_opted_out.append(n.masked)
        elif n.e164 in out.capped:
            out.masked_capped.append(n.masked)
    if len(out.masked_opted_out) + len(out.masked_capped) < len(set(e164s)):
        return out
    reasons = []
    if out.opted_out:
        reasons.append(f"{len(out.opted_out):,} opted out (see /sms optout list)")
    if out.capped:
        reasons.append(
            f"{len(out.capped):,} already had {limits.per_number_daily} texts today, the most one number may get "
            "a day (setting SMS_PER_NUMBER_DAILY)"
        )
    raise BulkProblem(f"Nobody {where} can be texted: {'; '.join(reasons)}. Nothing was sent.")


async def _parse_in_slices(text: str, limits: BulkLimits) -> RecipientList:
    """The whole list through RecipientParser, yielding to the event loop between slices (≈ 80 µs a number)."""
    parser = RecipientParser(limits.default_region, max_recipients=limits.max_recipients)
    rows = csv_rows(text)
    for start in range(0, len(rows), SLICE):
        parser.feed(rows[start : start + SLICE])
        if parser.full:
            break
        await asyncio.sleep(0)
    return parser.result


async def save_draft(store: Store, draft: Draft, draft_id: str) -> bool:
    """Store the validated draft (checking → open); False if the user closed the modal meanwhile."""
    draft.id = draft_id
    return await store.fill_draft(draft_id, draft.head(), draft.recipients)


async def retry_draft(store: Store, job_id: str, user_id: str, limits: BulkLimits) -> Draft:
    """A new draft holding the recipients of `job_id` that were not reached: failed (not sent) or
    reported not delivered by their receipt (messages as they were rendered). An outage's goes out
    as an outage again (single sends at full speed)."""
    job = await store.get_job(job_id)
    if job is None:
        raise BulkProblem("That send no longer exists.")
    missed = [r for r in await store.not_delivered(job_id) if r.state != RecipientState.UNKNOWN]
    if not missed:
        raise BulkProblem("Every recipient of that send was reached (or is still waiting for a receipt).")
    out = await left_out(store, [r.number for r in missed], job.type, limits, "of those not reached")
    missed = [r for r in missed if r.number.e164 not in out]
    tally = Tally()
    for r in missed:
        tally.add(r.number, r.message, analyse(r.message))
    await tally.check_budget(store, user_id, limits)
    outage = bool(job.meta.get("outage"))
    draft = tally.draft(
        limits,
        user_id=user_id,
        channel_id=job.channel_id or "",
        response_url=job.response_url,
        template=str(job.meta.get("template") or missed[0].message),
        type=job.type or "NOTIFY",
        sender_id=job.sender_id,
        validity=job.validity,
        refused=[],
        duplicates=0,
        retry_of=job_id,
        kind=job.kind if outage else JobKind.BATCH,
        meta={
            **({k: job.meta[k] for k in ("outage", "groups", "service") if k in job.meta} if outage else {}),
            **out.meta(limits),
            **await window_meta(tally.recipients, job.type, limits, store.clock()),
        },
    )
    draft_id = await store.create_draft(user_id)
    await save_draft(store, draft, draft_id)
    return draft


def estimate_cost(recipients: list[NewRecipient], limits: BulkLimits) -> float | None:
    if not limits.prices:
        return None
    total = 0.0
    for r in recipients:
        price = limits.prices.get(r.number.region, limits.prices.get("*"))
        if price is None:
            return None
        total += price * (r.segments or 1)
    return round(total, 4)


async def confirm(
    store: Store,
    draft_id: str,
    *,
    dry_run: bool,
    found: DraftRecord | None = None,
    hold: tuple[str, float] | None = None,
) -> tuple[str | None, str]:
    """Claim the draft and create its job. Returns (job id, note): a second confirmation of the same
    draft returns the first job's id and creates nothing. `found` is the draft as the caller already
    read it (this runs before Slack's ack: no second read).

    The recipients are copied inside the database (one INSERT … SELECT; nothing of that size passes
    through the event loop): in the same transaction, or with `hold=(this process, seconds)` by
    `Store.copy_draft_rows` once Slack has its answer. That copy grows with the list (≈ 100 ms for
    50,000 on SQLite); the confirmation takes the count the draft was stored with."""
    found = found or await store.get_draft(draft_id)
    if found is None:
        return None, "This confirmation has expired. Start again with /sms bulk."
    if found.state == DraftState.CONFIRMED and found.job_id:
        return found.job_id, "already confirmed"
    if found.state != DraftState.OPEN or not found.count:
        return None, "This draft was discarded or is still being checked. Start again with /sms bulk."
    head = found.head
    try:
        job_id, created = await store.claim_draft_into_job(
            draft_id,
            hold=hold,
            count=found.count,
            kind=JobKind(head.get("kind", JobKind.BATCH)),
            created_by=head["user_id"],
            channel_id=head.get("channel_id"),
            response_url=head.get("response_url"),
            sender_id=head.get("sender_id"),
            type=head.get("type"),
            validity=head.get("validity"),
            run_at=head.get("run_at"),
            meta={
                "dry_run": dry_run,
                "bulk": True,
                "template": str(head.get("template") or "")[:500],
                "refused": len(head.get("refused") or []),
                "duplicates": head.get("duplicates", 0),
                "retry_of": head.get("retry_of"),
                "confirmed_at": time.time(),
                **(head.get("meta") or {}),
            },
        )
    except LookupError:
        return None, "This draft was discarded. Start again with /sms bulk."
    return job_id, "created" if created else "already confirmed"
