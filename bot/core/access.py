"""Who may send: allow-lists per capability, from the settings ACCESS_SEND / ACCESS_BULK / ACCESS_OUTAGE,
who may manage opt-outs (ACCESS_OPTOUT) and who may export the audit trail (ACCESS_AUDIT).

Entries: `*` (everyone), user ids (`U…`/`W…`), user group ids (`S…`) and channel ids (`C…`/`G…`, meaning
anyone in that channel). Groups and channels are resolved by a `Directory` (the Slack layer provides one
backed by the Web API) and cached for `ttl` seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Capability(StrEnum):
    SEND = "send"
    BULK = "bulk"
    OUTAGE = "outage"
    OPTOUT = "optout"  # manage the opt-out list, and override an opt-out for one send
    AUDIT = "audit"  # export the audit trail (every send: who, to whom, what, the outcome)


SETTING_FOR = {
    Capability.SEND: "ACCESS_SEND",
    Capability.BULK: "ACCESS_BULK",
    Capability.OUTAGE: "ACCESS_OUTAGE",
    Capability.OPTOUT: "ACCESS_OPTOUT",
    Capability.AUDIT: "ACCESS_AUDIT",
}


# What a capability lets people do, where "<Kind> sends are" does not say it: "… not enabled", "not
# allowed to …".
_WHAT = {
    Capability.SEND: ("Sending SMS is", "send SMS"),
    Capability.OPTOUT: ("Managing opt-outs is", "manage opt-outs"),
    Capability.AUDIT: ("Exporting the audit trail is", "export the audit trail"),
}


class Directory(Protocol):
    async def group_members(self, group_id: str) -> set[str]: ...

    async def channel_members(self, channel_id: str) -> set[str]: ...


def parse_entries(value: str) -> tuple[str, ...]:
    """Validate a setting's value; raises ValueError naming the bad entry."""
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    for entry in entries:
        if entry != "*" and not (
            entry[0] in "UWSCG" and entry[1:].isalnum() and entry.isupper() and len(entry) > 2
        ):
            raise ValueError(
                f"“{entry}” is not a Slack user (U…), user group (S…) or channel (C…/G…) id, nor *"
            )
    return entries


@dataclass
class AccessPolicy:
    rules: dict[Capability, tuple[str, ...]]
    directory: Directory | None = None
    ttl: float = 300.0
    _cache: dict[str, tuple[float, set[str]]] = field(default_factory=dict)

    def decide_now(self, capability: Capability, user_id: str) -> bool | None:
        """The answer when no directory lookup is needed (or it is cached); None when one is."""
        entries = self.rules.get(capability, ())
        if "*" in entries or user_id in entries:
            return True
        lookups = [e for e in entries if e[0] in "SCG"]
        if not lookups:
            return False
        now = time.monotonic()
        for entry in lookups:
            cached = self._cache.get(entry)
            if not cached or now - cached[0] >= self.ttl:
                return None
            if user_id in cached[1]:
                return True
        return False

    async def allowed(
        self, capability: Capability, user_id: str, extra: tuple[str, ...] | None = None
    ) -> bool:
        """`extra`, when given, replaces the setting (a contact group's own `allow` list)."""
        entries = extra if extra is not None else self.rules.get(capability, ())
        if "*" in entries or user_id in entries:
            return True
        for entry in entries:
            if entry[0] in "SCG" and user_id in await self._members(entry):
                return True
        return False

    def refusal(self, capability: Capability) -> str:
        setting = SETTING_FOR[capability]
        what, do = _WHAT.get(
            capability, (f"{capability.value.capitalize()} sends are", f"make {capability.value} sends")
        )
        if not self.rules.get(capability):
            return (
                f"{what} not enabled for anyone yet. An admin can allow people by setting `{setting}` (Slack "
                "user, user group or channel ids, or `*`)."
            )
        return f"You are not allowed to {do}. An admin can add you to `{setting}`."

    async def _members(self, entry: str) -> set[str]:
        cached = self._cache.get(entry)
        now = time.monotonic()
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        if self.directory is None:
            return set()
        try:
            if entry[0] == "S":
                members = await asyncio.wait_for(self.directory.group_members(entry), 5)
            else:
                members = await asyncio.wait_for(self.directory.channel_members(entry), 5)
        except Exception:
            return cached[1] if cached else set()
        self._cache[entry] = (now, members)
        return members
