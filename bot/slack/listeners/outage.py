"""Outage SMS in Slack: `/sms outage` form → confirmation (shared with bulk) → one job of single sends.

`/sms groups` lists the contact groups and their problems; `/sms groups reload` re-reads the file.
The thread summary's "Send update" button opens the form for exactly the people who got the alert.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from slack_sdk.errors import SlackApiError

from bot.core import outage
from bot.core.access import Capability
from bot.core.bulk import BulkProblem, save_draft, schedule_problem
from bot.core.groups import GroupBook

from .. import bulk_views, outage_views, views
from ..acks import Listeners
from ..authz import may_page
from ..deps import Deps
from ..ids import ActionId, BlockId, CallbackId
from ..metadata import BulkConfirmMetadata, OutageFormMetadata, digest
from ..tell import open_view

log = logging.getLogger("bot.slack.outage")


async def open_outage_form(ack: Any, command: dict[str, Any], respond: Any, client: Any, deps: Deps) -> None:
    await ack()
    if not await may_page(deps, command["user_id"]):
        await respond(text=deps.access.refusal(Capability.OUTAGE))
        return
    book = deps.groups.cached()
    template = outage.group_template([], book)
    metadata = OutageFormMetadata(
        channel_id=command["channel_id"], response_url=command.get("response_url"), prefilled=digest(template)
    )
    await open_view(
        client,
        trigger_id=command["trigger_id"],
        view=outage_views.outage_form(metadata.dump(), book, message=template),
        user_id=command["user_id"],
        response_url=command.get("response_url"),
        what="outage form",
    )


async def outage_groups_changed_callback(ack: Any, body: dict[str, Any], client: Any, context: Any) -> None:
    """Groups chosen in the form: put the (first) group's template in the message box, unless the user
    has written their own message there."""
    await ack()
    deps: Deps = context["deps"]
    view = body.get("view") or {}
    try:
        metadata = OutageFormMetadata.model_validate_json(view.get("private_metadata") or "{}")
    except ValidationError:
        return
    book = deps.groups.cached()
    change = prefill(((view.get("state") or {}).get("values")) or {}, metadata, book)
    if change is None:
        return
    metadata, template = change
    updated = outage_views.outage_form(
        metadata.dump(), book, message=template, message_version=metadata.message_version
    )
    try:
        await client.views_update(view_id=view.get("id"), hash=view.get("hash"), view=updated)
    except SlackApiError as exc:  # e.g. hash_conflict: the user changed the form meanwhile; keep theirs
        log.info("outage form not updated with the group's template: %s", exc.response.get("error"))


def prefill(
    values: dict[str, Any], metadata: OutageFormMetadata, book: GroupBook
) -> tuple[OutageFormMetadata, str] | None:
    """What the message box should now hold, given the form's state: the chosen group's template, as new
    metadata and text; None to leave the box as it is (it holds the user's own words, or that template)."""
    current = _message(values)
    if current.strip() and digest(current) != metadata.prefilled:
        return None  # their own words: never replaced
    chosen = (values.get(BlockId.OUTAGE_GROUPS, {}).get(ActionId.OUTAGE_GROUPS) or {}).get("selected_options")
    template = outage.group_template([o["value"] for o in chosen or []], book)
    if digest(template) == metadata.prefilled and current.strip():
        return None
    new = metadata.model_copy(
        update={"prefilled": digest(template), "message_version": metadata.message_version + 1}
    )
    return new, template


def _message(values: dict[str, Any]) -> str:
    """The message box's text, whichever version of its block the form holds."""
    for block_id, actions in values.items():
        if outage_views.is_message_block(block_id):
            return (actions.get(ActionId.OUTAGE_MESSAGE) or {}).get("value") or ""
    return ""


def _message_block(view: dict[str, Any]) -> str:
    for block in view.get("blocks", []):
        if outage_views.is_message_block(block.get("block_id") or ""):
            return block["block_id"]
    return BlockId.OUTAGE_MESSAGE


async def groups_command(ack: Any, respond: Any, text: str, deps: Deps) -> None:
    if text.split()[1:2] != ["reload"]:
        book = deps.groups.cached()
        await ack(text=f"{len(book.groups)} contact groups", blocks=outage_views.groups_blocks(book))
        return
    await ack()  # reading and validating the file grows with its size: answer Slack first
    book = deps.groups.reload()
    await respond(
        text=f"Reloaded: {len(book.groups)} contact groups", blocks=outage_views.groups_blocks(book)
    )


def _form(
    view: dict[str, Any], user_id: str, metadata: OutageFormMetadata, sender: str | None
) -> outage.OutageForm:
    values = view["state"]["values"]

    def el(block: str, action: str) -> dict[str, Any]:
        return values.get(block, {}).get(action, {}) or {}

    status = el(BlockId.OUTAGE_STATUS, ActionId.OUTAGE_STATUS).get("selected_option") or {}
    return outage.OutageForm(
        user_id=user_id,
        channel_id=metadata.channel_id,
        response_url=metadata.response_url,
        groups=[
            o["value"]
            for o in el(BlockId.OUTAGE_GROUPS, ActionId.OUTAGE_GROUPS).get("selected_options") or []
        ],
        extra_numbers=el(BlockId.OUTAGE_EXTRA, ActionId.OUTAGE_EXTRA).get("value") or "",
        service=el(BlockId.OUTAGE_SERVICE, ActionId.OUTAGE_SERVICE).get("value") or "",
        status=status.get("value") or "",
        details=el(BlockId.OUTAGE_DETAILS, ActionId.OUTAGE_DETAILS).get("value") or "",
        message=_message(values),
        test_to_me=bool(el(BlockId.OUTAGE_TEST, ActionId.OUTAGE_TEST).get("selected_options")),
        follow_up_of=metadata.follow_up_of,
        sender_id=sender,
        send_at=views.picked_time(values, BlockId.OUTAGE_SEND_AT, ActionId.OUTAGE_SEND_AT),
    )


BLOCK_FOR = {
    "send_at": BlockId.OUTAGE_SEND_AT,
    "groups": BlockId.OUTAGE_GROUPS,
    "details": BlockId.OUTAGE_DETAILS,
    "extra": BlockId.OUTAGE_EXTRA,
}


async def outage_form_submission_callback(
    ack: Any, body: dict[str, Any], view: dict[str, Any], context: Any
) -> None:
    deps: Deps = context["deps"]
    user_id = body["user"]["id"]
    try:
        metadata = OutageFormMetadata.model_validate_json(view.get("private_metadata") or "{}")
    except ValidationError:
        await ack(
            response_action="errors",
            errors={_message_block(view): "This form is out of date; run /sms outage again."},
        )
        return
    form = _form(view, user_id, metadata, deps.settings.sender_id)
    message_block = _message_block(view)
    block_for = {**BLOCK_FOR, "message": message_block}
    book = deps.groups.cached()  # kept fresh by a background watcher; reading the file here could be slow
    found = outage.problems(form, book)
    scheduled = schedule_problem(form.send_at, deps.store.clock(), deps.bulk_limits)
    if scheduled:
        found["send_at"] = scheduled
    has_groups_block = any(b.get("block_id") == BlockId.OUTAGE_GROUPS for b in view.get("blocks", []))
    if "groups" in found and not has_groups_block:
        found[BlockId.OUTAGE_EXTRA] = found.pop("groups")
    if found:
        await ack(response_action="errors", errors={block_for.get(k, k): v for k, v in found.items()})
        return
    if not await may_page(deps, user_id, form.groups):
        await ack(
            response_action="errors",
            errors={
                BlockId.OUTAGE_GROUPS if has_groups_block else message_block: deps.access.refusal(
                    Capability.OUTAGE
                )
                + " (Groups with an `allow` list decide for themselves.)"
            },
        )
        return
    try:  # bounded: members were validated when the groups file was read
        draft = await outage.prepare(form, book, deps.store, deps.bulk_limits, book.number_for(user_id))
    except BulkProblem as exc:
        await ack(
            response_action="errors",
            errors={block_for.get(exc.field or "message", message_block): exc.message},
        )
        return
    draft_id = await deps.store.create_draft(user_id)
    await save_draft(deps.store, draft, draft_id)
    confirm = bulk_views.confirm_view(
        None,
        draft,
        BulkConfirmMetadata(draft_id=draft_id).dump(),
        where=f"<#{form.channel_id}>",
        title="Confirm outage SMS" if not form.test_to_me else "Confirm test SMS",
    )
    await ack(response_action="push", view=confirm)


async def follow_up_callback(ack: Any, body: dict[str, Any], client: Any, context: Any, respond: Any) -> None:
    await ack()
    deps: Deps = context["deps"]
    job_id = body["actions"][0]["value"]
    job = await deps.store.get_job(job_id)
    if job is None:
        await respond(text="That alert no longer exists.", replace_original=False, response_type="ephemeral")
        return
    if not await may_page(deps, body["user"]["id"], list(job.meta.get("groups") or [])):
        await respond(
            text=deps.access.refusal(Capability.OUTAGE), replace_original=False, response_type="ephemeral"
        )
        return
    template = str(job.meta.get("template") or "") or outage.DEFAULT_TEMPLATE
    metadata = OutageFormMetadata(
        channel_id=job.channel_id or body.get("channel", {}).get("id", ""),
        response_url=body.get("response_url"),
        follow_up_of=job_id,
        prefilled=digest(template),
    )
    await open_view(
        client,
        trigger_id=body["trigger_id"],
        view=outage_views.outage_form(
            metadata.dump(),
            deps.groups.cached(),
            message=template,
            follow_up_count=job.total,
            previous={"service": job.meta.get("service", ""), "status": "Resolved"},
        ),
        user_id=body["user"]["id"],
        response_url=body.get("response_url"),
        what="follow-up form",
    )


def register(app: Listeners) -> None:
    app.view(CallbackId.OUTAGE_FORM)(outage_form_submission_callback)
    app.action(ActionId.OUTAGE_FOLLOW_UP)(follow_up_callback)
    app.action(ActionId.OUTAGE_GROUPS)(outage_groups_changed_callback)
