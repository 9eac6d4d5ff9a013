"""`/sms optout add|remove|list|import|export`, and "Send anyway…" for a single send refused for an opt-out.

Everything here needs ACCESS_OPTOUT. Lists shown in Slack are masked; the export (full numbers) goes to
the person who asked, as a file in a direct message.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import ValidationError

from bot.core.access import Capability
from bot.core.bulk import BulkProblem
from bot.core.commands import CommandError, parse_optout
from bot.core.consent import DailyCapReached
from bot.core.optouts import OptedOut, OptOuts, Override, Scope
from bot.core.store import DraftState

from .. import authz, optout_views
from ..acks import Listeners
from ..deps import Deps
from ..ids import ActionId, BlockId, CallbackId
from ..metadata import OverrideRequest, SendModalMetadata
from ..server import reference
from ..tell import open_view, tell_person
from ..views import code, code_masks, counted, escape
from .bulk import download_text

log = logging.getLogger("bot.slack.optout")


async def optout_command(
    ack: Any, command: dict[str, Any], respond: Any, client: Any, deps: Deps, text: str
) -> None:
    await ack()
    user_id = command["user_id"]
    # Only a command that would change the list says that nothing was changed (not `list`, `export`).
    first = (text.split(None, 1) or ["list"])[0].lower()
    unchanged = "" if first in ("list", "export") else "Nothing was changed. "
    if not await deps.access.allowed(Capability.OPTOUT, user_id):
        await respond(text=f"{unchanged}{deps.access.refusal(Capability.OPTOUT)}")
        return
    try:
        cmd = parse_optout(text, deps.settings.default_region)
    except CommandError as exc:
        await respond(text=f"{unchanged}{code_masks(exc.message)}")
        return
    optouts = OptOuts(deps.store)
    if cmd.action == "import":
        metadata = SendModalMetadata(
            channel_id=command["channel_id"], response_url=command.get("response_url")
        )
        await open_view(
            client,
            trigger_id=command["trigger_id"],
            view=optout_views.import_modal(metadata.dump()),
            user_id=user_id,
            response_url=command.get("response_url"),
            what="opt-out import form",
        )
        return
    if cmd.action == "export":
        await _export(client, optouts, user_id, respond)
        return
    if cmd.action == "list" and cmd.number is None:
        count, latest = await optouts.latest(20)
        await respond(
            text=f"{counted(count, 'number')} opted out.", blocks=optout_views.list_blocks(count, latest)
        )
        return
    number = cmd.number
    assert number is not None  # parse_optout gives one for add, remove and a lookup
    if cmd.action == "list":
        found = await optouts.lookup(number.e164)
        await respond(
            text=code_masks(f"{found.describe(escape)}.")
            if found
            else f"{code(number.masked)} is not opted out."
        )
        return
    if cmd.action == "remove":
        removed = await optouts.remove([number.e164])
        log.info("opt-out removed by %s: %s (%d)", user_id, number.masked, removed)
        await respond(
            text=f"✅ {code(number.masked)} is no longer opted out: it can be texted again."
            if removed
            else f"{code(number.masked)} was not opted out. Nothing was changed."
        )
        return
    changed, _ = await optouts.add([number], scope=cmd.scope, reason=cmd.reason, by=user_id, source="slack")
    entry = await optouts.lookup(number.e164)
    log.info("opt-out added by %s: %s (%s)", user_id, number.masked, cmd.scope)
    shown = code_masks(entry.describe(escape)) if entry else code(number.masked)
    if changed:
        what = "No more texts" if entry is None or entry.scope == Scope.ALL else "No more marketing texts"
        await respond(text=f"✅ {shown}. {what} will go to it, including from sends already running.")
    else:
        await respond(text=f"Already on the list: {shown}. Nothing was changed.")


async def _export(client: Any, optouts: OptOuts, user_id: str, respond: Any) -> None:
    content, count = await optouts.export_csv()
    try:
        dm = await client.conversations_open(users=user_id)
        await client.files_upload_v2(
            channel=dm["channel"]["id"],
            content=content,
            filename=f"sms-optouts-{time.strftime('%Y-%m-%d', time.gmtime())}.csv",
            title="SMS opt-outs",
            initial_comment=f"The opt-out list: {counted(count, 'number')} (full numbers: keep this file private).",
        )
    except Exception:
        ref = reference()
        log.exception("opt-out export could not be sent ref=%s", ref)
        await respond(text=f"The opt-out list could not be sent to you (reference {ref}). Try again later.")
        return
    await respond(
        text=f"Sent you the opt-out list ({counted(count, 'number')}) as a CSV file in a direct message."
    )


async def optout_import_submission_callback(
    ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any, context: Any
) -> None:
    deps: Deps = context["deps"]
    user_id = body["user"]["id"]
    refused = await authz.refusal(deps, Capability.OPTOUT, user_id)
    if refused:
        await ack(response_action="errors", errors={BlockId.OPTOUT_LIST: f"Nothing was imported. {refused}"})
        return
    values = view["state"]["values"]
    files = values.get(BlockId.OPTOUT_FILE, {}).get(ActionId.OPTOUT_FILE, {}).get("files") or []
    pasted = values.get(BlockId.OPTOUT_LIST, {}).get(ActionId.OPTOUT_LIST, {}).get("value") or ""
    option = values.get(BlockId.OPTOUT_SCOPE, {}).get(ActionId.OPTOUT_SCOPE, {}).get("selected_option") or {}
    reason = (
        values.get(BlockId.OPTOUT_REASON, {}).get(ActionId.OPTOUT_REASON, {}).get("value") or ""
    ).strip()
    if not files and not pasted.strip():
        await ack(
            response_action="errors",
            errors={BlockId.OPTOUT_LIST: "Attach a CSV file or paste at least one number."},
        )
        return
    try:
        metadata = SendModalMetadata.model_validate_json(view.get("private_metadata") or "{}")
    except ValidationError:
        metadata = SendModalMetadata(channel_id="")
    await ack()
    scope = Scope(option.get("value") or Scope.ALL) if option.get("value") in tuple(Scope) else Scope.ALL
    deps.spawn(
        _import(
            deps, client, user_id, metadata.response_url, files[0] if files else None, pasted, scope, reason
        )
    )


async def _import(
    deps: Deps,
    client: Any,
    user_id: str,
    response_url: str | None,
    file: dict[str, Any] | None,
    pasted: str,
    scope: Scope,
    reason: str,
) -> None:
    name = (file or {}).get("name") or "the pasted list"
    try:
        text = await download_text(client, file) if file else pasted
        result = await OptOuts(deps.store).import_csv(
            text,
            scope=scope,
            reason=reason,
            by=user_id,
            source=f"import:{name}"[:200],
            default_region=deps.settings.default_region,
        )
        log.info("opt-out import by %s: %d added, %d refused", user_id, result.added, len(result.refused))
        message = optout_views.import_result(result, f"“{name}”" if file else name)
    except BulkProblem as exc:
        message = f"Nothing was imported. {code_masks(exc.message)}"
    except Exception:
        ref = reference()
        log.exception("opt-out import failed ref=%s", ref)
        message = f"The opt-out import failed (reference {ref}). Nothing may have been added; try again."
    await tell_person(client, user_id=user_id, response_url=response_url, text=message)


# ---------------------------------------------------------------------- overriding an opt-out, for one send
async def refusal_for_send(deps: Deps, exc: OptedOut, user_id: str, request: OverrideRequest) -> list[Any]:
    """The blocks of a single send refused for an opt-out: with "Send anyway…" when this person may
    override it (`request`: the send, kept in a draft the button names; never in the button itself)."""
    draft_id = None
    if exc.overridable and await deps.access.allowed(Capability.OPTOUT, user_id):
        draft_id = await deps.store.create_draft(
            user_id, {"override": request.model_dump()}, state=DraftState.OPEN
        )
    hint = "" if draft_id else " Ask someone allowed to manage opt-outs (`ACCESS_OPTOUT`) if it must go."
    return optout_views.refused_blocks(refusal_text(exc) + hint, draft_id)


def refusal_text(exc: OptedOut) -> str:
    """A single send refused for an opt-out, in words for Slack: the reason (someone's own words)
    escaped, the mention of who added it kept."""
    return f"Nothing was sent: {exc.optout.describe(escape)}."


async def _override_request(deps: Deps, draft_id: str, user_id: str) -> tuple[OverrideRequest | None, str]:
    """The send a "Send anyway…" draft holds, or (None, why it cannot be used)."""
    draft = await deps.store.get_draft(draft_id) if draft_id else None
    try:
        request = OverrideRequest.model_validate(draft.head["override"]) if draft else None
    except (KeyError, ValidationError):
        request = None
    if draft is None or request is None:
        return None, "This send has expired. Run the /sms command again."
    if draft.user_id != user_id:
        return None, authz.not_theirs(draft.user_id)
    return request, ""


async def override_open_callback(
    ack: Any, body: dict[str, Any], client: Any, context: Any, respond: Any
) -> None:
    await ack()
    deps: Deps = context["deps"]
    user_id = body["user"]["id"]
    refused = await authz.refusal(deps, Capability.OPTOUT, user_id)
    if refused:
        await respond(text=f"Nothing was sent. {refused}", replace_original=False)
        return
    draft_id = str((body.get("actions") or [{}])[0].get("value") or "")
    request, problem = await _override_request(deps, draft_id, user_id)
    if request is None:
        await respond(text=problem, replace_original=False)
        return
    optout = await OptOuts(deps.store).lookup(request.e164)
    if optout is None:
        await respond(
            text="That number is no longer opted out: send it again with /sms.", replace_original=False
        )
        return
    await open_view(
        client,
        trigger_id=body["trigger_id"],
        view=optout_views.override_modal(draft_id, optout, request.message),
        user_id=user_id,
        response_url=body.get("response_url"),
        what="opt-out override",
    )


async def override_submission_callback(
    ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any, context: Any
) -> None:
    deps: Deps = context["deps"]
    user_id = body["user"]["id"]
    refused = await authz.refusal(deps, Capability.OPTOUT, user_id)
    if refused:
        await ack(response_action="errors", errors={BlockId.OVERRIDE_REASON: f"Nothing was sent. {refused}"})
        return
    reason = (
        view["state"]["values"]
        .get(BlockId.OVERRIDE_REASON, {})
        .get(ActionId.OVERRIDE_REASON, {})
        .get("value")
        or ""
    ).strip()
    draft_id = view.get("private_metadata") or ""
    request, problem = await _override_request(deps, draft_id, user_id)
    if request is None:
        await ack(response_action="errors", errors={BlockId.OVERRIDE_REASON: problem})
        return
    if len(reason) < 5:
        await ack(response_action="errors", errors={BlockId.OVERRIDE_REASON: "Say why, in a few words."})
        return
    try:
        job, created = await deps.service.send_single(
            user_id=user_id,
            channel_id=request.channel_id,
            response_url=request.response_url,
            number=request.number,
            message=request.message,
            sender_id=request.sender_id,
            type=request.type,
            source_key=f"override:{draft_id}",
            override=Override(by=user_id, reason=reason),
        )
    except (OptedOut, DailyCapReached) as exc:
        await ack(response_action="errors", errors={BlockId.OVERRIDE_REASON: exc.message})
        return
    await ack()
    if created:
        log.warning("opt-out overridden by %s for %s: job %s", user_id, request.number.masked, job.id)


def register(app: Listeners) -> None:
    app.view(CallbackId.OPTOUT_IMPORT)(optout_import_submission_callback)
    app.action(ActionId.OVERRIDE_OPEN)(override_open_callback)
    app.view(CallbackId.OPTOUT_OVERRIDE)(override_submission_callback)
