"""What every listener needs, put into Bolt's `context["deps"]` by a middleware."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import Settings
from bot.core.access import AccessPolicy
from bot.core.service import SendService
from bot.core.store import Store


@dataclass
class Deps:
    settings: Settings
    store: Store
    service: SendService
    access: AccessPolicy
