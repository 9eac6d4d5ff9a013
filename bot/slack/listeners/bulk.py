"""Bulk sends in Slack: `/sms bulk` form → pushed "checking" view → confirmation → one job.

Before each ack only bounded work runs; the list itself (pasted or a CSV file of up to
BULK_MAX_RECIPIENTS lines) is downloaded and validated after the ack, and the pushed view is updated
with the confirmation or the problem.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from pydantic import ValidationError
from slack_sdk.errors import SlackApiError

from bot.core import bulk
from bot.core.access import Capability
from bot.core.store import DraftState, JobKind

from .. import authz, bulk_views, views
from ..acks import Listeners
from ..deps import Deps
from ..ids import ActionId, BlockId, CallbackId
from ..metadata import BulkConfirmMetadata, BulkFormMetadata
from ..server import reference
from ..tell import open_view, tell_person

log = logging.getLogger("bot.slack.bulk")

MAX_FILE_BYTES = 10 * 1024 * 1024


async def open_bulk_form(ack: Any, command: dict[str, Any], respond: Any, client: Any, deps: Deps) -> None:
    await ack()
    if not await deps.access.allowed(Capability.BULK, command["user_id"]):
        await respond(text=deps.access.refusal(Capability.BULK))
        return
    metadata = BulkFormMetadata(channel_id=command["channel_id"], response_url=command.get("response_url"))
    await open_view(
        client,
        trigger_id=command["trigger_id"],
        view=bulk_views.bulk_form(
            metadata.dump(),
            max_recipients=deps.settings.bulk_max_recipients,
            max_chars=deps.settings.max_message_chars,
            mkt_footer=deps.settings.mkt_footer,
        ),
        user_id=command["user_id"],
        response_url=command.get("response_url"),
        what="bulk form",
    )


def _form(
    view: dict[str, Any], user_id: str, metadata: BulkFormMetadata
) -> tuple[bulk.BulkForm, dict | None]:
    values = view["state"]["values"]

    def value(block: str, action: str) -> Any:
        return values.get(block, {}).get(action, {})

    files = value(BlockId.BULK_FILE, ActionId.BULK_FILE).get("files") or []
    validity = value(BlockId.BULK_VALIDITY, ActionId.BULK_VALIDITY).get("value")
    type_option = value(BlockId.BULK_TYPE, ActionId.BULK_TYPE).get("selected_option") or {}
    form = bulk.BulkForm(
        user_id=user_id,
        channel_id=metadata.channel_id,
        response_url=metadata.response_url,
        recipients_text=value(BlockId.BULK_RECIPIENTS, ActionId.BULK_RECIPIENTS).get("value") or "",
        template=(value(BlockId.BULK_MESSAGE, ActionId.BULK_MESSAGE).get("value") or "").strip(),
        type=type_option.get("value") or "NOTIFY",
        sender_id=(value(BlockId.BULK_SENDER, ActionId.BULK_SENDER).get("value") or "").strip() or None,
        validity=int(validity)
        if validity not in (None, "") and str(validity).lstrip("-").isdigit()
        else None,
        file_name=files[0].get("name") if files else None,
        send_at=views.picked_time(values, BlockId.BULK_SEND_AT, ActionId.BULK_SEND_AT),
    )
    return form, (files[0] if files else None)


BLOCK_FOR = {
    "recipients": BlockId.BULK_RECIPIENTS,
    "message": BlockId.BULK_MESSAGE,
    "sender": BlockId.BULK_SENDER,
    "validity": BlockId.BULK_VALIDITY,
    "type": BlockId.BULK_TYPE,
    "send_at": BlockId.BULK_SEND_AT,
}


async def bulk_form_submission_callback(
    ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any, context: Any
) -> None:
    deps: Deps = context["deps"]
    try:
        metadata = BulkFormMetadata.model_validate_json(view.get("private_metadata") or "{}")
    except ValidationError:
        await ack(
            response_action="errors",
            errors={BlockId.BULK_MESSAGE: "This form is out of date; run /sms bulk again."},
        )
        return
    refused = await authz.refusal(deps, Capability.BULK, body["user"]["id"])
    if refused:
        await ack(response_action="errors", errors={BlockId.BULK_MESSAGE: refused})
        return
    form, file = _form(view, body["user"]["id"], metadata)
    if form.sender_id is None:
        form.sender_id = deps.settings.sender_id
    problems = bulk.quick_problems(form, deps.bulk_limits, deps.store.clock())
    if problems:
        await ack(response_action="errors", errors={BLOCK_FOR[k]: v for k, v in problems.items()})
        return
    draft_id = await deps.store.create_draft(form.user_id)
    external_id = f"bulk-{draft_id}"
    await ack(response_action="push", view=bulk_views.checking_view(external_id))
    deps.spawn(_validate(deps, client, form, file, draft_id, external_id))


async def _validate(
    deps: Deps, client: Any, form: bulk.BulkForm, file: dict | None, draft_id: str, external_id: str
) -> None:
    try:
        if file is not None:
            form.file_text = await download_text(client, file)
        draft = await bulk.prepare(form, deps.bulk_limits, deps.store)
    except bulk.BulkProblem as exc:
        await deps.store.discard_draft(draft_id)
        await _update(
            deps, client, draft_id, external_id, bulk_views.problem_view(external_id, exc.message),
            form, f"❌ Your bulk list was not sent: {views.code_masks(exc.message)}",
        )  # fmt: skip
        return
    except Exception:
        ref = reference()
        log.exception("bulk validation failed ref=%s", ref)
        await deps.store.discard_draft(draft_id)
        problem = (
            f"The list could not be checked because of an internal error (reference {ref}); "
            "nothing was sent. Try again, or attach the list as a CSV file."
        )
        view = bulk_views.problem_view(external_id, problem)
        await _update(deps, client, draft_id, external_id, view, form, f"❌ {problem}")
        return
    if not await bulk.save_draft(deps.store, draft, draft_id):
        return  # closed meanwhile
    metadata = BulkConfirmMetadata(draft_id=draft_id).dump()
    view = bulk_views.confirm_view(external_id, draft, metadata, where=f"<#{form.channel_id}>")
    told = (
        f"❌ Your bulk list ({views.counted(draft.count, 'recipient')}) was checked, but Slack could not show the "
        "confirmation, so nothing was sent. Run `/sms bulk` again."
    )
    await _update(deps, client, draft_id, external_id, view, form, told)


async def _update(
    deps: Deps, client: Any, draft_id: str, external_id: str, view: Any, form: bulk.BulkForm, instead: str
) -> None:
    """Show `view` in place of the pushed "checking" view (the client retries while Slack does not know
    it yet). If that fails for good, the draft is discarded (nobody can confirm it now; a no-op when it
    was already) and the person is told `instead` through the fallback chain (tell.py)."""
    try:
        await client.views_update(external_id=external_id, view=view)
        return
    except SlackApiError as exc:
        error = exc.response.get("error")
    log.warning("could not update the bulk view (%s): telling %s another way", error, form.user_id)
    await deps.store.discard_draft(draft_id)
    await tell_person(
        client,
        user_id=form.user_id,
        response_url=form.response_url,
        text=f"{instead}\n_(The form could not be updated: {error}.)_",
    )


async def download_text(client: Any, file: dict[str, Any]) -> str:
    name = file.get("name") or "the file"
    url = file.get("url_private_download") or file.get("url_private")
    if not url:
        raise bulk.BulkProblem(f"“{name}” could not be read: Slack gave no download link.")
    if int(file.get("size") or 0) > MAX_FILE_BYTES:
        raise bulk.BulkProblem(f"“{name}” is larger than 10 MB.")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                url,
                headers={"Authorization": f"Bearer {client.token}"},
                timeout=aiohttp.ClientTimeout(total=20),
            ) as resp,
        ):
            if resp.status != 200:
                raise bulk.BulkProblem(f"“{name}” could not be downloaded from Slack (HTTP {resp.status}).")
            parts: list[bytes] = []
            size = 0
            async for part in resp.content.iter_chunked(256 * 1024):  # read() may return a partial buffer
                size += len(part)
                if size > MAX_FILE_BYTES:
                    break
                parts.append(part)
            data = b"".join(parts) if size <= MAX_FILE_BYTES else b"x" * (MAX_FILE_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise bulk.BulkProblem(
            f"“{name}” could not be downloaded from Slack ({type(exc).__name__})."
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise bulk.BulkProblem(f"“{name}” is larger than 10 MB.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bulk.BulkProblem(
            f"“{name}” is not UTF-8 text. Save it as CSV (UTF-8) and attach it again."
        ) from None


def _typed(values: dict[str, Any]) -> str:
    element = values.get(BlockId.BULK_TYPED_COUNT, {}).get(ActionId.BULK_TYPED_COUNT, {})
    return (element.get("value") or "").replace(",", "").replace(" ", "").replace(".", "")


async def bulk_confirm_submission_callback(
    ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any, context: Any
) -> None:
    deps: Deps = context["deps"]
    try:
        draft_id = BulkConfirmMetadata.model_validate_json(view.get("private_metadata") or "{}").draft_id
    except ValidationError:
        await ack(
            response_action="update",
            view=bulk_views.info_view(
                "",
                "Nothing sent",
                "❌ This confirmation is out of date. Nothing was sent; start again with /sms bulk.",
            ),
        )
        return
    found = await deps.store.get_draft(draft_id)
    user_id = body["user"]["id"]
    if found is not None and found.state == DraftState.OPEN:  # a draft still to send: theirs, and allowed?
        if found.user_id != user_id:
            refused: str | None = authz.not_theirs(found.user_id)
        elif found.head.get("kind") == JobKind.FANOUT:
            groups = list((found.head.get("meta") or {}).get("groups") or [])
            refused = await authz.refusal(deps, Capability.OUTAGE, user_id, groups)
        else:
            refused = await authz.refusal(deps, Capability.BULK, user_id)
        if refused:
            log.info("confirmation of %s refused for %s", draft_id, user_id)
            await ack(
                response_action="update", view=bulk_views.info_view("", "Nothing sent", f"❌ {refused}")
            )
            return
    if found is not None and found.state == DraftState.OPEN and found.count:
        count = found.count
        if found.head.get("needs_typed_count") and _typed(view["state"]["values"]) != str(count):
            await ack(
                response_action="errors",
                errors={BlockId.BULK_TYPED_COUNT: f"Type {count:,} (the number of recipients) to send."},
            )
            return
    # The job is created now and its recipients copied after the ack (`_start`): the ack does not grow
    # with the list. Held by this process meanwhile; if it dies first, the sender copies them itself.
    hold = (deps.service.worker.name, deps.settings.worker_lease_seconds)
    job_id, note = await bulk.confirm(
        deps.store, draft_id, dry_run=deps.settings.dry_run, found=found, hold=hold
    )
    if job_id is None:  # discarded or expired: say so in the modal instead of closing it silently
        log.info("bulk confirmation of %s refused: %s", draft_id, note)
        await ack(
            response_action="update",
            view=bulk_views.info_view("", "Nothing sent", f"❌ Nothing was sent. {note}"),
        )
        return
    await ack(response_action="clear")
    if note == "created":
        log.info("bulk job %s confirmed by %s", job_id, body["user"]["id"])
        response_url = found.head.get("response_url") if found is not None else None
        run_at = found.head.get("run_at") if found is not None else None
        if not await _start(deps, client, job_id, user_id, response_url, run_at):
            return
        if run_at:  # nothing shows in the channel until then: say where it is
            deps.spawn(_tell_scheduled(client, user_id, response_url, found.count, run_at))


async def _start(
    deps: Deps, client: Any, job_id: str, user_id: str, response_url: str | None, run_at: float | None
) -> bool:
    """After the ack: the job's recipients copied from its draft, and the sending replica woken. If the
    copy fails, the person is told that the send starts by itself when the hold ends, or at its
    scheduled time (the sender then copies them: nothing is lost or sent twice)."""
    worker = deps.service.worker
    try:
        await deps.store.copy_draft_rows(job_id, worker.name)
    except Exception:
        ref = reference()
        log.exception("bulk job %s: its recipients could not be copied yet ref=%s", job_id, ref)
        when = (
            f"goes out as scheduled, {views.slack_date_time(run_at)} (`/sms scheduled` lists it)"
            if run_at
            else f"starts by itself within {deps.settings.worker_lease_seconds:.0f} seconds"
        )
        await tell_person(
            client,
            user_id=user_id,
            response_url=response_url,
            text=f"⚠️ Your send is confirmed but could not start just now (reference {ref}). It {when} and "
            "its progress appears in the channel; nothing is sent twice.",
        )
        return False
    worker.submit(job_id)
    return True


async def _tell_scheduled(
    client: Any, user_id: str, response_url: str | None, count: int, run_at: float
) -> None:
    await tell_person(
        client,
        user_id=user_id,
        response_url=response_url,
        text=f"⏰ Scheduled: {count:,} SMS for {views.slack_date_time(run_at)}. `/sms scheduled` lists it, with "
        "Cancel; the results will appear in the channel then.",
    )


async def bulk_confirm_closed_callback(ack: Any, view: dict[str, Any], context: Any) -> None:
    await ack()
    deps: Deps = context["deps"]
    try:
        draft_id = BulkConfirmMetadata.model_validate_json(view.get("private_metadata") or "{}").draft_id
    except ValidationError:
        return
    await deps.store.discard_draft(draft_id)


async def bulk_retry_callback(
    ack: Any, body: dict[str, Any], client: Any, context: Any, respond: Any
) -> None:
    await ack()
    deps: Deps = context["deps"]
    user_id = body["user"]["id"]
    job_id = body["actions"][0]["value"]
    job = await deps.store.get_job(job_id)
    needed = Capability.OUTAGE if job is not None and job.meta.get("outage") else Capability.BULK
    if not await deps.access.allowed(needed, user_id):
        await respond(text=deps.access.refusal(needed), replace_original=False, response_type="ephemeral")
        return
    try:
        draft = await bulk.retry_draft(deps.store, job_id, user_id, deps.bulk_limits)
    except bulk.BulkProblem as exc:
        await respond(text=views.code_masks(exc.message), replace_original=False, response_type="ephemeral")
        return
    metadata = BulkConfirmMetadata(draft_id=draft.id).dump()
    where = f"<#{draft.channel_id}>" if draft.channel_id else "this channel"
    await open_view(
        client,
        trigger_id=body["trigger_id"],
        view=bulk_views.confirm_view(None, draft, metadata, where=where),
        user_id=user_id,
        response_url=body.get("response_url"),
        what="confirmation",
    )


def register(app: Listeners) -> None:
    app.view(CallbackId.BULK_FORM)(bulk_form_submission_callback)
    app.view(CallbackId.BULK_CONFIRM)(bulk_confirm_submission_callback)
    app.view_closed(CallbackId.BULK_CONFIRM)(bulk_confirm_closed_callback)
    app.action(ActionId.BULK_SEND_AGAIN)(bulk_retry_callback)
