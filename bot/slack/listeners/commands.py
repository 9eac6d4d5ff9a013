"""`/sms`: send now, open the send form, help, history. Acks first; the send runs in the worker."""

from __future__ import annotations

import logging
from typing import Any

from bot.core.access import Capability
from bot.core.commands import USAGE, CommandError, parse_send
from bot.core.consent import DailyCapReached
from bot.core.optouts import OptedOut
from bot.sms import InvalidNumber, parse_number

from .. import bulk_views, views
from ..acks import Listeners
from ..authz import may_page
from ..deps import Deps
from ..metadata import OverrideRequest, SendModalMetadata
from ..tell import open_view, tell_person
from .audit import audit_command
from .bulk import open_bulk_form
from .optout import optout_command, refusal_for_send, refusal_text
from .outage import groups_command, open_outage_form

log = logging.getLogger("bot.slack.commands")

COMMAND = "/sms"
SUBCOMMANDS = ("help", "history", "bulk", "outage", "groups", "optout", "scheduled")


async def sms_command_callback(
    ack: Any, command: dict[str, Any], respond: Any, client: Any, context: Any
) -> None:
    deps: Deps = context["deps"]
    text = (command.get("text") or "").strip()
    user_id = command["user_id"]
    first = text.split(None, 1)[0].lower() if text else ""

    if not text:
        await ack()
        if not await deps.access.allowed(Capability.SEND, user_id):
            await respond(text=deps.access.refusal(Capability.SEND))
            return
        metadata = SendModalMetadata(
            channel_id=command["channel_id"], response_url=command.get("response_url")
        )
        await open_view(
            client,
            trigger_id=command["trigger_id"],
            view=views.send_modal(
                metadata.dump(),
                sender_id=deps.settings.sender_id,
                max_chars=deps.settings.max_message_chars,
                mkt_footer=deps.settings.mkt_footer,
            ),
            user_id=user_id,
            response_url=command.get("response_url"),
            what="send form",
        )
        return
    if first == "help":
        await ack(text=views.HELP, blocks=views.help_blocks())
        return
    if first == "outage":
        await open_outage_form(ack, command, respond, client, deps)
        return
    if first == "groups":
        await groups_command(ack, respond, text, deps)
        return
    if first == "bulk":
        await open_bulk_form(ack, command, respond, client, deps)
        return
    if first == "scheduled":
        await ack()
        # Everyone's to those who may make bulk or outage sends (and cancel them); others see their own.
        everyone = await deps.access.allowed(Capability.BULK, user_id) or await may_page(deps, user_id)
        jobs = await deps.store.scheduled(20, created_by=None if everyone else user_id)
        await respond(
            text=f"{len(jobs)} scheduled sends", blocks=bulk_views.scheduled_blocks(jobs, everyone=everyone)
        )
        return
    if first in ("optout", "opt-out", "optouts"):
        await optout_command(
            ack, command, respond, client, deps, text.split(None, 1)[1] if " " in text else ""
        )
        return
    if first == "audit":
        await audit_command(ack, command, client, deps)
        return
    if first == "history":
        # `/sms history [number]`: with a number, only the user's texts to it.
        parts = text.split(None, 1)
        rest = parts[1] if len(parts) > 1 else ""
        number = None
        if rest:
            try:
                number = parse_number(rest, deps.settings.default_region)
            except InvalidNumber as exc:
                await ack(text=f"{exc.describe()} Write it like `/sms history +852 5123 4567`.")
                return
        # Acked first: the delivery counts of larger sends are read from all their recipients, which
        # grows with their size; the answer goes through the command's response_url (else a DM).
        await ack()
        limit = deps.settings.history_limit
        if number is None:
            rows = await deps.store.history(user_id, limit)  # indexed, bounded by the limit
            counts = await deps.store.summaries([job.id for job, _ in rows if job.total > 1])
        else:
            rows, counts = await deps.store.history(user_id, limit, e164=number.e164), {}
        await tell_person(
            client,
            user_id=user_id,
            response_url=command.get("response_url"),
            text=f"Your recent sends to {number.masked}" if number else "Your recent sends",
            blocks=views.history_blocks(rows, counts, number),
        )
        return
    if first.isalpha() and not any(ch.isdigit() for ch in text.split(None, 1)[0]):
        await ack(
            text=f"Unknown subcommand `{views.escape(first)}`. Write `/sms help` for the list, or send with "
            f"`{USAGE}`."
        )
        return
    try:
        parsed = parse_send(text, deps.settings.default_region, deps.settings.max_message_chars)
    except CommandError as exc:
        await ack(text=f"Nothing was sent. {views.code_masks(exc.message)}")
        return
    allowed = deps.access.decide_now(Capability.SEND, user_id)
    if allowed is None:  # needs a Slack API lookup: answer Slack first
        await ack()
        allowed = await deps.access.allowed(Capability.SEND, user_id)
        reply = respond
    else:
        reply = ack
    if not allowed:
        await reply(text=f"Nothing was sent. {deps.access.refusal(Capability.SEND)}")
        return
    # Record the intent (one row) before answering: bounded, and nothing is lost if we stop right after.
    # Keyed by the trigger id (one per invocation): Slack's redelivery of the same command, on this
    # replica or another, finds the job instead of sending again.
    trigger = command.get("trigger_id")
    try:
        job, created = await deps.service.send_single(
            user_id=user_id,
            channel_id=command.get("channel_id"),
            response_url=command.get("response_url"),
            number=parsed.number,
            message=parsed.message,
            sender_id=deps.settings.sender_id,
            source_key=f"trigger:{trigger}" if trigger else None,
        )
    except DailyCapReached as exc:
        await reply(text=views.code_masks(exc.message))
        return
    except OptedOut as exc:
        if reply is ack:  # whether they may override can need a Slack lookup, and the draft a write
            await ack()
        log.info("send refused: %s is opted out (user %s)", parsed.number.masked, user_id)
        request = OverrideRequest.of(
            parsed.number,
            parsed.message,
            sender_id=deps.settings.sender_id,
            channel_id=command.get("channel_id"),
            response_url=command.get("response_url"),
        )
        await respond(
            text=refusal_text(exc),
            blocks=await refusal_for_send(deps, exc, user_id, request),
        )
        return
    if not created:
        await reply(
            text=f"Already on its way: this command reached the bot twice, and the SMS to {views.code(parsed.number.masked)} "
            "is sent once. The result will appear in this channel's thread for that number."
        )
        log.info("duplicate command job=%s user=%s", job.id, user_id)
        return
    await reply(
        text=f"⏳ Sending to {views.code(parsed.number.masked)} ({parsed.info.summary()}). The result will appear in this "
        "channel's thread for that number."
    )
    log.info("send queued job=%s user=%s to=%s", job.id, user_id, parsed.number.masked)


def register(app: Listeners) -> None:
    app.command(COMMAND)(sms_command_callback)
