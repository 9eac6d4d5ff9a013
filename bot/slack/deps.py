"""What every listener needs, put into Bolt's `context["deps"]` by a middleware."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from bot.config import Settings
from bot.core.access import AccessPolicy
from bot.core.bulk import BulkLimits
from bot.core.groups import GroupFile
from bot.core.service import SendService
from bot.core.store import Store


@dataclass
class Deps:
    settings: Settings
    store: Store
    service: SendService
    access: AccessPolicy
    groups: GroupFile
    background: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def bulk_limits(self) -> BulkLimits:
        return self.settings.bulk_limits()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Work that follows an ack (kept referenced until done)."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
