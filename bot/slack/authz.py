"""One check of the acting user's access, asked again at every view submission and button: access may
have been removed while a form was open, and a form or confirmation can be submitted by someone other
than the person who opened it."""

from __future__ import annotations

import asyncio

from bot.core.access import Capability

from .deps import Deps

CHECK_SECONDS = 1.5  # a directory lookup (user group, channel members) must leave time to answer Slack
TOO_SLOW = (
    "Your access could not be checked in time (Slack was slow to answer). Nothing was changed; try again."
)


async def may_page(deps: Deps, user_id: str, groups: list[str] | None = None) -> bool:
    """A group with its own `allow` list decides for itself; otherwise ACCESS_OUTAGE does."""
    book = deps.groups.cached()
    chosen = [book.groups[g] for g in (groups or []) if g in book.groups]
    if groups is None:  # opening the form: allowed for any group, or by ACCESS_OUTAGE
        if await deps.access.allowed(Capability.OUTAGE, user_id):
            return True
        for group in book.groups.values():
            if group.allow is not None and await deps.access.allowed(
                Capability.OUTAGE, user_id, extra=group.allow
            ):
                return True
        return False
    for group in chosen:
        if not await deps.access.allowed(Capability.OUTAGE, user_id, extra=group.allow):
            return False
    return bool(chosen) or await deps.access.allowed(Capability.OUTAGE, user_id)


async def refusal(
    deps: Deps, capability: Capability, user_id: str, groups: list[str] | None = None
) -> str | None:
    """None when `user_id` may do this now; otherwise the sentence to show them. Answered from the
    cache when it can be; a lookup that takes longer than CHECK_SECONDS refuses (nothing changes)."""
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            if capability == Capability.OUTAGE:
                allowed = await may_page(deps, user_id, groups)
            else:
                allowed = await deps.access.allowed(capability, user_id)
    except TimeoutError:
        return TOO_SLOW
    return None if allowed else deps.access.refusal(capability)


def not_theirs(owner: str) -> str:
    return f"This was prepared by <@{owner}>: only they can send it. Nothing was sent."
