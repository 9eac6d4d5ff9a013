"""Consent: what the bot says and adds so that texts are honest about being one-way, and the
per-number daily cap (SMS_PER_NUMBER_DAILY).

The provider's international service carries no replies (no inbound messages for international numbers;
alphanumeric sender IDs cannot receive them), so a "reply STOP" would never reach anyone. Marketing texts
get a footer the operator chooses (MKT_FOOTER: an address or a link), appended before the segment count,
the confirmation's sample and the send.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store

ONE_WAY = "Recipients cannot reply by SMS: international texts are one-way."
_REPLY = re.compile(r"\b(reply|respond|text back|txt)\b", re.IGNORECASE)


def check_footer(text: str) -> str:
    """A marketing footer as given, or ValueError when it asks for a reply the bot could never get."""
    footer = text.strip()
    if footer and _REPLY.search(footer):
        raise ValueError(
            "must not ask for a reply: international texts are one-way, so a reply (e.g. STOP) never "
            "reaches anyone. Give a link or an address instead, e.g. Opt out: https://example.com/stop"
        )
    return footer


def with_footer(message: str, type: str | None, footer: str) -> str:
    """`message` as sent: a marketing text ends with the footer (once), others are unchanged."""
    if type != "MKT" or not footer or message.rstrip().endswith(footer):
        return message
    return f"{message.rstrip()}\n{footer}"


def footer_hint(footer: str) -> str:
    """What the forms say under the message box."""
    return ONE_WAY + (f" Marketing texts end with “{footer}”." if footer else "")


class DailyCapReached(Exception):
    """A single send to a number that had SMS_PER_NUMBER_DAILY texts today already."""

    def __init__(self, masked: str, count: int, cap: int) -> None:
        self.message = (
            f"Nothing was sent: {masked} already had {count} texts today, the most one number may get a day "
            f"({cap}, setting SMS_PER_NUMBER_DAILY). Try again tomorrow (UTC)."
        )
        super().__init__(self.message)


def cap_reason(cap: int) -> str:
    """Why a recipient of a job was not sent: the number reached the cap before its turn came."""
    return (
        f"Not sent: this number already had {cap} texts today, the most the provider takes for one number "
        "a day (setting SMS_PER_NUMBER_DAILY)."
    )


async def over_cap(
    store: Store, numbers: Sequence[str], cap: int, *, exclude_job: str | None = None
) -> dict[str, int]:
    """The numbers (E.164) that reached the daily cap today, with their counts (`cap` 0: no cap)."""
    if cap <= 0 or not numbers:
        return {}
    counts = await store.texts_today(numbers, exclude_job=exclude_job)
    return {number: n for number, n in counts.items() if n >= cap}
