"""Pause, resume and cancel a running bulk or outage send from the buttons on its progress message.

Only its creator, or someone allowed to make that kind of send (ACCESS_BULK; an outage: ACCESS_OUTAGE
or its groups' own lists), may use them. The click only records what was asked (`jobs.control`); the
sending replica, wherever it runs, obeys before its next request, and the message changes when it has.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.core.access import Capability
from bot.core.store import Control, JobState

from .. import authz, bulk_views, views
from ..acks import Listeners
from ..deps import Deps
from ..ids import ActionId, BlockId

log = logging.getLogger("bot.slack.control")

ASKED = {
    ActionId.JOB_PAUSE: Control.PAUSE,
    ActionId.JOB_RESUME: None,
    ActionId.JOB_CANCEL: Control.CANCEL,
}
TOLD = {
    ActionId.JOB_PAUSE: "⏸️ Pausing: nothing more is sent from now on; texts already on their way get their "
    "answer. Resume or cancel it from the same message.",
    ActionId.JOB_RESUME: "▶️ Resuming: the rest is sent now.",
    ActionId.JOB_CANCEL: "🚫 Cancelling: nothing more is sent; texts already on their way get their answer, the "
    "rest are reported “cancelled (not sent)” and can be sent later with “Send again”.",
}


async def job_control_callback(ack: Any, body: dict[str, Any], context: Any, respond: Any) -> None:
    await ack()
    deps: Deps = context["deps"]
    user_id = body["user"]["id"]
    action = (body.get("actions") or [{}])[0]
    action_id = ActionId(action["action_id"])
    job = await deps.store.get_job(str(action.get("value") or ""))
    if job is None:
        await respond(text="That send no longer exists.", replace_original=False)
        return
    if user_id != job.created_by:
        capability = Capability.OUTAGE if job.meta.get("outage") else Capability.BULK
        refused = await authz.refusal(deps, capability, user_id, job.meta.get("groups"))
        if refused:
            await respond(
                text=f"Nothing was changed: only <@{job.created_by}>, who started it, or people allowed to make "
                f"{capability.value} sends can pause, resume or cancel it. {refused}",
                replace_original=False,
            )
            return
    updated = (
        await deps.store.set_control(job.id, ASKED[action_id], user_id)
        if job.state != JobState.DONE
        else None
    )
    if updated is None:
        await respond(text="That send has finished already: nothing was changed.", replace_original=False)
        return
    log.info("job %s: %s asked by %s", job.id, action_id.value.removeprefix("sms-job-"), user_id)
    waits = (updated.run_at or 0) > deps.store.clock()  # for its time, or for send windows
    told = TOLD[action_id]
    if action_id == ActionId.JOB_RESUME and waits:
        told = (
            "▶️ Resumed: the rest goes when it is due (its scheduled time, or the recipients' send windows)."
        )
    await respond(text=told, replace_original=False)
    idle = (action_id == ActionId.JOB_PAUSE and updated.state == JobState.PAUSED) or (
        action_id == ActionId.JOB_RESUME and waits
    )
    if idle and action.get("block_id") == BlockId.JOB_CONTROLS and job.meta.get("bulk"):
        # Paused at once, or resumed into a wait for send windows: no sending replica will report the
        # change soon, so the progress message shows it from here.
        summary = await deps.store.summary(job.id)
        await respond(
            text=f"Bulk SMS: {views.counted(job.total, 'recipient')}",
            blocks=bulk_views.progress_blocks(updated, summary, done=False),
            replace_original=True,
        )


def register(app: Listeners) -> None:
    for action_id in ASKED:
        app.action(action_id)(job_control_callback)
