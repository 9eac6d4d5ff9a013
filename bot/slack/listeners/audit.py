"""`/sms audit [days]`: the audit trail of everyone's sends as a CSV file in the person's DM.

Needs ACCESS_AUDIT. The file has full numbers and texts, so it goes only to a direct message; the
channel sees nothing. Acked at once: the export grows with the trail, and is written to a temporary
file off the event loop (bot.core.audit).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.core.access import Capability
from bot.core.audit import AUDIT_MAX_ROWS, AuditExport, export_audit
from bot.core.commands import CommandError, parse_audit

from ..deps import Deps
from ..server import reference
from ..tell import tell_person
from ..views import counted as _count

log = logging.getLogger("bot.slack.audit")


async def audit_command(ack: Any, command: dict[str, Any], client: Any, deps: Deps) -> None:
    user_id = command["user_id"]
    try:
        days = parse_audit(command.get("text") or "")
    except CommandError as exc:
        await ack(text=exc.message)
        return
    await ack()
    response_url = command.get("response_url")

    async def tell(text: str) -> None:
        await tell_person(client, user_id=user_id, response_url=response_url, text=text)

    if not await deps.access.allowed(Capability.AUDIT, user_id):
        await tell(deps.access.refusal(Capability.AUDIT))
        return
    now = deps.store.clock()
    since = now - days * 86400
    stamp = time.strftime("%Y-%m-%d", time.gmtime(now))
    tmp = await asyncio.to_thread(tempfile.mkdtemp, prefix="sms-audit-")
    try:
        path = Path(tmp) / f"sms-audit-{stamp}-{days}d.csv"
        out = await asyncio.to_thread(open, path, "w", newline="", encoding="utf-8")
        try:
            done = await export_audit(deps.store, since, out)
        finally:
            await asyncio.to_thread(out.close)
        content = await asyncio.to_thread(path.read_bytes)  # the SDK would read a path on the loop
        dm = await client.conversations_open(users=user_id)
        await client.files_upload_v2(
            channel=dm["channel"]["id"],
            content=content,
            filename=path.name,
            title=f"SMS audit trail, last {_days(days)}",
            initial_comment=f"{_what(days, done)} Full numbers and texts: keep this file private.",
        )
    except Exception:
        ref = reference()
        log.exception("audit export failed ref=%s", ref)
        await tell(f"The audit trail could not be sent to you (reference {ref}). Try again later.")
        return
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    log.info("audit export by %s: %d days, %d sends, %d recipients", user_id, days, done.sends, done.texts)
    await tell(f"Sent you the audit trail as a CSV file in a direct message. {_what(days, done)}")


def _what(days: int, done: AuditExport) -> str:
    said = f"The last {_days(days)}: {_count(done.sends, 'send')}, {_count(done.texts, 'recipient')}."
    if not done.complete:
        said += (
            f" That is where the file stops (at most {AUDIT_MAX_ROWS:,} recipients, the oldest sends "
            "first): ask for fewer days to see the newer ones."
        )
    return said


def _days(days: int) -> str:
    return "day" if days == 1 else f"{days} days"
