"""Telling one person something when the channel thread cannot carry it: the one fallback chain.

In order: the `response_url` of their command or form (an ephemeral message where they ran it; Slack
keeps it for 30 minutes and five uses), then a direct message from the bot (the app's own DM, which
`chat:write` allows). If both fail, the log gets an error with a reference id. Every place that must
reach the sender after the thread failed (the reporter, a form that could not be shown or updated)
goes through `tell_person`.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.webhook.async_client import AsyncWebhookClient

from .server import reference

log = logging.getLogger("bot.slack.tell")


class Told(StrEnum):
    RESPONSE_URL = "response_url"
    DIRECT_MESSAGE = "direct_message"
    NOBODY = "nobody"


async def tell_person(
    client: Any,
    *,
    user_id: str,
    response_url: str | None,
    text: str,
    blocks: list[Any] | None = None,
) -> Told:
    """Tell `user_id` `text` (with `blocks`) through `response_url`, else a direct message."""
    if response_url:
        try:
            resp = await AsyncWebhookClient(response_url).send(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
            if resp.status_code == 200:
                return Told.RESPONSE_URL
            log.info(
                "response_url refused the message (HTTP %s %s): trying a DM", resp.status_code, resp.body
            )
        except Exception as exc:  # a network error: the next way may still work
            log.info("response_url unreachable (%s): trying a DM", type(exc).__name__)
    try:
        await client.chat_postMessage(channel=user_id, text=text, blocks=blocks, unfurl_links=False)
        return Told.DIRECT_MESSAGE
    except SlackApiError as exc:
        error = exc.response.get("error")
    except Exception as exc:
        error = type(exc).__name__
    log.error("could not tell %s (no response_url left, DM failed: %s) ref=%s", user_id, error, reference())
    return Told.NOBODY


async def open_view(
    client: Any, *, trigger_id: str, view: Any, user_id: str, response_url: str | None, what: str
) -> bool:
    """`views.open`, and when Slack refuses it (`expired_trigger_id` when the bot took more than 3
    seconds, a view Slack finds invalid), tell the person why and what to do. Returns whether it opened."""
    try:
        await client.views_open(trigger_id=trigger_id, view=view)
        return True
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "unknown_error")
    ref = reference()
    log.warning("could not open the %s for %s: %s ref=%s", what, user_id, error, ref)
    if error == "expired_trigger_id":
        why = "Slack waited too long for it (it allows three seconds)"
    else:
        why = f"Slack refused it ({error})"
    await tell_person(
        client,
        user_id=user_id,
        response_url=response_url,
        text=f"The {what} could not open: {why}. Nothing was sent. Run the command again. (ref {ref})",
    )
    return False
