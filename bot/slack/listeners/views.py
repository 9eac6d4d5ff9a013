"""Submissions of the send modal: inline errors on the right block, or an idempotent job and a closed modal."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from bot.core.access import Capability
from bot.core.consent import DailyCapReached, with_footer
from bot.core.optouts import OptedOut
from bot.sms.encoding import MessageError, analyse, validate_message
from bot.sms.models import MessageType, check_sender_id
from bot.sms.phone import InvalidNumber, parse_number

from .. import authz
from ..acks import Listeners
from ..deps import Deps
from ..ids import ActionId, BlockId, CallbackId
from ..metadata import SendModalMetadata

log = logging.getLogger("bot.slack.views")


def _value(values: dict[str, Any], block: str, action: str) -> str:
    element = values.get(block, {}).get(action, {})
    if "selected_option" in element:
        option = element.get("selected_option") or {}
        return str(option.get("value") or "")
    return str(element.get("value") or "")


async def send_modal_submission_callback(
    ack: Any, body: dict[str, Any], view: dict[str, Any], context: Any
) -> None:
    deps: Deps = context["deps"]
    refused = await authz.refusal(deps, Capability.SEND, body["user"]["id"])
    if refused:
        await ack(response_action="errors", errors={BlockId.SEND_TO: f"Nothing was sent. {refused}"})
        return
    settings = deps.settings
    values = view["state"]["values"]
    to_text = _value(values, BlockId.SEND_TO, ActionId.SEND_TO)
    message = _value(values, BlockId.SEND_MESSAGE, ActionId.SEND_MESSAGE).strip()
    sender = _value(values, BlockId.SEND_SENDER, ActionId.SEND_SENDER).strip() or settings.sender_id
    msg_type = _value(values, BlockId.SEND_TYPE, ActionId.SEND_TYPE) or None

    errors: dict[str, str] = {}
    number = None
    try:
        number = parse_number(to_text, settings.default_region)
    except InvalidNumber as exc:
        errors[BlockId.SEND_TO] = exc.reason
    message = with_footer(message, msg_type, settings.mkt_footer) if message else message
    try:
        validate_message(message, settings.max_message_chars)
    except MessageError as exc:
        hint = f" ({analyse(message).summary()})" if message else ""
        errors[BlockId.SEND_MESSAGE] = exc.reason + hint
    if sender:
        try:
            check_sender_id(sender)
        except ValueError as exc:
            errors[BlockId.SEND_SENDER] = str(exc).capitalize() + "."
    if msg_type is not None and msg_type not in {t.value for t in MessageType}:
        errors[BlockId.SEND_TYPE] = "Choose Notification, Marketing or Verification code."
    try:
        metadata = SendModalMetadata.model_validate_json(view.get("private_metadata") or "{}")
    except ValidationError:
        errors[BlockId.SEND_TO] = "This form is out of date. Close it and run /sms again."
        metadata = None
    if errors or number is None or metadata is None:
        # Only problems go in Slack's error slots (shown in red); a valid message gets none.
        await ack(response_action="errors", errors=errors)
        return
    # One insert, keyed by the view id: a double submit or a retried submission starts one job.
    try:
        job, created = await deps.service.send_single(
            user_id=body["user"]["id"],
            channel_id=metadata.channel_id,
            response_url=metadata.response_url,
            number=number,
            message=message,
            sender_id=sender,
            type=msg_type,
            source_key=f"view:{view['id']}",
        )
    except DailyCapReached as exc:
        await ack(response_action="errors", errors={BlockId.SEND_TO: exc.message})
        return
    except OptedOut as exc:
        hint = (
            " Someone allowed to manage opt-outs can send it with `/sms <number> <message>` and “Send anyway…”."
            if exc.overridable
            else ""
        )
        await ack(response_action="errors", errors={BlockId.SEND_TO: exc.message + hint})
        return
    await ack()
    if created:
        log.info("send queued job=%s (modal) to=%s", job.id, number.masked)


def register(app: Listeners) -> None:
    app.view(CallbackId.SEND_MODAL)(send_modal_submission_callback)
