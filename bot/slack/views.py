"""Block Kit surfaces, as small pure functions returning `slack_sdk.models` objects."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DateTimePickerElement,
    DividerBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot.core.consent import footer_hint
from bot.core.deliveries import describe_row_delivery
from bot.core.store import Job, RecipientRow, RecipientState, Summary
from bot.sms import Delivery, PhoneNumber
from bot.sms.encoding import MessageInfo
from bot.sms.errors import describe_code

from .ids import ActionId, BlockId, CallbackId

PREVIEW_CHARS = 120
DRY_RUN = "🧪 *Dry run*: nothing was sent to a phone. "


def escape(text: str) -> str:
    """Slack mrkdwn escaping for user text (also stops `<!channel>` style mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def counted(count: int, word: str) -> str:
    """`1 recipient`, `2,500 recipients`."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def code(masked: str) -> str:
    """A masked number (`+852 5123 ****`) for mrkdwn: in a code span, where Slack formats nothing. Bare,
    or in bold, its asterisks could pair up as bold and the number lose some of them."""
    return f"`{masked}`"


def codes(masked: Iterable[str], limit: int = 20) -> str:
    """The first `limit` masked numbers, each in code, comma-separated."""
    return ", ".join(code(m) for m in itertools.islice(masked, limit))


_MASK = r"\+\d{1,3} (?:\d{1,4} )?\*{4}"
_MASKED = re.compile(f"“({_MASK})”|(?<!`)({_MASK})(?!`)")


def code_masks(text: str) -> str:
    """Prose from the core or the client (an error, a reason) with the masked numbers in it in code (a
    quoted one loses its quotes: the code span sets it apart)."""
    return _MASKED.sub(lambda m: code(m.group(1) or m.group(2)), text)


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    flat = " ".join(text.split())
    return escape(flat if len(flat) <= limit else flat[: limit - 1] + "…")


# ---------------------------------------------------------------- send modal

TYPE_OPTIONS = [
    Option(value="NOTIFY", text="Notification"),
    Option(value="MKT", text="Marketing"),
    Option(value="OTP", text="Verification code (OTP)"),
]


def send_modal(
    metadata: str, *, sender_id: str | None = None, max_chars: int = 1500, mkt_footer: str = ""
) -> View:
    return View(
        type="modal",
        callback_id=CallbackId.SEND_MODAL,
        title=PlainTextObject(text="Send an SMS"),
        submit=PlainTextObject(text="Send"),
        close=PlainTextObject(text="Cancel"),
        private_metadata=metadata,
        blocks=[
            InputBlock(
                block_id=BlockId.SEND_TO,
                label=PlainTextObject(text="To"),
                hint=PlainTextObject(
                    text="With the country code, e.g. +852 5123 4567. Chinese-mainland numbers cannot be reached."
                ),
                element=PlainTextInputElement(action_id=ActionId.SEND_TO, placeholder="+852 5123 4567"),
            ),
            InputBlock(
                block_id=BlockId.SEND_MESSAGE,
                label=PlainTextObject(text="Message"),
                hint=PlainTextObject(
                    text="160 characters fit one SMS (70 if any character is outside GSM-7, like emoji or "
                    f"Chinese). {footer_hint(mkt_footer)}"
                ),
                element=PlainTextInputElement(
                    action_id=ActionId.SEND_MESSAGE, multiline=True, max_length=min(max_chars, 3000)
                ),
            ),
            InputBlock(
                block_id=BlockId.SEND_SENDER,
                optional=True,
                label=PlainTextObject(text="Sender ID"),
                hint=PlainTextObject(
                    text=f"Letters and digits, up to 11 (15 if all digits). Default: {sender_id or 'the account default'}."
                ),
                element=PlainTextInputElement(action_id=ActionId.SEND_SENDER, max_length=15),
            ),
            InputBlock(
                block_id=BlockId.SEND_TYPE,
                optional=True,
                label=PlainTextObject(text="Type"),
                element=StaticSelectElement(
                    action_id=ActionId.SEND_TYPE, placeholder="Notification", options=TYPE_OPTIONS
                ),
            ),
        ],
    )


def message_hint(info: MessageInfo) -> str:
    return info.summary()


# ---------------------------------------------------------------- channel messages


def parent_message(user_id: str, job: Job, recipient: RecipientRow, dry_run: bool) -> list[Block]:
    text = f"📱 <@{user_id}> texted {code(recipient.number.masked)} ({recipient.number.country_name})"
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=text)),
        ContextBlock(elements=[MarkdownTextObject(text=f"“{preview(recipient.message)}”")]),
    ]
    override = job.meta.get("optout_override")
    if isinstance(override, dict):
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=override_line(override))]))
    if dry_run:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=DRY_RUN)]))
    return blocks


def override_line(override: dict[str, Any]) -> str:
    """A text sent to a number opted out of all texts, by someone's explicit decision (recorded in the
    job by `SendService.send_single`): shown with the send, so the channel sees who decided and why."""
    opted = override.get("opted_out_by")
    at = override.get("opted_out_at")
    since = f", since {slack_date_time(at)}" if isinstance(at, int | float) else ""
    added = f" (added by <@{opted}>{since})" if opted else ""
    return (
        f"⚠️ *Opt-out overridden*: this number is opted out of all texts{added}. "
        f"<@{override.get('by')}> sent it anyway: “{preview(str(override.get('reason') or ''))}”"
    )


def parent_text(user_id: str, recipient: RecipientRow) -> str:
    return f"SMS to {recipient.number.masked} by <@{user_id}>"


def outcome_line(r: RecipientRow) -> str:
    if r.state == RecipientState.ACCEPTED:
        parts = ["✅ *Accepted* by the provider"]
        if r.message_id:
            parts.append(f"message id `{r.message_id}`")
        if r.segments is not None:
            parts.append(f"{r.segments} segment{'s' if r.segments != 1 else ''}")
        where = " / ".join(x for x in (r.country, r.carrier) if x)
        if where:
            parts.append(escape(where))
        return " · ".join(parts)
    if r.state == RecipientState.FAILED:
        reason = escape(r.error or describe_code(r.code))
        if r.code and r.code not in ("INVALID", "FAILED_LIST"):  # the code after the reason, one full stop
            return f"❌ *Not sent*: {reason.rstrip('.')} (`{r.code}`)."
        return f"❌ *Not sent*: {reason}"
    if r.state == RecipientState.UNKNOWN:
        ref = f" Provider request id `{r.request_id}`." if r.request_id else ""
        return (
            f"⚠️ *Outcome unknown*: {escape(r.error or 'no answer from the provider')} It was not resent. "
            f"Check the delivery receipts or the SMS console before sending again.{ref}"
        )
    return "⏳ Sending…"


def held_line(next_window: float | None) -> str:
    """A single marketing text held for the recipient's send window."""
    when = f" It goes out {slack_date_time(next_window)}." if next_window else ""
    return (
        "🌙 *Waiting for the recipient's send window*: marketing texts go out only in their daytime "
        f"(setting `SEND_WINDOW`).{when} Not sent yet."
    )


def send_at_block(block_id: str, action_id: str) -> InputBlock:
    """The optional "Send at" of the bulk and outage forms: Slack shows it in the sender's time zone."""
    return InputBlock(
        block_id=block_id,
        optional=True,
        label=PlainTextObject(text="Send at (optional)"),
        hint=PlainTextObject(text="In your Slack time zone. Leave empty to send as soon as you confirm."),
        element=DateTimePickerElement(action_id=action_id),
    )


def picked_time(values: dict[str, Any], block_id: str, action_id: str) -> float | None:
    """The epoch seconds chosen in a "Send at" picker, or None."""
    chosen = values.get(block_id, {}).get(action_id, {}).get("selected_date_time")
    return float(chosen) if isinstance(chosen, int | float) and chosen > 0 else None


def slack_time(ts: float) -> str:
    """A time Slack shows in the reader's own time zone (UTC where it cannot)."""
    return f"<!date^{int(ts)}^{{time}}|{time.strftime('%H:%M UTC', time.gmtime(ts))}>"


def slack_date_time(ts: float) -> str:
    """A date and time Slack shows in the reader's own time zone (UTC where it cannot)."""
    fallback = time.strftime("%a %d %b %H:%M UTC", time.gmtime(ts))
    return f"<!date^{int(ts)}^{{date_short_pretty}} {{time}}|{fallback}>"


def delivery_line(r: RecipientRow) -> str | None:
    """What the receipt said, for an accepted message (None for one that was not)."""
    if r.state != RecipientState.ACCEPTED:
        return None
    if r.delivery == Delivery.DELIVERED:
        line = "✓ *Delivered*" + (f" {slack_time(r.delivered_at)}" if r.delivered_at else "")
    elif r.delivery is not None:
        line = f"✗ *Not delivered*: {escape(describe_row_delivery(r.delivery, r.delivery_code, r.delivery_error))}"
    else:
        line = "⏳ Waiting for the delivery receipt"
    if r.reconciled:
        line += " (its outcome was unknown until the provider's receipt settled it; it was sent once)"
    return line


def delivery_word(r: RecipientRow) -> str:
    """One or two words for a message's state, for notification texts and the history."""
    if r.state != RecipientState.ACCEPTED:
        return r.state.value.replace("_", " ")
    if r.delivery == Delivery.DELIVERED:
        return "delivered"
    if r.delivery is not None:
        return "not delivered"
    return "accepted"


def outcome_message(
    r: RecipientRow, *, user_id: str | None = None, include_request: bool = False, dry_run: bool = False
) -> list[Block]:
    blocks: list[Block] = []
    if include_request and user_id:
        blocks.append(
            SectionBlock(text=MarkdownTextObject(text=f"<@{user_id}> texted: “{preview(r.message)}”"))
        )
    delivery = delivery_line(r)
    text = outcome_line(r) + (f"\n{delivery}" if delivery else "")
    blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
    if dry_run:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=DRY_RUN)]))
    return blocks


def fallback_message(r: RecipientRow, reason: str, dry_run: bool) -> list[Block]:
    """Sent to the sender alone when the bot cannot post in the channel."""
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=f"SMS to {code(r.number.masked)}: {outcome_line(r)}")),
        ContextBlock(elements=[MarkdownTextObject(text=reason)]),
    ]
    if dry_run:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=DRY_RUN)]))
    return blocks


def fallback_context(reason: str) -> list[Block]:
    return [ContextBlock(elements=[MarkdownTextObject(text=reason)])]


CANNOT_POST = {
    "not_in_channel": "I could not post the results thread here because I am not in this channel. "
    "Invite me with `/invite @SMS Ops` and later sends will be threaded here.",
    "channel_not_found": "I could not post the results thread here: this is a private channel or a direct "
    "message I am not part of. Invite me with `/invite @SMS Ops`, or send from a channel I am in.",
    "is_archived": "I could not post the results thread here: the channel is archived.",
}


def cannot_post_reason(error: str) -> str:
    return CANNOT_POST.get(error, f"I could not post the results thread here (Slack said `{error}`).")


# ---------------------------------------------------------------- command replies

HELP = """*Send SMS from Slack*
• `/sms +852 5123 4567 Your parcel ships today`: send now. The number may have spaces, dashes or brackets; \
write the country code (or the bot's default region applies).
• `/sms`: open the send form (sender ID and message type too).
• `/sms bulk`: a bulk send from a pasted list or a CSV file, with {column} placeholders and a confirmation.
• `/sms outage`: page contact groups (single sends at full speed), with a confirmation and a test-to-me option.
• `/sms groups` (`/sms groups reload`): the contact groups and any problems in the groups file.
• `/sms history [number]`: your recent sends (numbers masked); with a number, your texts to it.
• `/sms scheduled`: bulk and outage sends scheduled for later ("Send at" in their forms), each with Cancel.
• `/sms optout add|remove|list|import|export`: numbers that must not be texted (all texts, or marketing only); needs `ACCESS_OPTOUT`.
• `/sms audit [days]`: everyone's sends of the last 7 (or up to 90) days as a CSV file in a direct message: who, to whom, what, the outcome; needs `ACCESS_AUDIT`.
• `/sms help`: this text.
Results go to a thread in this channel, one thread per number, so a customer's history stays together. \
Numbers are shown masked (`+852 5123 ****`). Chinese-mainland numbers (+86) cannot be reached. Texts are one-way: recipients cannot reply by SMS."""


def help_blocks() -> list[Block]:
    return [SectionBlock(text=MarkdownTextObject(text=HELP))]


def history_blocks(
    rows: Sequence[tuple[Job, RecipientRow]],
    summaries: Mapping[str, Summary] | None = None,
    number: PhoneNumber | None = None,
) -> list[Block]:
    """The sender's recent sends: a single send's delivery state, a larger send's delivered count. With
    `number`, their texts to that number: each with its own state, in a larger send too."""
    if not rows:
        to = f" to {code(number.masked)}" if number else ""
        return [SectionBlock(text=MarkdownTextObject(text=f"You have not sent any SMS{to} yet."))]
    lines = []
    for job, first in rows:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(job.created_at))
        if number is not None:  # the row is that number's: its own state, whatever the send's size
            part = "" if job.total == 1 else f" (one of {job.total:,} recipients)"
            lines.append(f"• {when} · “{preview(first.message, 60)}”{part} · {delivery_word(first)}")
            continue
        who = code(first.number.masked) if job.total == 1 else f"*{job.total:,} recipients*"
        state = delivery_word(first) if job.total == 1 else job.state.value
        summary = (summaries or {}).get(job.id)
        if summary is not None and summary.accepted:
            state += f" · {summary.delivered:,} of {summary.accepted:,} delivered"
            if summary.undelivered:
                state += f", {summary.undelivered:,} not delivered"
        lines.append(f"• {when} · {who} · “{preview(first.message, 60)}” · {state}")
    return [
        SectionBlock(
            text=MarkdownTextObject(
                text=f"*Your recent sends to* {code(number.masked)}" if number else "*Your recent sends*"
            )
        ),
        DividerBlock(),
        SectionBlock(text=MarkdownTextObject(text="\n".join(lines))),
    ]
