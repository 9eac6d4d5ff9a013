"""Block Kit for bulk sends: the form, the "checking" view, the confirmation, progress and summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    InputBlock,
    MarkdownTextObject,
    NumberInputElement,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    RadioButtonsElement,
    SectionBlock,
)
from slack_sdk.models.blocks.block_elements import FileInputElement
from slack_sdk.models.views import View

from bot.core.bulk import MAX_VALIDITY_SECONDS, Draft
from bot.core.consent import footer_hint
from bot.core.store import CANCELLED, Job, JobState, RecipientRow, RecipientState, Summary
from bot.sms.errors import describe_code

from .ids import ActionId, BlockId, CallbackId
from .views import DRY_RUN, code, code_masks, codes, escape, preview, send_at_block, slack_date_time
from .views import counted as _n

TYPE_OPTIONS = [Option(value="NOTIFY", text="Notification"), Option(value="MKT", text="Marketing")]
MAX_LISTED = 5


def bulk_form(metadata: str, *, max_recipients: int, max_chars: int, mkt_footer: str = "") -> View:
    return View(
        type="modal",
        callback_id=CallbackId.BULK_FORM,
        title=PlainTextObject(text="Bulk SMS"),
        submit=PlainTextObject(text="Review"),
        close=PlainTextObject(text="Cancel"),
        private_metadata=metadata,
        blocks=[
            InputBlock(
                block_id=BlockId.BULK_RECIPIENTS,
                optional=True,
                label=PlainTextObject(text="Recipients"),
                hint=PlainTextObject(
                    text="One per line: a number, or `number,name,...` with a header row like `number,name`. "
                    "Longer lists: attach a CSV below."
                ),
                element=PlainTextInputElement(
                    action_id=ActionId.BULK_RECIPIENTS,
                    multiline=True,
                    placeholder="number,name\n+852 5123 4567,Ana",
                ),
            ),
            InputBlock(
                block_id=BlockId.BULK_FILE,
                optional=True,
                label=PlainTextObject(text="Or a CSV file"),
                hint=PlainTextObject(
                    text=f"First column the number, a header row naming the columns. Up to {max_recipients:,} numbers."
                ),
                element=FileInputElement(action_id=ActionId.BULK_FILE, filetypes=["csv", "txt"], max_files=1),
            ),
            InputBlock(
                block_id=BlockId.BULK_MESSAGE,
                label=PlainTextObject(text="Message"),
                hint=PlainTextObject(
                    text="Use {name} (any column) to fill in each recipient's value. "
                    + footer_hint(mkt_footer)
                ),
                element=PlainTextInputElement(
                    action_id=ActionId.BULK_MESSAGE, multiline=True, max_length=min(max_chars, 3000)
                ),
            ),
            InputBlock(
                block_id=BlockId.BULK_TYPE,
                label=PlainTextObject(text="Type"),
                element=RadioButtonsElement(
                    action_id=ActionId.BULK_TYPE, options=TYPE_OPTIONS, initial_option=TYPE_OPTIONS[0]
                ),
            ),
            InputBlock(
                block_id=BlockId.BULK_SENDER,
                optional=True,
                label=PlainTextObject(text="Sender ID"),
                element=PlainTextInputElement(action_id=ActionId.BULK_SENDER, max_length=15),
            ),
            InputBlock(
                block_id=BlockId.BULK_VALIDITY,
                optional=True,
                label=PlainTextObject(text="Validity period (seconds)"),
                hint=PlainTextObject(text="Drop the message if it cannot be delivered within this time."),
                element=NumberInputElement(
                    action_id=ActionId.BULK_VALIDITY,
                    is_decimal_allowed=False,
                    min_value="1",
                    max_value=str(MAX_VALIDITY_SECONDS),
                ),
            ),
            send_at_block(BlockId.BULK_SEND_AT, ActionId.BULK_SEND_AT),
        ],
    )


def info_view(external_id: str, title: str, text: str) -> View:
    """A pushed view without a submit button: "checking…" or a problem to go Back and fix."""
    return View(
        type="modal",
        callback_id=CallbackId.BULK_INFO,
        external_id=external_id or None,
        title=PlainTextObject(text=title[:24]),
        close=PlainTextObject(text="Back"),
        blocks=[SectionBlock(text=MarkdownTextObject(text=text))],
    )


def checking_view(external_id: str) -> View:
    return info_view(external_id, "Checking the list", "⏳ Checking every number and rendering the messages…")


def problem_view(external_id: str, problem: str) -> View:
    return info_view(
        external_id, "Nothing sent", f"❌ {code_masks(escape(problem))}\n\nGo *Back* to fix the form."
    )


def _shown(masked: str) -> str:
    """A refused line's masked text, when it has digits to show (a word like “hello” masks to `****`)."""
    return f" {code(masked)}" if any(ch.isdigit() for ch in masked) else ""


def _billed(summary: Summary) -> str:
    """The segments billed, as far as the answers said (a batch answer does not say)."""
    return f" ({_n(summary.segments, 'segment')} billed where reported)" if summary.segments else ""


def confirm_view(
    external_id: str | None, draft: Draft, metadata: str, *, where: str, title: str = "Confirm bulk SMS"
) -> View:
    count = draft.count
    lines = [
        f"*{count:,} {'person' if count == 1 else 'people'} will be texted* ({'marketing' if draft.type == 'MKT' else 'notification'})."
    ]
    if draft.duplicates:
        lines.append(f"• {_n(draft.duplicates, 'duplicate')} removed.")
    if draft.refused:
        shown = "; ".join(
            f"line {r['line']}{_shown(r['masked'])}: {escape(r['reason'].rstrip('.'))}"
            for r in draft.refused[:MAX_LISTED]
        )
        more = f" (and {len(draft.refused) - MAX_LISTED:,} more)" if len(draft.refused) > MAX_LISTED else ""
        lines.append(f"• {_n(len(draft.refused), 'number')} refused: {shown}{more}.")
    if draft.meta.get("opted_out"):
        lines.append(
            f"• *{draft.meta['opted_out']:,} suppressed*, not texted: opted out (see /sms optout list): "
            + codes(draft.meta.get("opted_out_listed", []), MAX_LISTED)
        )
    if draft.meta.get("over_cap"):
        lines.append(
            f"• {_n(draft.meta['over_cap'], 'number')} left out: already texted {_n(int(draft.meta.get('cap') or 0), 'time')} "
            "today, the most one number may get a day (setting SMS_PER_NUMBER_DAILY): "
            + codes(draft.meta.get("over_cap_listed", []), MAX_LISTED)
        )
    if draft.meta.get("held"):
        first, last = draft.meta["held_from"], draft.meta["held_until"]
        when = slack_date_time(first) + ("" if last == first else f" to {slack_date_time(last)}")
        lines.append(
            f"• *{count - draft.meta['held']:,} go {'at the scheduled time' if draft.run_at else 'now'}, "
            f"{draft.meta['held']:,} wait* for their send window (marketing texts only go out in the recipient's "
            f"daytime, setting SEND_WINDOW): from {when}."
        )
    if draft.meta.get("dropped_count"):
        lines.append(
            f"• {_n(draft.meta['dropped_count'], 'number')} left out (failed permanently last time): "
            + codes(draft.meta.get("dropped", []), MAX_LISTED)
        )
    enc = ", ".join(f"{k} ×{v:,}" for k, v in sorted(draft.encodings.items()))
    seg = f"• Encoding: {enc}; up to {_n(draft.max_segments, 'segment')} a message; *{_n(draft.total_segments, 'segment')} in all*."
    if draft.ucs2_trigger:
        seg += f" UCS-2 because of “{escape(draft.ucs2_trigger)}”."
    lines.append(seg)
    if draft.cost is not None:
        lines.append(
            f"• Estimated cost: *{draft.cost:,.2f} {draft.currency}* (billed per segment on submission)."
        )
    lines.append(f"• Sender ID: {escape(draft.sender_id) if draft.sender_id else 'the account default'}.")
    if draft.run_at:
        lines.append(
            f"• ⏰ *Scheduled for {slack_date_time(draft.run_at)}* (`/sms scheduled` lists it, with Cancel)."
        )
    lines.append(f"• Results: a thread in {where}.")
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text="\n".join(lines))), DividerBlock()]
    for number, message in draft.samples(3):
        blocks.append(
            ContextBlock(elements=[MarkdownTextObject(text=f"{code(number)}: “{preview(message, 300)}”")])
        )
    if draft.needs_typed_count:
        blocks.append(
            InputBlock(
                block_id=BlockId.BULK_TYPED_COUNT,
                label=PlainTextObject(text=f"Type {count:,} to confirm"),
                element=PlainTextInputElement(action_id=ActionId.BULK_TYPED_COUNT, placeholder=f"{count}"),
            )
        )
    return View(
        type="modal",
        callback_id=CallbackId.BULK_CONFIRM,
        external_id=external_id,
        title=PlainTextObject(text=title),
        submit=PlainTextObject(text=f"Send {count:,} SMS"[:24]),
        close=PlainTextObject(text="Back"),
        private_metadata=metadata,
        notify_on_close=True,
        blocks=blocks,
    )


# ---------------------------------------------------------------- channel messages


def progress_blocks(job: Job, summary: Summary, *, done: bool) -> list[Block]:
    kind = "marketing" if job.type == "MKT" else "notification"
    if job.meta.get("outage"):
        kind = "outage test" if job.meta.get("test") else "outage"
        groups = ", ".join(f"`{g}`" for g in job.meta.get("groups") or [])
        if groups:
            kind += f" to {groups}"
    icon = "🚨" if job.meta.get("outage") else "📣"
    paused = job.state == JobState.PAUSED and not done
    verb = "sent" if done else "paused sending" if paused else "is sending"
    head = f"{icon} <@{job.created_by}> {verb} *{job.total:,} SMS* ({kind})"
    if job.meta.get("retry_of"):
        head += " — sent again to those not reached"
    finished = summary.accepted + summary.failed + summary.unknown + summary.cancelled
    status = (
        f"✅ {summary.accepted:,} accepted · ❌ {summary.failed:,} failed · ⚠️ {summary.unknown:,} unknown"
        + (f" · 🚫 {summary.cancelled:,} cancelled (not sent)" if summary.cancelled else "")
        + f" · {finished:,}/{job.total:,} done"
    )
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=head)),
        ContextBlock(elements=[MarkdownTextObject(text=status if (finished or done) else "⏳ Queued…")]),
    ]
    if paused:
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"⏸️ Paused by <@{job.control_by}>: nothing more is sent until someone resumes it; "
                        f"{summary.pending:,} waiting."
                    )
                ]
            )
        )
    if summary.held and not done:
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"🌙 {summary.held:,} waiting for their send window (marketing texts go out only in "
                        f"the recipient's daytime); the next opens {slack_date_time(summary.next_window or 0)}."
                    )
                ]
            )
        )
    if summary.accepted:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=delivery_counts(summary))]))
    if not done and not job.meta.get("test"):
        blocks.append(job_controls(job, paused=paused))
    if job.meta.get("dry_run"):
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=DRY_RUN)]))
    return blocks


def scheduled_blocks(jobs: Sequence[Job], *, everyone: bool = True) -> list[Block]:
    """`/sms scheduled`: sends scheduled for later, soonest first, each with Cancel (`everyone`: all of
    them, else the asker's own)."""
    if not jobs:
        none = "No sends are scheduled." if everyone else "You have no scheduled sends."
        return [SectionBlock(text=MarkdownTextObject(text=none))]
    blocks: list[Block] = [
        SectionBlock(
            text=MarkdownTextObject(text="*Scheduled sends*" if everyone else "*Your scheduled sends*")
        )
    ]
    for job in jobs:
        kind = "outage" if job.meta.get("outage") else "marketing" if job.type == "MKT" else "notification"
        template = preview(str(job.meta.get("template") or ""), 80)
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"⏰ *{slack_date_time(job.run_at or 0)}* · <@{job.created_by}> · {job.total:,} SMS "
                    f"({kind}){f' · “{escape(template)}”' if template else ''}"
                ),
                accessory=cancel_button(job),
            )
        )
    return blocks


def cancel_button(job: Job) -> ButtonElement:
    return ButtonElement(
        action_id=ActionId.JOB_CANCEL,
        text=PlainTextObject(text="Cancel"),
        value=job.id,
        style="danger",
        confirm=ConfirmObject(
            title="Cancel this send?",
            text="Nothing more is sent. Texts already on their way get their answer; the rest are reported "
            "“cancelled (not sent)” and can be sent later with “Send again”.",
            confirm="Cancel the send",
            deny="Keep it",
        ),
    )


def job_controls(job: Job, *, paused: bool) -> ActionsBlock:
    """Pause or resume, and cancel (with Slack's own "are you sure?"), on a running job's message."""
    first = (
        ButtonElement(
            action_id=ActionId.JOB_RESUME, text=PlainTextObject(text="Resume"), value=job.id, style="primary"
        )
        if paused
        else ButtonElement(action_id=ActionId.JOB_PAUSE, text=PlainTextObject(text="Pause"), value=job.id)
    )
    return ActionsBlock(block_id=BlockId.JOB_CONTROLS, elements=[first, cancel_button(job)])


def delivery_counts(summary: Summary) -> str:
    """Of the accepted messages: what the receipts said so far."""
    line = (
        f"📬 {summary.delivered:,} of {summary.accepted:,} delivered · {summary.undelivered:,} not delivered"
        f" · {summary.waiting:,} waiting for a receipt"
    )
    if summary.reconciled:
        line += (
            f" · {summary.reconciled:,} unknown → {summary.reconciled_delivered:,} delivered, "
            f"{summary.reconciled_undelivered:,} not delivered after checking with the provider"
        )
    return line


def not_reached(summary: Summary) -> int:
    """Recipients that did not get the text: not sent (failed, cancelled) or not delivered."""
    return summary.failed + summary.cancelled + summary.undelivered


def summary_blocks(job: Job, summary: Summary, recipients: Sequence[RecipientRow]) -> list[Block]:
    """The job's summary in its thread. `recipients`: at least the failed, unknown and not delivered
    ones (the summary lists them, masked); the others are counted from `summary`."""
    lines = [
        f"*Done.* {summary.accepted:,} accepted{_billed(summary)}, "
        f"{summary.failed:,} failed, {summary.unknown:,} with an unknown outcome."
    ]
    if summary.cancelled:
        lines[0] = (
            f"*Cancelled* by <@{job.control_by}>: {summary.cancelled:,} cancelled (not sent). Before that: "
            f"{summary.accepted:,} accepted{_billed(summary)}, "
            f"{summary.failed:,} failed, {summary.unknown:,} with an unknown outcome."
        )
    if summary.accepted:
        lines.append(delivery_counts(summary))
    undelivered = [r for r in recipients if r.state == RecipientState.ACCEPTED and r.delivery is not None
                   and r.delivery != "delivered"]  # fmt: skip
    if undelivered:
        listed = codes(r.number.masked for r in undelivered)
        more = f" and {summary.undelivered - 20:,} more" if summary.undelivered > 20 else ""
        lines.append(f"*Not delivered* ({summary.undelivered:,}; accepted and billed): {listed}{more}")
    failed = [r for r in recipients if r.state == RecipientState.FAILED and r.code != CANCELLED]
    if failed:
        by_reason = Counter((r.code or "", r.error or describe_code(r.code)) for r in failed)
        lines.append("*Failed* (not sent, not billed):")
        for (error_code, reason), n in by_reason.most_common(5):
            who = codes(
                r.number.masked
                for r in failed
                if (r.code or "", r.error or describe_code(r.code)) == (error_code, reason)
            )
            more = f" and {n - 20:,} more" if n > 20 else ""
            shown_code = f" (`{error_code}`)" if error_code and error_code != "FAILED_LIST" else ""
            lines.append(f"• {n:,} × {escape(reason.rstrip('.'))}{shown_code}: {who}{more}")
    unknown = [r for r in recipients if r.state == RecipientState.UNKNOWN]
    if unknown:
        listed = codes(r.number.masked for r in unknown)
        more = f" and {len(unknown) - 20:,} more" if len(unknown) > 20 else ""
        lines.append(
            f"*Outcome unknown* ({len(unknown):,}; not resent; check delivery receipts for task `{job.task_id}`): "
            f"{listed}{more}"
        )
    if job.meta.get("refused") or job.meta.get("duplicates"):
        lines.append(
            f"Before sending: {_n(job.meta.get('refused', 0), 'invalid number')} refused, "
            f"{_n(job.meta.get('duplicates', 0), 'duplicate')} removed."
        )
    text = "\n".join(lines)
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=text[:2900]))]
    buttons = []
    if job.meta.get("outage") and not job.meta.get("test"):
        buttons.append(
            ButtonElement(
                action_id=ActionId.OUTAGE_FOLLOW_UP,
                text=PlainTextObject(text="Send update"),
                value=job.id,
                style="primary",
            )
        )
    missed = not_reached(summary)
    if missed and not job.meta.get("test"):
        buttons.append(
            ButtonElement(
                action_id=ActionId.BULK_SEND_AGAIN,
                text=PlainTextObject(text=f"Send again to the {missed:,} not reached"),
                value=job.id,
            )
        )
    if buttons:
        blocks.append(ActionsBlock(block_id=BlockId.BULK_SUMMARY_ACTIONS, elements=buttons))
    if job.meta.get("dry_run"):
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=DRY_RUN)]))
    return blocks
